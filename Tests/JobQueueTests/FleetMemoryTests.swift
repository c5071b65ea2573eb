import Foundation
import JobQueue
import RedisClient
import TestSupport
import Testing

@Suite("Bounded memory and the protocol version", .serialized)
struct FleetMemoryTests {
    /// Runs a plan of `n` noop jobs to `ready` through the queue API.
    static func runToReady(_ h: Harness, plan: String, jobs n: Int, limits: JobQueue.Limits = JobQueue.Limits()) async throws {
        _ = try await h.queue.enqueue(planJSON: planJSON(plan, (0..<n).map { job("j\($0)") }), limits: limits)
        try await h.queue.register(worker: "w1", infoJSON: "{}")
        _ = try await h.queue.heartbeat(worker: "w1", leases: [])
        let claimed = try await h.queue.claim(worker: "w1", count: n).jobs
        #expect(claimed.count == n)
        #expect(try await h.queue.complete(claimed.map { ($0.lease, "{}") }).flip == .ready)
    }

    @Test func retireLeavesDBSizeAsBeforeTheMachineExisted() async throws {
        let h = try await Harness()
        defer { h.redis.stop() }
        // Another machine and the fleet stream exist before m1 does.
        let other = try Harness(sharing: h, machine: "m0")
        try await Self.runToReady(other, plan: "p0", jobs: 3)
        _ = try await FleetStream(redis: h.client, keys: other.queue.keys).announce(
            generation: 1, planID: "p0", message: "{}", fields: [("type", "machine_ready")])
        let before = try await h.dbsize()

        try await Self.runToReady(h, plan: "p1", jobs: 20)
        try await Self.runToReady(h, plan: "p2", jobs: 5)  // p1 moves to B:previous
        guard case .claimed(let generation, _, _, _) = try await h.queue.announce(claimant: "c", graceMilliseconds: 0, takeoverMilliseconds: 1000)
        else { Issue.record("no claim"); return }
        _ = try await FleetStream(redis: h.client, keys: h.queue.keys).announce(
            generation: generation, planID: "p2", message: "{}", fields: [("type", "machine_ready")])
        #expect(try await h.queue.announced(claimant: "c", eventJSON: #"{"event":"machine.ready.complete"}"#, eventsMaxLength: 100))
        try await h.client.send("HINCRBY", h.queue.keys.metrics, "jobs", "25")
        try await h.client.send("HSET", h.queue.keys.progress, "j0", "{}")
        #expect(try await h.dbsize() > before + 8)

        // A running plan is only retired with force.
        _ = try await h.queue.enqueue(planJSON: planJSON("p3", [job("x")]))
        await #expect(throws: JobQueueError.self) { try await h.queue.retire() }
        #expect(try await h.queue.retire(force: true) > 8)
        try await FleetStream(redis: h.client, keys: h.queue.keys).forget()
        #expect(try await h.dbsize() == before)
        let left = try await h.client.send("KEYS", "*{m1}*").array ?? []
        #expect(left.isEmpty, "\(left)")
        // A retired machine starts again at generation 1, and the fleet takes its announcement.
        try await Self.runToReady(h, plan: "p1", jobs: 1)
        #expect(try await h.queue.status().generation == 1)
        let (_, duplicate) = try await FleetStream(redis: h.client, keys: h.queue.keys).announce(
            generation: 1, planID: "p1", message: "{}", fields: [])
        #expect(!duplicate)
    }

    @Test func finishedPlansExpireAfterTheRetention() async throws {
        let h = try await Harness()
        defer { h.redis.stop() }
        var limits = JobQueue.Limits()
        limits.retentionSeconds = 1
        try await Self.runToReady(h, plan: "short", jobs: 10)
        try await Self.runToReady(h, plan: "shorter", jobs: 10, limits: limits)
        // Both the finished plan and the superseded one have a TTL of the retention.
        for key in [h.queue.keys.jobs, h.queue.keys.previous, h.queue.keys.plans] {
            let ttl = try await h.client.send("PTTL", key).int ?? -3
            #expect(ttl > 0 && ttl <= 1000, "\(key) \(ttl)")
        }
        #expect(try await h.queue.job(plan: "shorter", id: "j3")?["state"] == "succeeded")
        #expect(try await eventually(timeout: .seconds(10), every: .milliseconds(100)) {
            try await h.client.send("EXISTS", h.queue.keys.jobs, h.queue.keys.previous, h.queue.keys.plans).int == 0
        })
        #expect(try await h.queue.job(plan: "shorter", id: "j3") == nil)
        // The status stays readable, and the plan id may be used again once its window passed.
        let status = try await h.queue.status()
        #expect(status.state == .ready && status.planID == "shorter" && status.count("succeeded") == 10)
        _ = try await h.queue.enqueue(planJSON: planJSON("shorter", [job("again")]))
        #expect(try await h.queue.status().generation == 3)
    }

    @Test func scriptsOfAnotherProtocolAreRefused() async throws {
        let h = try await Harness()
        defer { h.redis.stop() }
        try await Self.runToReady(h, plan: "p1", jobs: 2)
        // Keys written by a later protocol: this script leaves them alone.
        try await h.client.send("HSET", h.queue.keys.status, "protocol", "4")
        do {
            _ = try await h.queue.claim(worker: "w1", count: 1)
            Issue.record("a protocol 4 machine was served")
        } catch {
            guard case .protocolMismatch(let reason) = error else { Issue.record("\(error)"); return }
            #expect(reason.contains("protocol 4") && reason.contains("protocol 3"))
        }
        await #expect(throws: JobQueueError.self) { try await h.queue.enqueue(planJSON: planJSON("p2", [job("a")])) }
        // Keys written by protocol 1 (no version): workers are refused, a new enqueue takes them over.
        try await h.client.send("HDEL", h.queue.keys.status, "protocol")
        await #expect(throws: JobQueueError.self) { try await h.queue.claim(worker: "w1", count: 1) }
        _ = try await h.queue.enqueue(planJSON: planJSON("p2", [job("a")]))
        #expect(try await h.queue.claim(worker: "w1", count: 1).jobs.count == 1)
    }

    @Test func workersSilentForTenMinutesAreRemoved() async throws {
        let h = try await Harness()
        defer { h.redis.stop() }
        try await h.queue.register(worker: "alive", infoJSON: "{}")
        // A worker that died without unregistering, last heard of 11 minutes ago.
        let time = try await h.client.send("TIME").array ?? []
        let now = (time.first?.int ?? 0) * 1000
        try await h.client.send("HSET", h.queue.keys.workers, "dead", "{}")
        try await h.client.send("ZADD", h.queue.keys.heartbeats, String(now - 660_000), "dead")
        _ = try await h.queue.heartbeat(worker: "alive", leases: [])
        #expect(try await h.queue.workers().map(\.id) == ["alive"])
        // Both keys go when the last worker is silent that long.
        let ttl = try await h.client.send("PTTL", h.queue.keys.workers).int ?? -3
        #expect(ttl > 590_000 && ttl <= 600_000)
    }

    @Test func claimSaysWhenUpkeepIsNextDue() async throws {
        let h = try await Harness()
        defer { h.redis.stop() }
        _ = try await h.queue.enqueue(planJSON: planJSON("p1", [job("a", "noop", ["lease_ms": 60_000, "backoff_ms": 5000]), job("b")]))
        let first = try await h.queue.claimWithUpkeep(worker: "w1", count: 1)
        let lease = try #require(first.jobs.first)
        // One job is leased for 60 s: the next upkeep is that deadline.
        let next = try #require(first.nextUpkeepMilliseconds)
        #expect(next > 50_000 && next <= 60_000)
        _ = try await h.queue.fail(lease.lease, errorType: "x", message: "y", jitter: 0)
        // The retry (half of 5 s with no jitter) is due before anything else.
        let second = try await h.queue.claimWithUpkeep(worker: "w1", count: 0)
        #expect((second.nextUpkeepMilliseconds ?? -1) > 0 && (second.nextUpkeepMilliseconds ?? 0) <= 2500)
        // Nothing leased, nothing delayed: an idle worker waits for a marker alone.
        _ = try await h.queue.cancel(plan: "p1", reason: "done")
        _ = try await h.queue.enqueue(planJSON: planJSON("p2", [job("c")]))
        let third = try await h.queue.claimWithUpkeep(worker: "w1", count: 1)
        #expect(try await h.queue.complete(try #require(third.jobs.first).lease).flip == .ready)
        #expect(try await h.queue.claimWithUpkeep(worker: "w1", count: 1).nextUpkeepMilliseconds == nil)
    }
}

extension Harness {
    /// A queue for another machine on the same server.
    init(sharing other: Harness, machine: String) throws {
        redis = other.redis
        client = other.client
        queue = try JobQueue(redis: other.client, machine: machine)
    }
}
