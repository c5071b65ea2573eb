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

    public var description: String {
        switch self {
        case .invalidURL(let reason):
            return "The Redis URL is not usable: \(reason)."
        case .connectFailed(let server, let reason):
            return "Could not connect to Redis at \(server): \(reason)."
        case .io(let server, let command, let reason):
            return "Redis at \(server) did not answer \(command): \(reason)."
        case .server(let server, let command, let message):
            return "Redis at \(server) refused \(command): \(message)."
        case .unexpectedReply(let server, let command, let reply):
            return "Redis at \(server) gave an unexpected reply to \(command): \(reply)."
        }
    }

    /// True when the failure was the connection rather than the command: retrying may succeed.
    public var isConnectionError: Bool {
        switch self {
        case .connectFailed, .io: return true
        default: return false
        }
    }

    /// The error message of a server error reply, if this is one.
    public var serverMessage: String? {
        if case .server(_, _, let message) = self { return message }
        return nil
    }
}
