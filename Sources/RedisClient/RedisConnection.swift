import CHiredis
import Foundation

/// One hiredis context, used from one thread at a time (hiredis contexts are not thread-safe).
/// `RedisClient` confines each instance to its own serial queue.
final class RedisConnection {
    let configuration: RedisConfiguration
    private var context: UnsafeMutablePointer<redisContext>?

    init(configuration: RedisConfiguration) {
        self.configuration = configuration
    }

    deinit { close() }

    var isConnected: Bool { context != nil }

    /// The connected socket, for a cancellation to shut down while a call blocks on it.
    var socket: Int32? { context.map { Int32($0.pointee.fd) } }

    var server: String { configuration.serverDescription }

    /// The call blocked on this connection now, told before the socket is freed.
    var interrupter: CallCancellation?

    func close() {
        interrupter?.forgetSocket()
        if let context { redisFree(context) }
        context = nil
    }

    /// hiredis writes with `write(2)`: to a socket whose server went away (a Redis restarted under
    /// a unix socket) that raises SIGPIPE, which kills the process. Ignored once per process, so
    /// the write fails with EPIPE and the reconnect logic takes over.
    private static let pipeSignalIgnored: Bool = {
        signal(SIGPIPE, SIG_IGN)
        return true
    }()

    func connect() throws(RedisError) {
        _ = Self.pipeSignalIgnored
        close()
        let connectTimeout = timeval(configuration.connectTimeout)
        let made: UnsafeMutablePointer<redisContext>?
        switch configuration.endpoint {
        case .tcp(let host, let port):
            made = redisConnectWithTimeout(host, Int32(port), connectTimeout)
        case .unix(let path):
            made = redisConnectUnixWithTimeout(path, connectTimeout)
        }
        guard let made else { throw .connectFailed(server: server, reason: "hiredis could not allocate a context") }
        if made.pointee.err != 0 {
            let reason = Self.errorText(made)
            redisFree(made)
            throw .connectFailed(server: server, reason: reason)
        }
        guard redisSetTimeout(made, timeval(configuration.commandTimeout)) == REDIS_OK else {
            let reason = Self.errorText(made)
            redisFree(made)
            throw .connectFailed(server: server, reason: "could not set the command timeout: \(reason)")
        }
        if case .tcp = configuration.endpoint { _ = redisEnableKeepAlive(made) }
        context = made

        if let password = configuration.password {
            var auth = ["AUTH"]
            if let user = configuration.username { auth.append(user) }
            auth.append(password)
            do throws(RedisError) {
                if case .error(let message) = try command(auth, label: "AUTH") {
                    throw RedisError.authentication(server: server, message: message)
                }
            } catch {
                close()
                throw error
            }
        }
        if configuration.database != 0,
            case .error(let message) = try command(["SELECT", String(configuration.database)], label: "SELECT")
        {
            close()
            throw .connectFailed(server: server, reason: "SELECT \(configuration.database) failed (\(message))")
        }
    }

    /// Sends one command and reads its reply. Error replies are returned, not thrown; a broken
    /// connection throws and leaves this connection closed.
    func command(_ arguments: [String], label: String? = nil) throws(RedisError) -> RedisReply {
        let name = label ?? arguments.first?.uppercased() ?? "?"
        guard let context else { throw .io(server: server, command: name, reason: "not connected") }
        let raw = Self.withArgv(arguments) { argc, argv, lengths in
            redisCommandArgv(context, argc, argv, lengths)
        }
        guard let raw else { throw brokenConnection(context, command: name) }
        defer { freeReplyObject(raw) }
        let reply = Self.decode(raw.assumingMemoryBound(to: redisReply.self))
        if case .error(let message) = reply { try checkErrorReply(message, command: name) }
        return reply
    }

    /// Turns the error replies no caller can act on into errors: a transient one (LOADING, BUSY, …)
    /// is thrown so that the reconnect loop tries again, a missing or wrong password is thrown as
    /// such. Other error replies stay replies, for their caller.
    private func checkErrorReply(_ message: String, command: String) throws(RedisError) {
        if RedisError.isAuthentication(message) { throw .authentication(server: server, message: message) }
        if RedisError.isTransient(message) { throw .server(server: server, command: command, message: message) }
    }

    /// Sends several commands in one write and reads all their replies (a pipeline).
    func pipeline(_ commands: [[String]], label: String) throws(RedisError) -> [RedisReply] {
        guard let context else { throw .io(server: server, command: label, reason: "not connected") }
        for arguments in commands {
            let status = Self.withArgv(arguments) { argc, argv, lengths in
                redisAppendCommandArgv(context, argc, argv, lengths)
            }
            guard status == REDIS_OK else { throw brokenConnection(context, command: label) }
        }
        let replies = try readReplies(commands.count, context: context, label: label)
        for case .error(let message) in replies { try checkErrorReply(message, command: label) }
        return replies
    }

    /// Sends `commands` commands that are already RESP (in `pieces`, back to back) in one write and
    /// reads their replies, keeping only the errors (by command index).
    func pipeline(formatted pieces: [ArraySlice<UInt8>], commands: Int, label: String) throws(RedisError) -> [(index: Int, message: String)] {
        guard let context else { throw .io(server: server, command: label, reason: "not connected") }
        for piece in pieces where !piece.isEmpty {
            // hiredis copies the bytes into its output buffer as they are.
            let status = piece.withUnsafeBytes { raw in
                redisAppendFormattedCommand(context, raw.baseAddress?.assumingMemoryBound(to: CChar.self), raw.count)
            }
            guard status == REDIS_OK else { throw brokenConnection(context, command: label) }
        }
        var errors: [(index: Int, message: String)] = []
        for index in 0..<commands {
            var raw: UnsafeMutableRawPointer?
            guard redisGetReply(context, &raw) == REDIS_OK, let raw else {
                throw brokenConnection(context, command: label)
            }
            let reply = raw.assumingMemoryBound(to: redisReply.self)
            if reply.pointee.type == REDIS_REPLY_ERROR {
                errors.append((index, String(decoding: Self.bytes(reply.pointee.str, reply.pointee.len), as: UTF8.self)))
            }
            freeReplyObject(raw)
        }
        for error in errors { try checkErrorReply(error.message, command: label) }
        return errors
    }

    private func readReplies(_ count: Int, context: UnsafeMutablePointer<redisContext>, label: String) throws(RedisError) -> [RedisReply] {
        var replies: [RedisReply] = []
        replies.reserveCapacity(count)
        for _ in 0..<count {
            var raw: UnsafeMutableRawPointer?
            guard redisGetReply(context, &raw) == REDIS_OK, let raw else {
                throw brokenConnection(context, command: label)
            }
            replies.append(Self.decode(raw.assumingMemoryBound(to: redisReply.self)))
            freeReplyObject(raw)
        }
        return replies
    }

    private func brokenConnection(_ context: UnsafeMutablePointer<redisContext>, command: String) -> RedisError {
        var reason = Self.errorText(context)
        if reason.isEmpty || reason.contains("Resource temporarily unavailable") {
            reason = "no reply within \(configuration.commandTimeout) or the connection was lost"
        }
        close()
        return .io(server: server, command: command, reason: reason)
    }

    private static func errorText(_ context: UnsafeMutablePointer<redisContext>) -> String {
        withUnsafeBytes(of: context.pointee.errstr) { bytes in
            let text = bytes.prefix { $0 != 0 }
            return String(decoding: text, as: UTF8.self)
        }
    }

    /// Lays the arguments out in one buffer (one allocation, whole-argument copies) for hiredis' argv calls.
    private static func withArgv<T>(
        _ arguments: [String],
        _ body: (Int32, UnsafeMutablePointer<UnsafePointer<CChar>?>, UnsafePointer<Int>) -> T
    ) -> T {
        var total = 0
        var lengths: [Int] = []
        lengths.reserveCapacity(arguments.count)
        for argument in arguments {
            let count = argument.utf8.count
            lengths.append(count)
            total += count
        }
        let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: max(total, 1), alignment: 1)
        defer { storage.deallocate() }
        var argv: [UnsafePointer<CChar>?] = []
        argv.reserveCapacity(arguments.count)
        var offset = 0
        for (index, argument) in arguments.enumerated() {
            let count = lengths[index]
            let target = UnsafeMutableRawBufferPointer(rebasing: storage[offset..<(offset + count)])
            let copied = argument.utf8.withContiguousStorageIfAvailable { source -> Bool in
                if count > 0 { target.copyMemory(from: UnsafeRawBufferPointer(source)) }
                return true
            }
            if copied == nil {
                for (position, byte) in argument.utf8.enumerated() { target[position] = byte }
            }
            argv.append(UnsafePointer(storage.baseAddress!.advanced(by: offset).assumingMemoryBound(to: CChar.self)))
            offset += count
        }
        return argv.withUnsafeMutableBufferPointer { argvBuffer in
            lengths.withUnsafeBufferPointer { lengthBuffer in
                body(Int32(arguments.count), argvBuffer.baseAddress!, lengthBuffer.baseAddress!)
            }
        }
    }

    private static func decode(_ reply: UnsafeMutablePointer<redisReply>) -> RedisReply {
        let r = reply.pointee
        switch r.type {
        case REDIS_REPLY_STRING:
            return .bulk(bytes(r.str, r.len))
        case REDIS_REPLY_STATUS:
            return .status(String(decoding: bytes(r.str, r.len), as: UTF8.self))
        case REDIS_REPLY_ERROR:
            return .error(String(decoding: bytes(r.str, r.len), as: UTF8.self))
        case REDIS_REPLY_INTEGER:
            return .integer(Int64(r.integer))
        case REDIS_REPLY_ARRAY:
            guard let elements = r.element else { return .array([]) }
            return .array((0..<Int(r.elements)).compactMap { index in
                elements[index].map { decode($0) }
            })
        default:
            return .null
        }
    }

    private static func bytes(_ pointer: UnsafeMutablePointer<CChar>?, _ length: Int) -> [UInt8] {
        guard let pointer, length > 0 else { return [] }
        return pointer.withMemoryRebound(to: UInt8.self, capacity: length) {
            Array(UnsafeBufferPointer(start: $0, count: length))
        }
    }
}

extension timeval {
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self.init(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
    }
}
