/// Redis Cluster's key → slot mapping: CRC16 (XMODEM) of the key, or of its hash tag (the text
/// between the first `{` and the next `}`, when not empty), modulo 16384.
public enum ClusterSlot {
    public static let count = 16384

    /// The slot of `key`.
    public static func of(_ key: String) -> Int {
        let bytes = Array(key.utf8)
        var hashed = bytes[...]
        if let open = bytes.firstIndex(of: UInt8(ascii: "{")),
            let close = bytes[(open + 1)...].firstIndex(of: UInt8(ascii: "}")), close > open + 1
        {
            hashed = bytes[(open + 1)..<close]
        }
        return Int(crc16(hashed)) & (count - 1)
    }

    static func crc16<Bytes: Collection>(_ bytes: Bytes) -> UInt16 where Bytes.Element == UInt8 {
        var crc: UInt16 = 0
        for byte in bytes {
            crc ^= UInt16(byte) << 8
            for _ in 0..<8 {
                crc = (crc & 0x8000) != 0 ? (crc << 1) ^ 0x1021 : crc << 1
            }
        }
        return crc
    }

    /// Commands that name no key: in a cluster any node answers them (with the node's own view).
    private static let keyless: Set<String> = [
        "PING", "TIME", "INFO", "SCRIPT", "CLUSTER", "PUBLISH", "DBSIZE", "CONFIG", "CLIENT", "ECHO", "AUTH", "SELECT",
        "HELLO", "COMMAND", "MULTI", "EXEC", "ASKING", "READONLY", "READWRITE", "FLUSHALL", "FLUSHDB", "MONITOR",
        "LASTSAVE", "WAIT", "MEMORY", "SLOWLOG", "LATENCY", "ROLE", "QUIT", "RESET", "SUBSCRIBE", "PSUBSCRIBE",
    ]

    /// The key a command is routed by: the first key it names, nil for commands without keys.
    public static func routingKey(_ arguments: [String]) -> String? {
        guard let name = arguments.first?.uppercased() else { return nil }
        switch name {
        case "EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO":
            guard arguments.count > 3, let count = Int(arguments[2]), count > 0 else { return nil }
            return arguments[3]
        case "XREAD", "XREADGROUP":
            guard let streams = arguments.firstIndex(where: { $0.uppercased() == "STREAMS" }),
                streams + 1 < arguments.count
            else { return nil }
            return arguments[streams + 1]
        default:
            if keyless.contains(name) { return nil }
            return arguments.count > 1 ? arguments[1] : nil
        }
    }
}
