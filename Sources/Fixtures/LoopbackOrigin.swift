import Foundation
import ProcessControl
import RedisServerProcess

/// An HTTP origin on 127.0.0.1 serving the files of a folder: nginx (Range, a per-connection rate
/// cap like a CDN's: the demo's) or a script that picks its own port (the tests' `origin.py`, with
/// injected faults). One start-up, file generator and stop for both.
package final class LoopbackOrigin: Sendable {
    /// The served folder.
    package let root: URL
    package let port: Int
    private let process: ChildProcess

    private init(_ process: ChildProcess, serving root: URL, on port: Int) {
        (self.process, self.root, self.port) = (process, root, port)
    }

    package var base: String { "http://127.0.0.1:\(port)" }

    /// nginx serving `root` at `/`, each connection capped at `rateMiB` MiB/s; its configuration,
    /// pid file, temporary folders and logs under `prefix`.
    package static func nginx(root: URL, prefix: URL, rateMiB: Int) async throws -> LoopbackOrigin {
        let nginx: String
        do { nginx = try ChildProcess.locate("nginx") } catch {
            throw FixtureError.origin("The loopback origin needs nginx (Debian: apt-get install -y nginx-light; scripts/setup does it).")
        }
        let logs = prefix.appendingPathComponent("logs").path
        try FileManager.default.createDirectory(atPath: logs, withIntermediateDirectories: true)
        let port = try LocalRedisServer.freeLoopbackPort()
        // Run as root, nginx hands requests to workers running as nobody, who cannot read a state
        // folder under /root: keep the workers as the user running it.
        let user = geteuid() == 0 ? "user root root;" : ""
        let config = """
            daemon off;
            \(user)
            worker_processes 1;
            pid \(prefix.path)/nginx.pid;
            error_log \(logs)/error.log warn;
            events { worker_connections 256; }
            http {
                access_log off;
                sendfile on;
                client_body_temp_path \(prefix.path)/body;
                proxy_temp_path \(prefix.path)/proxy;
                fastcgi_temp_path \(prefix.path)/fastcgi;
                uwsgi_temp_path \(prefix.path)/uwsgi;
                scgi_temp_path \(prefix.path)/scgi;
                server {
                    listen 127.0.0.1:\(port);
                    root \(root.path);
                    location / { limit_rate \(rateMiB)m; }
                }
            }
            """
        let file = prefix.appendingPathComponent("nginx.conf").path
        try config.write(toFile: file, atomically: true, encoding: .utf8)
        let child = try ChildProcess(nginx, ["-c", file, "-p", prefix.path, "-e", logs + "/error.log"], outputPath: logs + "/stdout.log")
        try await waitUntilListening(child, log: logs + "/error.log") { port }
        return LoopbackOrigin(child, serving: root, on: port)
    }

    /// `PYTHON SCRIPT --root ROOT --port-file FILE`: the script binds a free port and writes it to FILE.
    package static func script(python: String, script: String, root: URL) async throws -> LoopbackOrigin {
        let portFile = root.appendingPathComponent(".port").path
        let log = NSTemporaryDirectory() + "provision-origin-\(UUID().uuidString).log"
        let child = try ChildProcess(python, [script, "--root", root.path, "--port-file", portFile], outputPath: log)
        let port = try await waitUntilListening(child, log: log) {
            (try? String(contentsOfFile: portFile, encoding: .utf8)).flatMap { Int($0) } ?? 0
        }
        return LoopbackOrigin(child, serving: root, on: port)
    }

    /// Waits (10 s at most) until `process` accepts connections on the port `port()` names (0: not
    /// yet); returns that port.
    @discardableResult
    private static func waitUntilListening(_ process: ChildProcess, log: String, port: () -> Int) async throws -> Int {
        for _ in 0..<500 {
            guard process.isRunning else {
                throw FixtureError.origin("The loopback origin stopped at start-up; see \(log): \(tail(log))")
            }
            let known = port()
            if known > 0, accepts(port: known) { return known }
            try await Task.sleep(for: .milliseconds(20))
        }
        _ = process.stop(grace: .seconds(5))
        throw FixtureError.origin("The loopback origin did not listen within 10 s; see \(log)")
    }

    /// Writes `size` pseudo-random bytes (seeded) to `name` in the served folder.
    package func addFile(_ name: String, size: Int64, seed: UInt64, piece: (Data) -> Void = { _ in }) throws {
        try PseudoRandomBytes.write(root.appendingPathComponent(name).path, size: size, seed: seed, piece: piece)
    }

    package func stop() { _ = process.stop(grace: .seconds(5)) }

    private static func accepts(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
    }

    private static func tail(_ path: String) -> String {
        String(((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").suffix(300))
    }
}
