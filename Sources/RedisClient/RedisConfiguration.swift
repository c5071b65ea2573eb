import Foundation

/// Where and how to reach a Redis server, parsed from a `redis://` or `unix://` URL.
public struct RedisConfiguration: Sendable, Equatable {
    public enum Endpoint: Sendable, Equatable {
        case tcp(host: String, port: Int)
        case unix(path: String)
    }

    public var endpoint: Endpoint
    public var username: String?
    public var password: String?
    public var database: Int
    /// Bounds establishing the connection.
    public var connectTimeout: Duration
    /// Bounds every read and write; hiredis' connect timeout does not cover them.
    public var commandTimeout: Duration
    /// How long a client keeps trying to reconnect before a command fails.
    public var reconnectWindow: Duration
    /// The seed nodes of a Redis Cluster (`redis+cluster://`); nil for one server.
    public var cluster: [ClusterSeed]?
    /// The sentinels that name the master (`redis+sentinel://`); nil for one server.
    public var sentinel: SentinelSpec?

    public init(
        endpoint: Endpoint, username: String? = nil, password: String? = nil, database: Int = 0,
        connectTimeout: Duration = .seconds(5), commandTimeout: Duration = .seconds(10),
        reconnectWindow: Duration = .seconds(60)
    ) {
        self.endpoint = endpoint
        self.username = username
        self.password = password
        self.database = database
        self.connectTimeout = connectTimeout
        self.commandTimeout = commandTimeout
        self.reconnectWindow = reconnectWindow
    }

    /// Parses `redis://[user:password@]host[:port][/db]`, `unix:///path/redis.sock[?db=N&password=P]` or
    /// `redis+cluster://[user:password@]host:port[,host:port...]`.
    public init(url text: String) throws(RedisError) {
        // Several hosts do not fit URLComponents: parsed by hand (RoutedConnections.swift).
        if text.lowercased().hasPrefix("redis+cluster://") {
            self = try Self.cluster(url: text)
            return
        }
        if text.lowercased().hasPrefix("redis+sentinel://") {
            self = try Self.sentinel(url: text)
            return
        }
        guard let components = URLComponents(string: text), let scheme = components.scheme?.lowercased()
        else { throw RedisError.invalidURL(reason: "it is not a URL") }
        let query = Dictionary(
            (components.queryItems ?? []).map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { $1 })
        var database = 0
        switch scheme {
        case "redis":
            guard let host = components.host, !host.isEmpty else {
                throw RedisError.invalidURL(reason: "it names no host")
            }
            let port = components.port ?? 6379
            guard (1...65535).contains(port) else { throw RedisError.invalidURL(reason: "port \(port) is out of range") }
            self.init(endpoint: .tcp(host: host, port: port))
            let path = components.path.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
            if !path.isEmpty {
                guard let db = Int(path), db >= 0 else {
                    throw RedisError.invalidURL(reason: "the database '\(path)' is not a number")
                }
                database = db
            }
            username = components.user.flatMap { $0.isEmpty ? nil : $0.removingPercentEncoding }
            password = components.password?.removingPercentEncoding
        case "unix", "redis+unix":
            let path = components.path
            guard path.hasPrefix("/") else { throw RedisError.invalidURL(reason: "a unix socket path must be absolute") }
            self.init(endpoint: .unix(path: path))
            username = query["user"].flatMap { $0.isEmpty ? nil : $0 }
            password = query["password"]
        case "rediss":
            throw RedisError.invalidURL(reason: "TLS (rediss://) is not supported by this hiredis build")
        default:
            throw RedisError.invalidURL(reason: "the scheme '\(scheme)' is not redis://, unix:// or redis+cluster://")
        }
        if let db = query["db"] {
            guard let value = Int(db), value >= 0 else { throw RedisError.invalidURL(reason: "db=\(db) is not a number") }
            database = value
        }
        self.database = database
    }

    /// The server as it may be shown to people: never the password.
    public var serverDescription: String {
        if let cluster { return "redis+cluster://" + cluster.map(\.address).joined(separator: ",") }
        if let sentinel {
            return "redis+sentinel://" + sentinel.sentinels.map(\.address).joined(separator: ",") + "/\(sentinel.masterName)/\(database)"
        }
        switch endpoint {
        case .tcp(let host, let port): return "redis://\(host):\(port)/\(database)"
        case .unix(let path): return "unix://\(path)?db=\(database)"
        }
    }
}
