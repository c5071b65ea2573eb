/// Writes RESP for callers that encode commands themselves (`RedisClient.sendBlocking(encoded:commands:)`):
/// one copy into a buffer instead of a String per argument.
public enum RESP {
    /// Appends the header of a command of `count` arguments (`*<count>\r\n`); its arguments follow
    /// as bulk strings.
    @inlinable
    public static func appendCommandHeader(arguments count: Int, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "*"))
        appendDecimal(count, to: &out)
        out.append(0x0D)
        out.append(0x0A)
    }

    /// Appends a whole command.
    public static func appendCommand(_ arguments: [String], to out: inout [UInt8]) {
        appendCommandHeader(arguments: arguments.count, to: &out)
        for argument in arguments { appendBulk(argument, to: &out) }
    }

    /// Appends `bytes` as one bulk string.
    @inlinable
    public static func appendBulk<Bytes: Collection>(_ bytes: Bytes, to out: inout [UInt8]) where Bytes.Element == UInt8 {
        out.append(UInt8(ascii: "$"))
        appendDecimal(bytes.count, to: &out)
        out.append(0x0D)
        out.append(0x0A)
        out.append(contentsOf: bytes)
        out.append(0x0D)
        out.append(0x0A)
    }

    /// Appends `text`'s UTF-8 bytes as one bulk string.
    @inlinable
    public static func appendBulk(_ text: String, to out: inout [UInt8]) {
        appendBulk(text.utf8, to: &out)
    }

    /// Appends the decimal digits of a non-negative `value`.
    @usableFromInline
    static func appendDecimal(_ value: Int, to out: inout [UInt8]) {
        precondition(value >= 0, "RESP lengths are never negative")
        if value < 10 {
            out.append(UInt8(ascii: "0") + UInt8(value))
            return
        }
        appendDecimal(value / 10, to: &out)
        out.append(UInt8(ascii: "0") + UInt8(value % 10))
    }
}
