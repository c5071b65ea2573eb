import Foundation
import JobQueue
import RedisClient
import TestSupport
import Testing

@Suite("A plan on a 3-master Redis Cluster", .serialized)
struct ClusterWorkerTests {
    /// The machine's slot moves to another master in the middle of the plan (IMPORTING/MIGRATING,
    /// MIGRATE of its keys, SETSLOT NODE): workers and the API client follow ASK, TRYAGAIN and MOVED.
    @Test func aPlanEndsReadyWhileTheMachineSlotMigrates() async throws {
        let cluster = try await TestCluster()
        defer { cluster.stop() }
        var configuration = try RedisConfiguration(url: cluster.url)
        configuration.commandTimeout = .seconds(10)
        let client = RedisClient(configuration: configuration, label: "api")
        defer { client.close() }
        let queue = try JobQueue(redis: client, machine: "m1")
        let parallel = (0..<40).map { sleepJob("node:\($0)", ms: 60, deps: ["comfyui"]) }
        _ = try await queue.enqueue(
            planJSON: planJSON(
                "migrating",
                [sleepJob("comfyui", ms: 100)] + parallel
                    + [sleepJob("verify", ms: 10, deps: parallel.compactMap { $0["id"] as? String })]))
        let pool = try TestProcess.provision(
            ["worker", "--machine", "m1", "--processes", "2", "--concurrency", "4", "--log-level", "info", "--health-port", "0"],
            environment: ["REDIS_URL": cluster.url])
        defer { pool.terminate() }

        #expect(try await eventually(timeout: .seconds(60)) { try await queue.status().count("succeeded") >= 5 }, "\(pool.output)")
        let slot = ClusterSlot.of(queue.keys.base)
        let source = try await cluster.owner(of: slot)
        let target = try #require(cluster.ports.first { $0 != source })
        try await cluster.beginMigration(slot: slot, from: source, to: target)
        try await Task.sleep(for: .milliseconds(300))
        let moved = try await cluster.moveKeys(slot: slot, from: source, to: target)
        try await Task.sleep(for: .milliseconds(200))
        try await cluster.finishMigration(slot: slot, from: source, to: target)
        #expect(moved > 0)
        let during = try await queue.status()
        #expect(during.count("succeeded") < during.count("total"), "the plan ended before the migration: nothing was tested")

        var status = try await queue.status()
        _ = try await eventually(timeout: .seconds(120), every: .milliseconds(100)) {
            status = try await queue.status()
            return status.state == .ready
        }
        #expect(status.state == .ready, "\(status) \(pool.output.suffix(3000))")
        #expect(status.count("succeeded") == 42 && status.count("total") == 42)
        for field in ["waiting", "ready", "active", "delayed", "failed", "dead", "cancelled"] {
            #expect(status.count(field) == 0, "\(field)")
        }
        let jobs = try await queue.jobs(plan: "migrating")
        #expect(jobs.count == 42 && jobs.allSatisfy { $0["state"] == "succeeded" })
        #expect(try await client.send("LLEN", queue.keys.ready).int == 0)
        // The keys live on the target now, and the fleet learnt the flip once.
        let targetNode = cluster.node(target)
        defer { targetNode.close() }
        #expect(try await targetNode.send("CLUSTER", "COUNTKEYSINSLOT", String(slot)).int ?? 0 > 0)
        #expect(try await eventually(timeout: .seconds(20)) {
            (try await client.send("HGET", queue.keys.status, "announced").string) == "1"
        })
        let fleet = try await client.send("XRANGE", queue.keys.fleetEvents, "-", "+").array ?? []
        #expect(fleet.count == 1, "\(fleet)")
        let events = (try await client.send("XRANGE", queue.keys.events, "-", "+").array ?? []).compactMap { entry in
            entry.array?.last?.array?.last?.string
        }
        #expect(events.filter { $0.contains("\"machine.ready.complete\"") }.count == 1)
        pool.signal(SIGTERM)
        #expect(await pool.wait(timeout: .seconds(60)) == 0)
    }
}
