import Foundation
import RedisClient
import TestSupport
import Testing

@Suite("RedisClient on a local 3-master Redis Cluster", .serialized)
struct ClusterTests {
    @Test func slotsMatchTheServersAndHashTagsKeepKeysTogether() async throws {
        let cluster = try await TestCluster()
        defer { cluster.stop() }
        let admin = cluster.node(cluster.ports[0])
        defer { admin.close() }
        for key in ["provision:{m1}:status", "a", "{}x", "{a}{b}", "provision:fleet:events", "{provision:fleet:events}:announced:m1", "é"] {
            let server = try await admin.send("CLUSTER", "KEYSLOT", key).int
            #expect(server == Int64(ClusterSlot.of(key)), "\(key)")
        }
        #expect(ClusterSlot.of("provision:{m1}:status") == ClusterSlot.of("provision:{m1}:jobs"))
        #expect(ClusterSlot.of("provision:fleet:events") == ClusterSlot.of("{provision:fleet:events}:announced:m7"))
    }

    @Test func commandsPipelinesAndScriptsAreRoutedToEveryNode() async throws {
        let cluster = try await TestCluster()
        defer { cluster.stop() }
        let client = try RedisClient(url: cluster.url)
        defer { client.close() }
        let keys = (0..<60).map { "key-\($0)" }
        for key in keys { try await client.send("SET", key, "v-\(key)") }
        // A pipeline across slots of several nodes comes back in order.
        let replies = try await client.pipeline(keys.map { ["GET", $0] })
        #expect(replies.map(\.string) == keys.map { "v-\($0)" })
        // Every node holds some of them: the routing used all three.
        var perNode: [Int] = []
        for port in cluster.ports {
            let node = cluster.node(port)
            defer { node.close() }
            perNode.append(Int(try await node.send("DBSIZE").int ?? 0))
        }
        #expect(perNode.allSatisfy { $0 > 0 } && perNode.reduce(0, +) == keys.count, "\(perNode)")
        // A script is loaded on each node it runs on.
        let script = RedisScript(name: "echo", source: "return redis.call('GET', KEYS[1])")
        for key in keys.prefix(10) {
            #expect(try await client.eval(script, keys: [key], arguments: []).string == "v-\(key)")
        }
    }

    @Test func aMigratedSlotIsFollowedThroughAskAndMoved() async throws {
        let cluster = try await TestCluster()
        defer { cluster.stop() }
        let client = try RedisClient(url: cluster.url)
        defer { client.close() }
        let keys = (0..<20).map { "item:{tag}:\($0)" }
        for key in keys { try await client.send("SET", key, "1") }
        let slot = ClusterSlot.of("{tag}")
        let source = try await cluster.owner(of: slot)
        let target = try #require(cluster.ports.first { $0 != source })
        try await cluster.beginMigration(slot: slot, from: source, to: target)
        // Half the keys move: reads of moved keys are answered by the target after ASK.
        let admin = cluster.node(source)
        defer { admin.close() }
        try await admin.send(["MIGRATE", "127.0.0.1", String(target), "", "0", "5000", "KEYS"] + Array(keys.prefix(10)))
        for key in keys { #expect(try await client.send("INCR", key).int == 2, "\(key)") }
        // A new key of the migrating slot is created on the target (ASK), then everything moves.
        try await client.send("SET", "item:{tag}:new", "x")
        try await cluster.moveKeys(slot: slot, from: source, to: target)
        try await cluster.finishMigration(slot: slot, from: source, to: target)
        for key in keys { #expect(try await client.send("GET", key).string == "2") }
        #expect(try await client.send("GET", "item:{tag}:new").string == "x")
        let targetNode = cluster.node(target)
        defer { targetNode.close() }
        #expect(try await targetNode.send("CLUSTER", "COUNTKEYSINSLOT", String(slot)).int == 21)
    }

    @Test func clusterURLsAreParsedAndMisuseIsExplained() throws {
        let configuration = try RedisConfiguration(url: "redis+cluster://user:p%40ss@127.0.0.1:7000,127.0.0.1:7001")
        #expect(configuration.cluster == [ClusterSeed(host: "127.0.0.1", port: 7000), ClusterSeed(host: "127.0.0.1", port: 7001)])
        #expect(configuration.username == "user" && configuration.password == "p@ss")
        #expect(!configuration.serverDescription.contains("p@ss"))
        #expect(throws: RedisError.self) { try RedisConfiguration(url: "redis+cluster://127.0.0.1:7000/3") }
        #expect(throws: RedisError.self) { try RedisConfiguration(url: "redis+cluster://127.0.0.1") }
        do {
            _ = try RedisConfiguration(url: "rediss://127.0.0.1:6380")
            Issue.record("rediss:// was accepted")
        } catch {
            #expect(error.description.contains("TLS"))
        }
    }

    @Test func aSingleServerBehindAClusterURLIsExplained() async throws {
        let redis = try await TestRedis(unixSocket: false)
        defer { redis.stop() }
        var configuration = try RedisConfiguration(url: "redis+cluster://127.0.0.1:\(redis.port)")
        configuration.reconnectWindow = .seconds(1)
        let client = RedisClient(configuration: configuration)
        defer { client.close() }
        do {
            try await client.send("GET", "x")
            Issue.record("a single server was used as a cluster")
        } catch {
            #expect(error.description.contains("not in cluster mode"), "\(error)")
        }
    }
}
