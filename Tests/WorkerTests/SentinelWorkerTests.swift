import Foundation
import JobQueue
import RedisClient
import TestSupport
import Testing

@Suite("A plan behind Sentinel, with a failover", .serialized)
struct SentinelWorkerTests {
    /// The master is killed mid-plan (writes not yet replicated are lost) and Sentinel promotes the
    /// replica. Workers and the API client find the new master; what the old master had not passed
    /// on comes back as leases that expire and jobs that run again, so the plan ends ready with every
    /// job counted once.
    @Test func aPlanEndsReadyAfterTheMasterIsKilledAndTheReplicaPromoted() async throws {
        let sentinel = try await TestSentinel()
        defer { sentinel.stop() }
        let client = try RedisClient(url: sentinel.url, label: "api")
        defer { client.close() }
        let queue = try JobQueue(redis: client, machine: "m1")
        let lease = ["lease_ms": 2000]
        let parallel = (0..<28).map { sleepJob("node:\($0)", ms: 150, deps: ["comfyui"], lease) }
        _ = try await queue.enqueue(
            planJSON: planJSON(
                "failover",
                [sleepJob("comfyui", ms: 100, deps: [], lease)] + parallel
                    + [sleepJob("verify", ms: 10, deps: parallel.compactMap { $0["id"] as? String }, lease)]))
        let pool = try TestProcess.provision(
            ["worker", "--machine", "m1", "--processes", "2", "--concurrency", "3", "--log-level", "info", "--health-port", "0"],
            environment: ["REDIS_URL": sentinel.url])
        defer { pool.terminate() }

        #expect(try await eventually(timeout: .seconds(60)) { try await queue.status().count("succeeded") >= 5 }, "\(pool.output)")
        let promoted = sentinel.node(sentinel.replicaPort)
        defer { promoted.close() }
        // Replication is asynchronous: the scenario starts once the replica has the plan (what it
        // lacks of the last writes is what the failover loses).
        #expect(await eventually(timeout: .seconds(10)) { (try? await promoted.send("EXISTS", queue.keys.jobs).int) == 1 })
        let replicated = try await promoted.send("DBSIZE").int ?? 0
        let replicaInfo = try await promoted.send("INFO", "replication").string ?? ""
        let watcher = sentinel.node(sentinel.sentinelPort)
        defer { watcher.close() }
        let named = try await watcher.send("SENTINEL", "get-master-addr-by-name", TestSentinel.masterName)
        sentinel.kill(sentinel.masterPort)
        #expect(replicated > 0, "the replica had no data before the failover: \(replicaInfo) \(named) master \(sentinel.masterPort)")
        #expect(await eventually(timeout: .seconds(30), every: .milliseconds(200)) {
            (try? await promoted.send("ROLE").array?.first?.string) == "master"
        })

        var status = try await queue.status()
        _ = try await eventually(timeout: .seconds(120), every: .milliseconds(100)) {
            status = try await queue.status()
            return status.state == .ready
        }
        #expect(status.state == .ready, "\(status) \(pool.output.suffix(3000))")
        #expect(status.count("succeeded") == 30 && status.count("total") == 30)
        for field in ["waiting", "ready", "active", "delayed", "failed", "dead", "cancelled"] {
            #expect(status.count(field) == 0, "\(field)")
        }
        let jobs = try await queue.jobs(plan: "failover")
        #expect(jobs.count == 30 && jobs.allSatisfy { $0["state"] == "succeeded" })
        #expect(try await eventually(timeout: .seconds(20)) {
            (try await client.send("HGET", queue.keys.status, "announced").string) == "1"
        })
        let fleet = try await client.send("XRANGE", queue.keys.fleetEvents, "-", "+").array ?? []
        #expect(fleet.count == 1, "\(fleet)")
        pool.signal(SIGTERM)
        #expect(await pool.wait(timeout: .seconds(60)) == 0)
    }
}
