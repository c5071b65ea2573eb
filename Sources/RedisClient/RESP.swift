/// Writes RESP bulk strings (`$<length>\r\n<bytes>\r\n`) for callers that encode a command's large
/// arguments themselves (`EncodedScriptCall`): one copy into a buffer instead of a String each.
public enum RESP {
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

/// A script call whose arguments after the keys arrive already encoded as RESP bulk strings, in
/// pieces that are sent back to back (a prefix, a run of a larger buffer, a suffix), so that a
/// batch of thousands of events reaches the socket with one copy.
public struct EncodedScriptCall: Sendable {
    public let script: RedisScript
    public let keys: [String]
    /// How many bulk strings the pieces hold together.
    public let argumentCount: Int
    public let pieces: [ArraySlice<UInt8>]

    public init(script: RedisScript, keys: [String], argumentCount: Int, pieces: [ArraySlice<UInt8>]) {
        self.script = script
        self.keys = keys
        self.argumentCount = argumentCount
        self.pieces = pieces
    }
}
