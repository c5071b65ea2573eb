import Foundation
import JobQueue
import RedisClient
import TestSupport
import Testing

@Suite("An idle machine's cost to Redis, and retire", .serialized)
struct IdleMachineTests {
    /// With the defaults (2 processes, events, health and services on) a machine holds at most 3 connections
    /// and, idle, makes no claims: only heartbeats (one script call per process every 15 s).
    @Test func anIdleMachineHoldsFewConnectionsAndMakesAlmostNoScriptCalls() async throws {
        let h = try await WorkerHarness()
        // The test's own connections are not the machine's.
        func clientIDs() async throws -> Set<String> {
            let list = try await h.queue.redis.send("CLIENT", "LIST").string ?? ""
            return Set(list.split(separator: "\n").compactMap { line in line.split(separator: " ").first.map(String.init) })
        }
        let before = try await clientIDs()
        let port = try freeLoopbackPort()
        let pool = try TestProcess.provision(
            ["worker", "--machine", "m1", "--processes", "2", "--concurrency", "4", "--health-port", String(port)],
            environment: ["REDIS_URL": h.redis.url])
        defer { pool.terminate() }
        try await h.enqueue(planJSON("first", (0..<20).map { sleepJob("j\($0)", ms: 20) }))
        #expect(try await h.waitForState([.ready]).state == .ready, "\(pool.output)")
        #expect(try await eventually(timeout: .seconds(20)) {
            try await h.queue.redis.send("HGET", h.queue.keys.status, "announced").string == "1"
        })
        _ = try await httpGet("http://127.0.0.1:\(port)/health")

        let clients = try await h.queue.redis.send("CLIENT", "LIST").string ?? ""
        // Events, announcements, health and the services' supervisor share one connection; each worker
        // process has one. The supervisor waits for a services job's signal, not on a connection.
        let machine = clients.split(separator: "\n").filter { line in !before.contains(line.split(separator: " ").first.map(String.init) ?? "") }
        #expect(machine.count <= 3, "\(clients)")

        func scriptCalls() async throws -> Int {
            let stats = try await h.queue.redis.send("INFO", "commandstats").string ?? ""
            let line = stats.split(separator: "\r\n").first { $0.hasPrefix("cmdstat_evalsha:") } ?? ""
            return Int(line.split(separator: ",").first?.split(separator: "=").last ?? "0") ?? 0
        }
        let callsBefore = try await scriptCalls()
        try await Task.sleep(for: .seconds(12))
        let idle = try await scriptCalls() - callsBefore
        #expect(idle <= 2, "\(idle) script calls in 12 s of idleness")

        // A new plan still starts: the wake marker ends the blocking wait.
        try await h.enqueue(planJSON("second", [sleepJob("k", ms: 10)]))
        #expect(try await h.waitForState([.ready], timeout: .seconds(30)).planID == "second")
        #expect(await h.stop(pool) == 0)

        // `provision retire` leaves nothing of the machine, and the fleet stream (fleet-wide) stays.
        let retire = try await run(provisionExecutable(), ["retire", "--redis", h.redis.url, "--machine", "m1"])
        #expect(retire.status == 0, "\(retire.output)")
        #expect((try await h.queue.redis.send("KEYS", "*m1*").array ?? []).isEmpty)
        #expect(try await h.queue.redis.send("DBSIZE").int == 1)
        #expect(try await h.queue.redis.send("EXISTS", h.queue.keys.fleetEvents).int == 1)
    }
}
