/// One reply from Redis (RESP2), decoded out of hiredis' reply tree.
public enum RedisReply: Sendable, Equatable {
    case status(String)
    case error(String)
    case integer(Int64)
    case bulk([UInt8])
    case null
    case array([RedisReply])

    /// The reply as text, for status, bulk and integer replies.
    public var string: String? {
        switch self {
        case .status(let s): return s
        case .bulk(let bytes): return String(decoding: bytes, as: UTF8.self)
        case .integer(let i): return String(i)
        default: return nil
        }
    }

    /// The reply as an integer, for integer replies and bulk strings holding one.
    public var int: Int64? {
        switch self {
        case .integer(let i): return i
        case .bulk, .status: return string.flatMap { Int64($0) }
        default: return nil
        }
    }

    public var array: [RedisReply]? {
        if case .array(let items) = self { return items }
        return nil
    }

    public var isNull: Bool { self == .null }

    /// A flat `[field, value, field, value]` array (HGETALL) as a dictionary.
    public var hash: [String: String]? {
        guard let items = array else { return nil }
        var result: [String: String] = [:]
        var index = items.startIndex
        while index + 1 < items.endIndex {
            if let key = items[index].string, let value = items[index + 1].string {
                result[key] = value
            }
            index += 2
        }
        return result
    }
}

/// A reply in a few words for error messages: its type, size and the start of its text, never a dump
/// of a whole (possibly hostile, megabytes long) reply.
extension RedisReply: CustomStringConvertible {
    public var description: String {
        switch self {
        case .status(let text): return "the status '\(Self.clip(text))'"
        case .error(let text): return "the error '\(Self.clip(text))'"
        case .integer(let value): return "the integer \(value)"
        case .bulk(let bytes): return "a \(bytes.count)-byte string '\(Self.clip(String(decoding: bytes, as: UTF8.self)))'"
        case .null: return "nil"
        case .array(let items):
            let shown = items.prefix(4).map { $0.shortType }.joined(separator: ", ")
            return "an array of \(items.count) (\(shown)\(items.count > 4 ? ", …" : ""))"
        }
    }

    private var shortType: String {
        switch self {
        case .status: return "status"
        case .error: return "error"
        case .integer(let value): return "\(value)"
        case .bulk(let bytes): return "\(bytes.count)-byte string"
        case .null: return "nil"
        case .array(let items): return "array of \(items.count)"
        }
    }

    /// Printable characters only, at most 60 of them.
    private static func clip(_ text: String) -> String {
        let printable = String(String.UnicodeScalarView(text.unicodeScalars.prefix(61).map { $0.properties.generalCategory == .control ? "?" : $0 }))
        return printable.count > 60 ? String(printable.prefix(60)) + "…" : printable
    }
}
