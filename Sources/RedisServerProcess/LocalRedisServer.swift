import Foundation
import ProcessControl
import RedisClient
import Synchronization

/// A private `redis-server` started from this process: the embedded default of `provision up`
/// (and the offline readers of its state), and the real server the tests run against. Not part of
/// the Redis client: launching a server is its own concern. Its config file (mode 0600) holds the password, so
/// no secret appears on a command line.
package final class LocalRedisServer: Sendable {
    package enum Listen: Sendable, Equatable {
        /// TCP on 127.0.0.1 only.
        case loopback(port: Int)
        /// A unix socket only (no TCP port at all).
        case socket(path: String)
    }

    package let directory: URL
    package let listen: Listen
    package let password: String?
    package let appendOnly: Bool
    /// More lines for redis.conf (tests: `enable-debug-command local`).
    package let extraConfiguration: [String]
    private let process = Mutex<ChildProcess?>(nil)

    package init(directory: URL, listen: Listen, appendOnly: Bool = true, password: String? = nil, extraConfiguration: [String] = []) {
        self.directory = directory
        self.listen = listen
        self.appendOnly = appendOnly
        self.password = password
        self.extraConfiguration = extraConfiguration
    }

    /// A URL clients can use, with the password when there is one.
    package var url: String {
        let auth = password.map { ":\($0.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "")@" } ?? ""
        switch listen {
        case .loopback(let port): return "redis://\(auth)127.0.0.1:\(port)/0"
        case .socket(let path):
            return "unix://\(path)" + (password.map { "?password=\($0.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "")" } ?? "")
        }
    }

    package var configuration: RedisConfiguration {
        get throws(RedisError) { try RedisConfiguration(url: url) }
    }

    /// Starts the server and waits until it answers PING (at most `timeout`).
    package func start(timeout: Duration = .seconds(20)) async throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let config = directory.appendingPathComponent("redis.conf")
        var lines = [
            "daemonize no", "dir \(directory.path)", "logfile \(directory.appendingPathComponent("redis.log").path)",
            "save \"\"", "appendonly \(appendOnly ? "yes" : "no")", "appendfsync everysec",
            "protected-mode yes", "maxclients 10000",
        ]
        switch listen {
        case .loopback(let port):
            lines += ["bind 127.0.0.1", "port \(port)"]
        case .socket(let path):
            lines += ["port 0", "unixsocket \(path)", "unixsocketperm 700"]
        }
        if let password { lines.append("requirepass \"\(password)\"") }
        lines += extraConfiguration
        _ = FileManager.default.createFile(atPath: config.path, contents: Data((lines.joined(separator: "\n") + "\n").utf8), attributes: [.posixPermissions: 0o600])

        let server: ChildProcess
        do {
            // In a process group of its own: a Ctrl-C on the terminal reaches `provision up`, which
            // stops this server after its workers have drained, not before.
            server = try ChildProcess("redis-server", [config.path], newProcessGroup: true)
        } catch {
            throw LocalRedisError.notStarted("\(error) (Debian: apt-get install -y redis-server)")
        }
        process.withLock { $0 = server }

        let client = RedisClient(
            configuration: RedisConfiguration(
                endpoint: try configuration.endpoint, password: password, connectTimeout: .seconds(1),
                commandTimeout: .seconds(2), reconnectWindow: .zero))
        defer { client.close() }
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while true {
            if !server.isRunning {
                throw LocalRedisError.exited(log: tail(of: directory.appendingPathComponent("redis.log")))
            }
            // LOADING replies (AOF replay) count as not ready yet.
            if let reply = try? await client.send("PING"), reply == .status("PONG") { return }
            if clock.now > deadline { stop(); throw LocalRedisError.timeout }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Stops the server: SIGTERM lets it finish writing the append-only file, SIGKILL is a crash.
    package func stop(signal: Int32 = SIGTERM) {
        guard let server = process.withLock({ p -> ChildProcess? in defer { p = nil }; return p }) else { return }
        if signal == SIGKILL {
            server.signal(SIGKILL)
            _ = server.waitBlocking(timeout: .seconds(10))
        } else {
            server.stop(grace: .seconds(30))
        }
    }

    package var pid: Int32? { process.withLock { $0?.pid } }

    deinit { stop() }

    /// A free TCP port on 127.0.0.1, as the kernel hands one out.
    package static func freeLoopbackPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw LocalRedisError.noPort }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { throw LocalRedisError.noPort }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else { throw LocalRedisError.noPort }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    private func tail(of file: URL) -> String {
        guard let text = try? String(contentsOf: file, encoding: .utf8) else { return "" }
        return text.split(separator: "\n").suffix(5).joined(separator: "\n")
    }
}

/// Why a private redis-server could not be started.
package enum LocalRedisError: Error, CustomStringConvertible {
    case notStarted(String)
    case exited(log: String)
    case timeout
    case noPort

    package var description: String {
        switch self {
        case .notStarted(let reason):
            return "redis-server could not be started: \(reason)"
        case .exited(let log):
            return "redis-server exited at start-up; its log ends with: \(log)"
        case .timeout:
            return "redis-server did not answer PING in time."
        case .noPort:
            return "No free loopback port could be found."
        }
    }
}
