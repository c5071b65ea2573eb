import Foundation
import RedisClient
import RedisServerProcess

/// A real redis-server with its data in a temporary folder, for one test: on a unix socket in that
/// folder, or on a loopback TCP port for a test that needs TCP (`unixSocket: false`).
package final class TestRedis: Sendable {
    package let server: LocalRedisServer
    package let port: Int
    package let directory: URL

    /// With `unixSocket` the server listens on `DIRECTORY/redis.sock` only (`port` is 0); without,
    /// on a port that was free a moment before (another process may take it in between).
    package init(appendOnly: Bool = false, password: String? = nil, unixSocket: Bool = true, extraConfiguration: [String] = []) async throws {
        directory = try makeTemporaryDirectory("redis")
        port = unixSocket ? 0 : try LocalRedisServer.freeLoopbackPort()
        let listen: LocalRedisServer.Listen = unixSocket ? .socket(path: directory.appendingPathComponent("redis.sock").path) : .loopback(port: port)
        server = LocalRedisServer(directory: directory, listen: listen, appendOnly: appendOnly, password: password, extraConfiguration: extraConfiguration)
        try await server.start()
    }

    package var url: String { server.url }

    /// A client with short timeouts, so a broken test fails fast rather than hanging.
    package func client(label: String = "test", reconnectWindow: Duration = .seconds(5)) throws -> RedisClient {
        var configuration = try server.configuration
        configuration.commandTimeout = .seconds(5)
        configuration.reconnectWindow = reconnectWindow
        return RedisClient(configuration: configuration, label: label)
    }

    /// Restarts the server on the same port and data (SIGTERM, or SIGKILL for a crash).
    package func restart(signal: Int32 = SIGTERM, downtime: Duration = .zero) async throws {
        server.stop(signal: signal)
        if downtime > .zero { try await Task.sleep(for: downtime) }
        try await server.start()
    }

    package func stop() {
        server.stop()
        try? FileManager.default.removeItem(at: directory)
    }

    deinit { stop() }
}

/// A free TCP port on 127.0.0.1 (for a test that needs TCP; others listen on unix sockets).
package func freeLoopbackPort() throws -> Int { try LocalRedisServer.freeLoopbackPort() }

/// A fresh folder under the system's temporary directory.
package func makeTemporaryDirectory(_ name: String) throws -> URL {
    let url = URL(fileURLWithPath: NSTemporaryDirectory())
        .appendingPathComponent("provision-tests-\(name)-\(UUID().uuidString.prefix(8))")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// Polls `condition` until it holds or `timeout` passes; returns whether it held.
package func eventually(
    timeout: Duration = .seconds(30), every interval: Duration = .milliseconds(50),
    _ condition: () async throws -> Bool
) async rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: interval)
    }
    return try await condition()
}
