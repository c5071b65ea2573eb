import Dispatch
import Foundation
import Synchronization

/// A Redis client for Swift concurrency: one hiredis connection driven on its own serial queue, so
/// blocking socket I/O never occupies the cooperative thread pool. Reconnects with backoff.
///
/// A command that fails because the connection broke is sent again once the connection is back
/// (within `reconnectWindow`), so it may run twice on the server: callers send idempotent commands
/// or scripts that refuse a repeat.
public final class RedisClient: Sendable {
    public let configuration: RedisConfiguration
    private let queue: DispatchQueue
    private let box: ConnectionBox
    /// Set for `redis+cluster://` and `redis+sentinel://`: every call is routed (by its key, or to
    /// the master Sentinel names) instead of going to `box`.
    private let cluster: RoutedConnections?
    private let closed = ClosedFlag()

    public init(configuration: RedisConfiguration, label: String = "redis") {
        self.configuration = configuration
        self.queue = DispatchQueue(label: "provision.redis.\(label)")
        self.box = ConnectionBox(RedisConnection(configuration: configuration))
        if let seeds = configuration.cluster {
            self.cluster = RoutedConnections(configuration: configuration, discovery: .cluster(seeds))
        } else if let sentinel = configuration.sentinel {
            self.cluster = RoutedConnections(configuration: configuration, discovery: .sentinel(sentinel))
        } else {
            self.cluster = nil
        }
    }

    public convenience init(url: String, label: String = "redis") throws(RedisError) {
        self.init(configuration: try RedisConfiguration(url: url), label: label)
    }

    /// Connects now rather than on the first command, so a wrong address fails early.
    public func connect() async throws(RedisError) {
        if cluster != nil { return try await onCluster { cluster throws(RedisError) in try cluster.connect() } }
        _ = try await perform("CONNECT") { _ throws(RedisError) in () }
    }

    /// Sends one command; an error reply is thrown as `RedisError.server`.
    @discardableResult
    public func send(_ arguments: [String]) async throws(RedisError) -> RedisReply {
        let name = arguments.first?.uppercased() ?? "?"
        let reply: RedisReply
        if cluster != nil {
            reply = try await onCluster { cluster throws(RedisError) in try cluster.command(arguments, label: name) }
        } else {
            reply = try await perform(name) { connection throws(RedisError) in
                try connection.command(arguments)
            }
        }
        if case .error(let message) = reply {
            throw .server(server: configuration.serverDescription, command: name, message: message)
        }
        return reply
    }

    @discardableResult
    public func send(_ arguments: String...) async throws(RedisError) -> RedisReply {
        try await send(arguments)
    }

    /// Sends commands in one round trip; error replies come back in place, not thrown.
    public func pipeline(_ commands: [[String]]) async throws(RedisError) -> [RedisReply] {
        if commands.isEmpty { return [] }
        if cluster != nil { return try await onCluster { cluster throws(RedisError) in try cluster.pipeline(commands, label: "PIPELINE") } }
        return try await perform("PIPELINE") { connection throws(RedisError) in
            try connection.pipeline(commands, label: "PIPELINE")
        }
    }

    /// Runs a Lua script with `EVALSHA`, loading it on first use and again after `NOSCRIPT`
    /// (a restarted or flushed server). Error replies are thrown as `RedisError.server`.
    public func eval(_ script: RedisScript, keys: [String], arguments: [String]) async throws(RedisError) -> RedisReply {
        let label = "EVALSHA \(script.name)"
        let box = self.box
        let reply: RedisReply
        if cluster != nil {
            reply = try await onCluster { cluster throws(RedisError) in try cluster.eval(script, keys: keys, arguments: arguments) }
        } else {
            reply = try await perform(label) { connection throws(RedisError) in
                try box.eval(script, keys: keys, arguments: arguments, on: connection)
            }
        }
        if case .error(let message) = reply {
            throw .server(server: configuration.serverDescription, command: label, message: message)
        }
        return reply
    }

    /// Runs several script calls in one round trip; error replies come back in place.
    public func evalPipeline(_ calls: [(script: RedisScript, keys: [String], arguments: [String])]) async throws(RedisError) -> [RedisReply] {
        if calls.isEmpty { return [] }
        let box = self.box
        let items = calls.map { ScriptCall(script: $0.script, keys: $0.keys, arguments: $0.arguments) }
        if cluster != nil { return try await onCluster { cluster throws(RedisError) in try cluster.evalPipeline(items) } }
        return try await perform("EVALSHA pipeline") { connection throws(RedisError) in
            try box.evalPipeline(items, on: connection)
        }
    }

    /// Sends `commands` commands that are already RESP, back to back in `encoded` (in pieces that
    /// only make whole commands together), in one round trip, blocking the calling thread: for a
    /// caller on a thread of its own, where the socket work then runs (at that thread's priority)
    /// rather than on the client's queue. Returns the error replies by command index; other
    /// replies are read and dropped without being decoded.
    /// On a cluster the batch goes to the node of `key`'s slot (every command should address it).
    public func sendBlocking(encoded: [ArraySlice<UInt8>], commands: Int, key: String? = nil) throws(RedisError) -> [(index: Int, message: String)] {
        if commands == 0 { return [] }
        if let cluster {
            let result: Result<[(index: Int, message: String)], RedisError> = queue.sync { [closed] in
                if closed.value.load(ordering: .sequentiallyConsistent) {
                    return .failure(.io(server: configuration.serverDescription, command: "PIPELINE", reason: "the client was closed"))
                }
                do throws(RedisError) {
                    return .success(try cluster.pipeline(formatted: encoded, commands: commands, key: key, label: "PIPELINE"))
                } catch { return .failure(error) }
            }
            return try result.get()
        }
        let result = queue.sync { [box, closed, configuration] in
            Self.withReconnect(box.connection, label: "PIPELINE", window: configuration.reconnectWindow, closed: closed) {
                connection throws(RedisError) in
                try connection.pipeline(formatted: encoded, commands: commands, label: "PIPELINE")
            }
        }
        return try result.get()
    }

    /// Closes the connection; later commands fail at once.
    public func close() {
        closed.value.store(true, ordering: .sequentiallyConsistent)
        let box = self.box
        let cluster = self.cluster
        queue.async {
            box.connection.close()
            cluster?.close()
        }
    }

    /// Runs `body` on the client's queue with the cluster's connections (blocking I/O off the
    /// cooperative pool, one call at a time, as for one server).
    private func onCluster<T: Sendable>(_ body: @escaping @Sendable (RoutedConnections) throws(RedisError) -> T) async throws(RedisError) -> T {
        guard let cluster else { throw .invalidURL(reason: "not a cluster client") }
        return try await cancellable("?") { [closed, configuration] cancellation in
            if closed.value.load(ordering: .sequentiallyConsistent) {
                return .failure(.io(server: configuration.serverDescription, command: "?", reason: "the client was closed"))
            }
            if cancellation.isCancelled { return .failure(.cancelled(server: configuration.serverDescription, command: "?")) }
            cluster.cancellation = cancellation
            defer { cluster.cancellation = nil }
            do throws(RedisError) {
                return .success(try body(cluster))
            } catch {
                return .failure(error)
            }
        }
    }

    private func perform<T: Sendable>(
        _ label: String, _ body: @escaping @Sendable (RedisConnection) throws(RedisError) -> T
    ) async throws(RedisError) -> T {
        try await cancellable(label) { [box, closed, configuration] cancellation in
            Self.withReconnect(
                box.connection, label: label, window: configuration.reconnectWindow, closed: closed, cancellation: cancellation, body)
        }
    }

    /// Runs `work` on the client's queue for the awaiting task. Cancelling the task returns
    /// `RedisError.cancelled` at once and interrupts the work (its socket I/O, its reconnect pause);
    /// a call cancelled before the queue reaches it does not start.
    private func cancellable<T: Sendable>(
        _ label: String, _ work: @escaping @Sendable (CallCancellation) -> Result<T, RedisError>
    ) async throws(RedisError) -> T {
        let cancellation = CallCancellation()
        let once = OnceContinuation<T>()
        let server = configuration.serverDescription
        let result: Result<T, RedisError> = await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                once.install(continuation)
                queue.async { once.resume(work(cancellation)) }
            }
        } onCancel: {
            cancellation.cancel()
            once.resume(.failure(.cancelled(server: server, command: label)))
        }
        return try result.get()
    }

    private static func withReconnect<T>(
        _ connection: RedisConnection, label: String, window: Duration, closed: ClosedFlag,
        cancellation: CallCancellation = CallCancellation(), _ body: (RedisConnection) throws(RedisError) -> T
    ) -> Result<T, RedisError> {
        let clock = ContinuousClock()
        let deadline = clock.now + window
        var attempt = 0
        while true {
            if closed.value.load(ordering: .sequentiallyConsistent) {
                return .failure(.io(server: connection.server, command: label, reason: "the client was closed"))
            }
            do throws(RedisError) {
                if cancellation.isCancelled { throw .cancelled(server: connection.server, command: label) }
                if !connection.isConnected { try connection.connect() }
                return .success(
                    try cancellation.interruptible(connection, command: label) {
                        () throws(RedisError) -> T in try body(connection)
                    })
            } catch {
                if error.isCancellation {
                    // The interrupted socket (or a reply that never came) leaves the connection
                    // unusable; the next call connects afresh.
                    connection.close()
                    return .failure(error)
                }
                guard error.isRetryable else { return .failure(error) }
                connection.close()
                if clock.now >= deadline { return .failure(error) }
                // Exponential backoff, 50 ms doubling to 2 s, with jitter so a fleet does not
                // reconnect in lockstep after a Redis restart; a cancellation ends the pause.
                let base = min(2.0, 0.05 * pow(2.0, Double(min(attempt, 6))))
                let pause = base * Double.random(in: 0.5...1.0)
                attempt += 1
                if !cancellation.pause(seconds: min(pause, max(0, Self.seconds(deadline - clock.now)))) {
                    return .failure(.cancelled(server: connection.server, command: label))
                }
            }
        }
    }

    private static func seconds(_ duration: Duration) -> Double {
        let (s, atto) = duration.components
        return Double(s) + Double(atto) / 1e18
    }
}

/// Set once by `close()` from any thread, read on the client's queue.
private final class ClosedFlag: Sendable {
    let value = Atomic<Bool>(false)
}

struct ScriptCall: Sendable {
    let script: RedisScript
    let keys: [String]
    let arguments: [String]
}

/// The connection and its script cache, only ever touched on the owning client's serial queue.
private final class ConnectionBox: @unchecked Sendable {
    let connection: RedisConnection
    private var loaded: [String: String] = [:]  // script name -> SHA1 on the current server

    init(_ connection: RedisConnection) { self.connection = connection }

    func eval(_ script: RedisScript, keys: [String], arguments: [String], on connection: RedisConnection) throws(RedisError) -> RedisReply {
        let known = try sha(of: script, on: connection)
        let reply = try connection.command(evalsha(known, keys, arguments), label: "EVALSHA \(script.name)")
        if case .error(let message) = reply, message.hasPrefix("NOSCRIPT") {
            loaded[script.name] = nil
            let fresh = try sha(of: script, on: connection)
            return try connection.command(evalsha(fresh, keys, arguments), label: "EVALSHA \(script.name)")
        }
        return reply
    }

    func evalPipeline(_ calls: [ScriptCall], on connection: RedisConnection) throws(RedisError) -> [RedisReply] {
        var commands: [[String]] = []
        for call in calls {
            commands.append(evalsha(try sha(of: call.script, on: connection), call.keys, call.arguments))
        }
        var replies = try connection.pipeline(commands, label: "EVALSHA pipeline")
        for (index, reply) in replies.enumerated() {
            if case .error(let message) = reply, message.hasPrefix("NOSCRIPT") {
                loaded[calls[index].script.name] = nil
                replies[index] = try eval(calls[index].script, keys: calls[index].keys, arguments: calls[index].arguments, on: connection)
            }
        }
        return replies
    }

    private func sha(of script: RedisScript, on connection: RedisConnection) throws(RedisError) -> String {
        if let sha = loaded[script.name] { return sha }
        let reply = try connection.command(["SCRIPT", "LOAD", script.source], label: "SCRIPT LOAD \(script.name)")
        if case .error(let message) = reply {
            throw .server(server: connection.server, command: "SCRIPT LOAD \(script.name)", message: message)
        }
        guard case .bulk = reply, let sha = reply.string else {
            throw .unexpectedReply(server: connection.server, command: "SCRIPT LOAD \(script.name)", reply: "\(reply)")
        }
        loaded[script.name] = sha
        return sha
    }

    private func evalsha(_ sha: String, _ keys: [String], _ arguments: [String]) -> [String] {
        ["EVALSHA", sha, String(keys.count)] + keys + arguments
    }
}

/// A Lua script known by name; `RedisClient.eval` runs it by SHA1 and reloads it when needed.
public struct RedisScript: Sendable, Hashable {
    public let name: String
    public let source: String

    public init(name: String, source: String) {
        self.name = name
        self.source = source
    }
}
