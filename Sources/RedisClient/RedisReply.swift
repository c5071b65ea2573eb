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
