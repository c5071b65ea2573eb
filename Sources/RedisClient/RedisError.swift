/// What went wrong talking to Redis, with the server and command involved (never a password).
public enum RedisError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The URL could not be used.
    case invalidURL(reason: String)
    /// No connection could be made (or re-made) within the reconnect window.
    case connectFailed(server: String, reason: String)
    /// The connection broke or timed out while a command was in flight.
    case io(server: String, command: String, reason: String)
    /// The server answered the command with an error reply.
    case server(server: String, command: String, message: String)
    /// The server's reply was not of the shape the caller expected.
    case unexpectedReply(server: String, command: String, reply: String)
    /// The server wants a password (NOAUTH) or refused the one given (WRONGPASS): no retry helps.
    case authentication(server: String, message: String)
    /// The task awaiting the call was cancelled (while it waited for a reply, a connection or a
    /// reconnect pause); the command may or may not have run on the server.
    case cancelled(server: String, command: String)

    public var description: String {
        switch self {
        case .invalidURL(let reason):
            return "The Redis URL is not usable: \(reason)."
        case .connectFailed(let server, let reason):
            return "Could not connect to Redis at \(server): \(reason)."
        case .io(let server, let command, let reason):
            return "Redis at \(server) did not answer \(command): \(reason)."
        case .server(let server, let command, let message):
            if Self.isTransient(message) {
                return "Redis at \(server) was not ready for \(command) within the reconnect window (\(Self.trimmed(message)))."
            }
            return "Redis at \(server) refused \(command): \(Self.trimmed(message))."
        case .unexpectedReply(let server, let command, let reply):
            return "Redis at \(server) gave an unexpected reply to \(command): \(reply)."
        case .authentication(let server, let message):
            if message.hasPrefix("NOAUTH") || message.contains("unauthenticated") {
                return "Redis at \(server) requires a password: put it in the Redis URL (redis://:PASSWORD@host:port/db, or unix:///path.sock?password=PASSWORD)."
            }
            return "Redis at \(server) refused the password or user of the Redis URL (\(Self.trimmed(message)))."
        case .cancelled(let server, let command):
            return "The call \(command) to Redis at \(server) was cancelled."
        }
    }

    /// An error reply without its trailing period, so it sits inside a sentence.
    static func trimmed(_ message: String) -> String {
        var text = message.prefix(300)
        while text.last == "." || text.last == " " { text.removeLast() }
        return String(text)
    }

    /// Error replies of a server that will answer normally soon: it is loading its data after a
    /// restart (LOADING), running a long script (BUSY), in a cluster slot migration (TRYAGAIN), cut
    /// from its master (MASTERDOWN), or a replica promoted away from (READONLY: a reconnect reaches
    /// the new master).
    public static func isTransient(_ message: String) -> Bool {
        let word = message.prefix { $0 != " " }
        return ["LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "READONLY"].contains(String(word))
    }

    /// Error replies that mean the connection lacks (valid) credentials.
    static func isAuthentication(_ message: String) -> Bool {
        let word = message.prefix { $0 != " " }
        // Redis 7 answers a large command from an unauthenticated connection with
        // "ERR Protocol error: unauthenticated bulk length" (and closes it) before any NOAUTH.
        return word == "NOAUTH" || word == "WRONGPASS" || message.hasPrefix("ERR invalid password") || message.hasPrefix("ERR AUTH")
            || message.hasPrefix("ERR Protocol error: unauthenticated")
    }

    /// True when trying again within the reconnect window may succeed: the connection failed, or the
    /// server answered with a transient error.
    public var isRetryable: Bool {
        if isConnectionError { return true }
        if case .server(_, _, let message) = self { return Self.isTransient(message) }
        return false
    }

    /// True when the failure was the connection rather than the command: retrying may succeed.
    public var isConnectionError: Bool {
        switch self {
        case .connectFailed, .io: return true
        default: return false
        }
    }

    /// True when the call ended because its task was cancelled (Swift's `CancellationError` for a
    /// client whose calls throw `RedisError`).
    public var isCancellation: Bool {
        if case .cancelled = self { return true }
        return false
    }

    /// The error message of a server error reply, if this is one.
    public var serverMessage: String? {
        if case .server(_, _, let message) = self { return message }
        return nil
    }
}
