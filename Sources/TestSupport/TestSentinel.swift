import Foundation
import ProcessControl
import RedisClient
import RedisServerProcess
import Synchronization

/// A master, one replica and one Sentinel (quorum 1, a master is down after 2 s) on loopback, data in
/// a temporary folder, for one test. The Sentinel is `redis-server --sentinel` (Debian's
/// redis-sentinel is the same program).
package final class TestSentinel: Sendable {
    package let masterPort: Int
    package let replicaPort: Int
    package let sentinelPort: Int
    package let directory: URL
    package static let masterName = "provision-test"
    private let processes = Mutex<[Int: ChildProcess]>([:])

    package init() async throws {
        directory = try makeTemporaryDirectory("sentinel")
        var ports: [Int] = []
        while ports.count < 3 {
            let port = try LocalRedisServer.freeLoopbackPort()
            if !ports.contains(port) { ports.append(port) }
        }
        (masterPort, replicaPort, sentinelPort) = (ports[0], ports[1], ports[2])
        try start(masterPort, [])
        try start(replicaPort, ["--replicaof", "127.0.0.1", String(masterPort)])
        let sentinelDir = directory.appendingPathComponent("sentinel")
        try FileManager.default.createDirectory(at: sentinelDir, withIntermediateDirectories: true)
        let config = sentinelDir.appendingPathComponent("sentinel.conf")
        let lines = [
            "port \(sentinelPort)", "bind 127.0.0.1", "dir \(sentinelDir.path)",
            "logfile \(sentinelDir.appendingPathComponent("sentinel.log").path)",
            "sentinel monitor \(Self.masterName) 127.0.0.1 \(masterPort) 1",
            "sentinel down-after-milliseconds \(Self.masterName) 2000",
            "sentinel failover-timeout \(Self.masterName) 5000",
        ]
        try (lines.joined(separator: "\n") + "\n").write(to: config, atomically: true, encoding: .utf8)
        let sentinel = try ChildProcess("redis-server", [config.path, "--sentinel"])
        processes.withLock { $0[sentinelPort] = sentinel }
        // Ready when the replica is in sync and the Sentinel knows it (it can only promote a known one).
        let ready = await eventually(timeout: .seconds(30), every: .milliseconds(200)) {
            let replica = self.node(self.replicaPort)
            let watcher = self.node(self.sentinelPort)
            defer {
                replica.close()
                watcher.close()
            }
            guard let info = try? await replica.send("INFO", "replication").string, info.contains("master_link_status:up"),
                let known = try? await watcher.send("SENTINEL", "REPLICAS", Self.masterName).array, !known.isEmpty,
                let named = try? await watcher.send("SENTINEL", "get-master-addr-by-name", Self.masterName).array
            else { return false }
            return named.last?.string == String(self.masterPort)
        }
        guard ready else { throw ClusterSetupError(what: "the replica or the sentinel did not come up within 30 s") }
    }

    /// The URL a client uses: the Sentinel, and the master's name.
    package var url: String { "redis+sentinel://127.0.0.1:\(sentinelPort)/\(Self.masterName)" }

    /// A plain client of one server (master, replica or the Sentinel itself).
    package func node(_ port: Int) -> RedisClient {
        RedisClient(
            configuration: RedisConfiguration(
                endpoint: .tcp(host: "127.0.0.1", port: port), connectTimeout: .seconds(2), commandTimeout: .seconds(5),
                reconnectWindow: .zero),
            label: "sentinel-admin-\(port)")
    }

    /// Kills a server with `signal` (SIGKILL: a crash, writes not yet replicated are lost).
    package func kill(_ port: Int, signal: Int32 = SIGKILL) {
        guard let process = processes.withLock({ $0.removeValue(forKey: port) }) else { return }
        process.signal(signal)
        _ = process.waitBlocking(timeout: .seconds(10))
    }

    package func stop() {
        let all = processes.withLock { list -> [ChildProcess] in defer { list = [:] }; return Array(list.values) }
        for process in all { _ = process.stop(grace: .seconds(10)) }
        try? FileManager.default.removeItem(at: directory)
    }

    deinit { stop() }

    private func start(_ port: Int, _ extra: [String]) throws {
        let dir = directory.appendingPathComponent(String(port))
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let process = try ChildProcess(
            "redis-server",
            ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir.path, "--save", "", "--appendonly", "no",
             "--logfile", dir.appendingPathComponent("redis.log").path] + extra)
        processes.withLock { $0[port] = process }
    }
}
