import Foundation
import ProcessControl
import RedisClient
import RedisServerProcess
import Synchronization

/// A Redis Cluster of masters (no replicas) on free loopback ports, data in a temporary folder, for
/// one test: `redis-server --cluster-enabled yes` per node, then `redis-cli --cluster create`.
package final class TestCluster: Sendable {
    package let ports: [Int]
    package let directory: URL
    private let servers = Mutex<[ChildProcess]>([])

    package init(masters: Int = 3) async throws {
        directory = try makeTemporaryDirectory("cluster")
        var chosen: [Int] = []
        // The cluster bus listens on port + 10000: keep both in range and apart.
        while chosen.count < masters {
            let port = try LocalRedisServer.freeLoopbackPort()
            if port <= 55_000, !chosen.contains(where: { abs($0 - port) < 2 }) { chosen.append(port) }
        }
        ports = chosen
        for port in ports {
            let dir = directory.appendingPathComponent(String(port))
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            let server = try ChildProcess(
                "redis-server",
                ["--port", String(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--cluster-node-timeout", "3000", "--dir", dir.path, "--save", "", "--appendonly", "no",
                 "--logfile", dir.appendingPathComponent("redis.log").path])
            servers.withLock { $0.append(server) }
        }
        for port in ports {
            let client = node(port)
            defer { client.close() }
            guard await eventually(timeout: .seconds(20), { (try? await client.send("PING")) == .status("PONG") }) else {
                throw ClusterSetupError(what: "node \(port) did not answer PING")
            }
        }
        let create = try await ChildProcess.run(
            "redis-cli", ["--cluster", "create"] + ports.map { "127.0.0.1:\($0)" } + ["--cluster-replicas", "0", "--cluster-yes"],
            timeout: .seconds(60))
        guard create.succeeded else { throw ClusterSetupError(what: "redis-cli --cluster create failed: \(create.output.suffix(500))") }
        try await waitUntilSettled()
    }

    /// `redis+cluster://` with every node as a seed.
    package var url: String { "redis+cluster://" + ports.map { "127.0.0.1:\($0)" }.joined(separator: ",") }

    /// A plain (single-node) client of one node, for administration.
    package func node(_ port: Int) -> RedisClient {
        RedisClient(
            configuration: RedisConfiguration(
                endpoint: .tcp(host: "127.0.0.1", port: port), connectTimeout: .seconds(2), commandTimeout: .seconds(10),
                reconnectWindow: .seconds(2)),
            label: "cluster-admin-\(port)")
    }

    /// The port of the node that serves `slot`, as node `ports[0]` sees it.
    package func owner(of slot: Int) async throws -> Int {
        let client = node(ports[0])
        defer { client.close() }
        for range in try await client.send("CLUSTER", "SLOTS").array ?? [] {
            guard let fields = range.array, fields.count >= 3, let start = fields[0].int, let end = fields[1].int,
                let master = fields[2].array, master.count >= 2, let port = master[1].int
            else { continue }
            if (Int(start)...Int(end)).contains(slot) { return Int(port) }
        }
        throw ClusterSetupError(what: "no node serves slot \(slot)")
    }

    /// Starts moving `slot` from `source` to `target`: `IMPORTING` on the target, `MIGRATING` on the source.
    package func beginMigration(slot: Int, from source: Int, to target: Int) async throws {
        let sourceID = try await id(of: source)
        let targetID = try await id(of: target)
        try await admin(target, ["CLUSTER", "SETSLOT", String(slot), "IMPORTING", sourceID])
        try await admin(source, ["CLUSTER", "SETSLOT", String(slot), "MIGRATING", targetID])
    }

    /// Moves the slot's keys with `MIGRATE … KEYS` in batches until none is left on the source;
    /// returns how many keys moved.
    @discardableResult
    package func moveKeys(slot: Int, from source: Int, to target: Int) async throws -> Int {
        let client = node(source)
        defer { client.close() }
        var moved = 0
        while true {
            let keys = (try await client.send("CLUSTER", "GETKEYSINSLOT", String(slot), "100").array ?? []).compactMap(\.string)
            if keys.isEmpty { return moved }
            try await client.send(["MIGRATE", "127.0.0.1", String(target), "", "0", "5000", "KEYS"] + keys)
            moved += keys.count
        }
    }

    /// Ends the migration: the slot belongs to `target` on every node (target and source first).
    package func finishMigration(slot: Int, from source: Int, to target: Int) async throws {
        let targetID = try await id(of: target)
        for port in [target, source] + ports.filter({ $0 != target && $0 != source }) {
            try await admin(port, ["CLUSTER", "SETSLOT", String(slot), "NODE", targetID])
        }
        try await waitUntilSettled()
    }

    package func stop() {
        let all = servers.withLock { list -> [ChildProcess] in defer { list = [] }; return list }
        for server in all { _ = server.stop(grace: .seconds(10)) }
        try? FileManager.default.removeItem(at: directory)
    }

    deinit { stop() }

    private func id(of port: Int) async throws -> String {
        let client = node(port)
        defer { client.close() }
        guard let id = try await client.send("CLUSTER", "MYID").string else { throw ClusterSetupError(what: "node \(port) has no id") }
        return id
    }

    private func admin(_ port: Int, _ command: [String]) async throws {
        let client = node(port)
        defer { client.close() }
        try await client.send(command)
    }

    /// Every node reports `cluster_state:ok` and the same slot owners.
    private func waitUntilSettled() async throws {
        let settled = await eventually(timeout: .seconds(30), every: .milliseconds(100)) {
            var maps: [String] = []
            for port in ports {
                let client = node(port)
                defer { client.close() }
                guard let info = try? await client.send("CLUSTER", "INFO").string, info.contains("cluster_state:ok"),
                    let slots = try? await client.send("CLUSTER", "SLOTS")
                else { return false }
                maps.append("\(Self.owners(slots))")
            }
            return Set(maps).count == 1
        }
        guard settled else { throw ClusterSetupError(what: "the cluster did not settle within 30 s") }
    }

    private static func owners(_ reply: RedisReply) -> [String] {
        (reply.array ?? []).compactMap { range in
            guard let fields = range.array, fields.count >= 3, let master = fields[2].array, master.count >= 2 else { return nil }
            return "\(fields[0].int ?? -1)-\(fields[1].int ?? -1)@\(master[1].int ?? -1)"
        }.sorted()
    }
}

/// A test cluster could not be set up.
package struct ClusterSetupError: Error, CustomStringConvertible {
    package let what: String
    package var description: String { "The test cluster could not be set up: \(what)." }
}
