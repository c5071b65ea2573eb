import Foundation
import JobQueue
import RedisClient
import TestSupport
import Testing

/// Builds plan JSON for tests.
func planJSON(_ id: String, _ jobs: [[String: Any]], machine: String? = nil) -> String {
    var plan: [String: Any] = ["version": 1, "plan_id": id, "jobs": jobs]
    if let machine { plan["machine_id"] = machine }
    let data = try! JSONSerialization.data(withJSONObject: plan, options: [.sortedKeys])
    return String(decoding: data, as: UTF8.self)
}

func job(_ id: String, _ kind: String = "noop", deps: [String] = [], _ extra: [String: Any] = [:]) -> [String: Any] {
    var job: [String: Any] = ["id": id, "kind": kind, "depends_on": deps]
    for (key, value) in extra { job[key] = value }
    return job
}

/// One test's private Redis and a queue for machine `m1` on it.
struct Harness {
    let redis: TestRedis
    let client: RedisClient
    let queue: JobQueue

    init(machine: String = "m1") async throws {
        redis = try await TestRedis()
        client = try redis.client()
        queue = try JobQueue(redis: client, machine: machine)
    }

    func dbsize() async throws -> Int64 { try await client.send("DBSIZE").int ?? -1 }

    /// Claims until one of `ids` is handed out, completing nothing.
    func claimAll(_ worker: String = "w1", count: Int = 100) async throws -> [ClaimedJob] {
        try await queue.claim(worker: worker, count: count).jobs
    }
}

@Suite("Enqueue refuses bad plans, writing nothing", .serialized)
struct EnqueueValidationTests {
    static let bad: [(String, String, String)] = [
        ("malformed", "{\"version\":1,", "the plan is not a JSON object"),
        ("not an object", "[1,2]", "the plan is not a JSON object"),
        ("unknown kind", planJSON("p", [job("a", "format-disk")]), "job 'a' has an unknown kind 'format-disk'"),
        ("cycle", planJSON("p", [job("a", deps: ["c"]), job("b", deps: ["a"]), job("c", deps: ["b"]), job("d")]), "the dependencies form a cycle through a, b, c"),
        ("missing dependency", planJSON("p", [job("a", deps: ["ghost"])]), "job 'a' depends on 'ghost', which is not in the plan"),
        ("self dependency", planJSON("p", [job("a", deps: ["a"])]), "job 'a' depends on itself"),
        ("duplicate id", planJSON("p", [job("a"), job("a")]), "job 'a' appears twice"),
        ("unknown field", planJSON("p", [job("a", "noop", ["dependson": ["x"]])]), "job 'a' has an unknown field 'dependson'"),
        ("no jobs", planJSON("p", []), "the plan has no jobs"),
        ("path-like id", planJSON("p", [job("../etc")]), "job #1 needs an id"),
        ("bad plan id", planJSON("a b", [job("a")]), "plan_id must be"),
        ("other machine", planJSON("p", [job("a")], machine: "m2"), "addressed to machine 'm2'"),
        ("wrong version", #"{"version":2,"plan_id":"p","jobs":[{"id":"a","kind":"noop"}]}"#, "version must be 1"),
        ("oversize payload", planJSON("p", [job("a", "sleep", ["payload": ["ms": 1, "blob": String(repeating: "x", count: 70_000)]])]), "more than the limit of 65536"),
        ("payload not an object", planJSON("p", [job("a", "sleep", ["payload": [1, 2]])]), "needs a payload that is a JSON object"),
        ("attempts out of range", planJSON("p", [job("a", "noop", ["max_attempts": 0])]), "max_attempts outside 1..100"),
    ]

    @Test(arguments: bad)
    func refused(_ testCase: (String, String, String)) async throws {
        let (name, plan, sentence) = testCase
        let h = try await Harness()
        defer { h.redis.stop() }
        let result: Result<JobQueue.Enqueued, JobQueueError>
        do throws(JobQueueError) {
            result = .success(try await h.queue.enqueue(planJSON: plan))
        } catch {
            result = .failure(error)
        }
        switch result {
        case .success: Issue.record("\(name): the plan was accepted")
        case .failure(.planRejected(let reason)):
            #expect(reason.contains(sentence), "\(name): \(reason)")
            #expect(JobQueueError.planRejected(reason).description.hasPrefix("The plan was refused: "))
        case .failure(let other): Issue.record("\(name): \(other)")
        }
        #expect(try await h.dbsize() == 0, "\(name): something was written")
    }

    /// Found by bench/fuzz: the refusal quoted a 50 000-character job kind whole, a 50 KB "sentence".
    @Test func aHugeValueQuotedInARefusalIsShortened() async throws {
        let h = try await Harness()
        defer { h.redis.stop() }
        let kind = String(repeating: "sleep", count: 10_000)
        do throws(JobQueueError) {
            _ = try await h.queue.enqueue(planJSON: planJSON("p", [job("a", kind)]))
            Issue.record("the plan was accepted")
        } catch {
            let text = error.description
            #expect(text.hasPrefix("The plan was refused: job 'a' has an unknown kind 'sleepsleep") && text.hasSuffix("…'."), "\(text.prefix(300))")
            #expect(text.count < 200, "\(text.count) characters")
        }
        #expect(try await h.dbsize() == 0)
    }

    @Test func tooManyJobsIsRefused() async throws {
        let h = try await Harness()
        defer { h.redis.stop() }
        var limits = JobQueue.Limits()
        limits.maxJobs = 10
        await #expect(throws: JobQueueError.planRejected("the plan has 11 jobs, more than the limit of 10")) {
            try await h.queue.enqueue(planJSON: planJSON("p", (1...11).map { job("j\($0)") }), limits: limits)
        }
        #expect(try await h.dbsize() == 0)
    }

    @Test func machineIDsAreChecked() {
        #expect(throws: JobQueueError.self) { try MachineKeys(machine: "a}b") }
        #expect(throws: JobQueueError.self) { try MachineKeys(machine: "") }
        #expect(throws: JobQueueError.self) { try MachineKeys(machine: "-flag") }
        #expect((try? MachineKeys(machine: "gpu-node_01.eu"))?.base == "provision:{gpu-node_01.eu}")
    }
}

@Suite("Queue protocol", .serialized)
struct QueueProtocolTests {
    @Test func dagRunsInDependencyOrderWithExactCounts() async throws {
        let h = try await Harness()
        defer { h.redis.stop() }
        let plan = planJSON("p1", [
            job("core"), job("n1", deps: ["core"]), job("n2", deps: ["core"]), job("deps", deps: ["n1", "n2"]),
            job("model"),
        ])
        let enqueued = try await h.queue.enqueue(planJSON: plan)
        #expect(enqueued.generation == 1 && enqueued.jobs == 5 && enqueued.ready == 2)
        var status = try await h.queue.status()
        #expect(status.state == .pending)
        #expect(status.count("waiting") == 3 && status.count("ready") == 2)

        var order: [[String]] = []
        while true {
            let jobs = try await h.claimAll()
            if jobs.isEmpty { break }
            order.append(jobs.map(\.id).sorted())
            for claimed in jobs {
                let (outcome, _) = try await h.queue.complete(claimed.lease)
                #expect(outcome == .ok)
            }
        }
        #expect(order == [["core", "model"], ["n1", "n2"], ["deps"]])
        status = try await h.queue.status()
        #expect(status.state == .ready)
        #expect(status.count("succeeded") == 5 && status.count("total") == 5)
        for field in ["waiting", "ready", "active", "delayed", "failed", "dead"] { #expect(status.count(field) == 0, "\(field)") }
    }

    @Test func expiredLeaseIsTakenOverAndTheOldTokenIsRefused() async throws {
        let h = try await Harness()
        defer { h.redis.stop() }
        _ = try await h.queue.enqueue(planJSON: planJSON("p1", [job("slow", "noop", ["lease_ms": 1000])]))
        let first = try #require(try await h.claimAll("dead-worker").first)
        #expect(first.attempt == 1)
        // The worker dies: no heartbeat. Nothing is handed out before the lease runs out.
        #expect(try await h.claimAll("w2").isEmpty)
        try await Task.sleep(for: .milliseconds(1100))
        let second = try #require(try await h.claimAll("w2").first)
        #expect(second.id == "slow" && second.attempt == 2)
        #expect(second.lease.token != first.lease.token)
        #expect(try await h.queue.heartbeat(worker: "dead-worker", leases: [first.lease]) == [first.lease])
        #expect(try await h.queue.complete(first.lease).outcome == .stale)
        #expect(try await h.queue.fail(first.lease, errorType: "x", message: "late").outcome == .stale)
        #expect(try await h.queue.heartbeat(worker: "w2", leases: [second.lease]).isEmpty)
        let (outcome, flip) = try await h.queue.complete(second.lease)
        #expect(outcome == .ok && flip == .ready)
        // A repeated completion (a reply lost to a broken connection) is recognised, not counted.
        #expect(try await h.queue.complete(second.lease).outcome == .duplicate)
        let status = try await h.queue.status()
        #expect(status.count("succeeded") == 1 && status.count("reclaimed") == 1 && status.count("retries") == 1)
    }

    @Test func heartbeatsKeepALeaseAlive() async throws {
        let h = try await Harness()
        defer { h.redis.stop() }
        _ = try await h.queue.enqueue(planJSON: planJSON("p1", [job("a", "noop", ["lease_ms": 1000])]))
        let claimed = try #require(try await h.claimAll().first)
        for _ in 0..<4 {
            try await Task.sleep(for: .milliseconds(400))
            #expect(try await h.queue.heartbeat(worker: "w1", leases: [claimed.lease]).isEmpty)
            #expect(try await h.claimAll("w2").isEmpty)
        }
        #expect(try await h.queue.complete(claimed.lease).outcome == .ok)
    }

    @Test func failuresRetryWithBackoffThenDieAndFailDependents() async throws {
        let h = try await Harness()
        defer { h.redis.stop() }
        _ = try await h.queue.enqueue(planJSON: planJSON("p1", [
            // Backoffs long enough that "not handed out before the backoff is over" holds on a loaded machine.
            job("flaky", "noop", ["max_attempts": 3, "backoff_ms": 1000, "backoff_max_ms": 5000]),
            job("child", deps: ["flaky"]), job("grandchild", deps: ["child"]), job("independent"),
        ]))
        var delays: [Int] = []
        var flip: MachineFlip?
        // The independent job is handed out alongside; keep it for the end.
        let firstBatch = try await h.claimAll()
        #expect(Set(firstBatch.map(\.id)) == ["flaky", "independent"])
        let independent = try #require(firstBatch.first { $0.id == "independent" })
        for attempt in 1...3 {
            let claimed = try #require(attempt == 1 ? firstBatch.first { $0.id == "flaky" } : try await eventuallyClaim(h, "flaky"))
            #expect(claimed.attempt == attempt)
            let result = try await h.queue.fail(claimed.lease, errorType: "http_503", message: "origin answered 503", jitter: 1)
            switch result.outcome {
            case .retry(let delay):
                delays.append(delay)
                // Not handed out again before the backoff is over.
                #expect(try await h.claimAll().isEmpty)
            case .dead: flip = result.flip
            case .stale: Issue.record("stale")
            }
        }
        #expect(delays == [1000, 2000])  // jitter 1 = the full exponential delay
        #expect(flip == .failed)
        let status = try await h.queue.status()
        #expect(status.state == .failed)
        #expect(status.count("dead") == 1 && status.count("failed") == 2 && status.count("retries") == 2)
        let reasons = Dictionary(uniqueKeysWithValues: status.failures.map { ($0.job, $0) })
        #expect(reasons["flaky"]?.errorType == "http_503" && reasons["flaky"]?.attempts == 3)
        #expect(reasons["child"]?.errorType == "dependency_failed" && reasons["child"]?.error == "dependency flaky failed")
        #expect(reasons["grandchild"]?.error == "dependency child failed")
        let child = try #require(try await h.queue.job(plan: "p1", id: "child"))
        #expect(child["state"] == "failed" && child["attempts"] == "0")
        // Work that does not depend on the dead job still runs to the end.
        #expect(try await h.queue.complete(independent.lease).flip == nil)
        let settled = try await h.queue.status()
        #expect(settled.state == .failed && settled.isSettled && settled.count("succeeded") == 1)
    }

    @Test func whenTheMachineFailsRetriesWaitingOutTheirBackoffAreCancelled() async throws {
        let h = try await Harness()
        defer { h.redis.stop() }
        _ = try await h.queue.enqueue(planJSON: planJSON("p1", [
            job("fatal", "noop", ["max_attempts": 1]), job("patient", "noop", ["max_attempts": 3, "backoff_ms": 60_000]),
            job("after-patient", deps: ["patient"]), job("late", "noop", ["max_attempts": 3]),
        ]))
        let claimed = try await h.claimAll()
        let patient = try #require(claimed.first { $0.id == "patient" })
        let fatal = try #require(claimed.first { $0.id == "fatal" })
        let late = try #require(claimed.first { $0.id == "late" })
        guard case .retry = try await h.queue.fail(patient.lease, errorType: "http_503", message: "later").outcome else {
            Issue.record("the patient job was not delayed")
            return
        }
        #expect(try await h.queue.status().count("delayed") == 1)
        #expect(try await h.queue.fail(fatal.lease, errorType: "invalid_payload", message: "bad", retryable: false).flip == .failed)
        // A job still running fails retryably after the flip: no retry in a failed plan.
        #expect(try await h.queue.fail(late.lease, errorType: "http_503", message: "later").outcome == .dead)
        let status = try await h.queue.status()
        #expect(status.state == .failed && status.count("delayed") == 0 && status.count("cancelled") == 3, "\(status)")
        #expect(try await h.queue.job(plan: "p1", id: "patient")?["state"] == "cancelled")
        // What waited on the cancelled retry does not wait forever.
        #expect(try await h.queue.job(plan: "p1", id: "after-patient")?["state"] == "cancelled")
        #expect(status.isSettled)
    }

    @Test func nonRetryableFailureDiesAtOnce() async throws {
        let h = try await Harness()
        defer { h.redis.stop() }
        _ = try await h.queue.enqueue(planJSON: planJSON("p1", [job("a", "noop", ["max_attempts": 5])]))
        let claimed = try #require(try await h.claimAll().first)
        let result = try await h.queue.fail(claimed.lease, errorType: "invalid_payload", message: "bad", retryable: false)
        #expect(result.outcome == .dead && result.flip == .failed)
    }

    @Test func releaseHandsAJobBackWithoutCountingTheAttempt() async throws {
        let h = try await Harness()
        defer { h.redis.stop() }
        _ = try await h.queue.enqueue(planJSON: planJSON("p1", [job("a")]))
        let first = try #require(try await h.claimAll().first)
        #expect(try await h.queue.release(first.lease))
        #expect(try await h.queue.release(first.lease) == false)
        let again = try #require(try await h.claimAll().first)
        #expect(again.attempt == 1 && again.lease.token != first.lease.token)
    }

    @Test func aNewPlanIsANewGenerationAndABusyMachineRefusesIt() async throws {
        let h = try await Harness()
        defer { h.redis.stop() }
        _ = try await h.queue.enqueue(planJSON: planJSON("p1", [job("a"), job("b")]))
        let old = try #require(try await h.claimAll(count: 1).first)
        await #expect(throws: JobQueueError.self) { try await h.queue.enqueue(planJSON: planJSON("p2", [job("x")])) }
        let second = try await h.queue.enqueue(planJSON: planJSON("p2", [job("x")]), replace: true)
        #expect(second.generation == 2)
        var status = try await h.queue.status()
        #expect(status.planID == "p2" && status.count("total") == 1 && status.count("ready") == 1 && status.count("active") == 0)
        // The superseded plan's lease is stale: it neither completes nor counts.
        #expect(try await h.queue.complete(old.lease).outcome == .stale)
        #expect(try await h.queue.heartbeat(worker: "w1", leases: [old.lease]) == [old.lease])
        let x = try #require(try await h.claimAll().first)
        #expect(x.id == "x" && x.generation == 2)
        #expect(try await h.queue.complete(x.lease).flip == .ready)
        status = try await h.queue.status()
        #expect(status.state == .ready && status.count("succeeded") == 1)
        // A plan id is used once per machine.
        await #expect(throws: JobQueueError.self) { try await h.queue.enqueue(planJSON: planJSON("p2", [job("x")])) }
        // The old plan's records moved to B:previous, still readable, and expire.
        #expect(try await h.queue.job(plan: "p1", id: "a")?["state"] == "active")
        let ttl = try await h.client.send("TTL", h.queue.keys.previous).int ?? -3
        #expect(ttl > 0)
    }

    @Test func cancelStopsEverythingAndRunningJobsLearnIt() async throws {
        let h = try await Harness()
        defer { h.redis.stop() }
        _ = try await h.queue.enqueue(planJSON: planJSON("p1", [job("a"), job("b", deps: ["a"]), job("c")]))
        let running = try await h.claimAll(count: 1)
        #expect(try await h.queue.cancel(plan: "p1", reason: "operator said so") == 3)
        let status = try await h.queue.status()
        #expect(status.state == .cancelled && status.count("cancelled") == 3 && status.count("active") == 0)
        #expect(try await h.queue.heartbeat(worker: "w1", leases: running.map(\.lease)).count == 1)
        #expect(try await h.queue.complete(running[0].lease).outcome == .stale)
        #expect(try await h.claimAll().isEmpty)
    }

    /// A big plan is cancelled in slices: the first call flips the plan and cancels what runs,
    /// later calls the other records; an interrupted cancel is finished by the next one.
    @Test func aBigPlanIsCancelledInSlicesAndAnInterruptedCancelIsFinished() async throws {
        let h = try await Harness()
        defer { h.redis.stop() }
        let jobs = [job("root")] + (1...30).map { job("j\($0)", deps: $0.isMultiple(of: 3) ? ["root"] : []) }
        _ = try await h.queue.enqueue(planJSON: planJSON("p1", jobs))
        let running = try await h.claimAll(count: 2)
        #expect(running.count == 2)
        #expect(try await h.queue.cancel(plan: "p1", reason: "sliced", slice: 4) == 31)
        var status = try await h.queue.status()
        #expect(status.state == .cancelled && status.count("cancelled") == 31 && status.count("ready") == 0 && status.count("waiting") == 0)
        #expect(try await h.client.send("HEXISTS", h.queue.keys.status, "cancel_cursor").int == 0)
        #expect(try await h.queue.complete(running[0].lease).outcome == .stale)

        // One slice by hand (what a client that died after it would leave), then cancel again.
        _ = try await h.queue.enqueue(planJSON: planJSON("p2", (1...10).map { job("k\($0)") }))
        let first = try await h.queue.cancelSlice(plan: "p2", reason: "first", limit: 3)
        #expect(first.cancelled == 3 && first.more)
        status = try await h.queue.status()
        #expect(status.state == .cancelled, "the plan is cancelled by the first slice")
        #expect(status.count("cancelled") == 3 && status.count("ready") == 7)
        #expect(try await h.claimAll().isEmpty, "nothing can be claimed after the first slice")
        #expect(try await h.queue.cancel(plan: "p2", reason: "second") == 7)
        status = try await h.queue.status()
        #expect(status.count("cancelled") == 10 && status.count("ready") == 0)
        #expect(try await h.queue.job(plan: "p2", id: "k9")?["error"] == "first", "the reason of the cancel that began it")
        #expect(try await h.queue.cancel(plan: "p2", reason: "again") == 0)
    }

    @Test func theMachineFlipsExactlyOnceUnderConcurrentCompletions() async throws {
        let h = try await Harness()
        defer { h.redis.stop() }
        _ = try await h.queue.enqueue(planJSON: planJSON("p1", (1...200).map { job("j\($0)") }))
        let jobs = try await h.claimAll(count: 200)
        #expect(jobs.count == 200)
        let other = try JobQueue(redis: h.redis.client(label: "other"), machine: "m1")
        let flips = await withTaskGroup(of: Int.self) { group in
            for (index, claimed) in jobs.enumerated() {
                let queue = index.isMultiple(of: 2) ? h.queue : other
                group.addTask { (try? await queue.complete(claimed.lease).flip) == .ready ? 1 : 0 }
            }
            return await group.reduce(0, +)
        }
        #expect(flips == 1)
        #expect(try await h.queue.status().count("succeeded") == 200)
    }

    @Test func aBatchCompletesLikeSingleCallsAndUnlocksDependents() async throws {
        let h = try await Harness()
        defer { h.redis.stop() }
        _ = try await h.queue.enqueue(planJSON: planJSON("p1", [job("a"), job("b"), job("c"), job("d", deps: ["a", "b"])]))
        let jobs = try await h.claimAll()
        #expect(jobs.map(\.id) == ["a", "b", "c"])
        // Tokens grow by one per job in claim order, as one HINCRBY per job would give.
        let tokens = jobs.compactMap { Int($0.lease.token) }
        #expect(tokens == [1, 2, 3])
        #expect(try await h.client.send("HGET", h.queue.keys.status, "fence").string == "3")
        let byID = Dictionary(uniqueKeysWithValues: jobs.map { ($0.id, $0) })
        let forged = Lease(plan: "p1", job: "c", token: "999")
        let (outcomes, flip) = try await h.queue.complete([
            (byID["a"]!.lease, #"{"n":1}"#), (forged, "{}"), (byID["b"]!.lease, "{}"), (byID["a"]!.lease, "{}"),
        ])
        #expect(outcomes == [.ok, .stale, .ok, .duplicate])
        #expect(flip == nil)
        var status = try await h.queue.status()
        #expect(status.count("succeeded") == 2 && status.count("active") == 1 && status.count("ready") == 1)
        #expect(try await h.queue.job(plan: "p1", id: "a")?["result"] == #"{"n":1}"#)
        #expect(try await h.client.send("ZCARD", h.queue.keys.active).int == 1)

        // d became ready with the batch; the call that finishes the plan flips it once.
        let next = try await h.claimAll()
        #expect(next.map(\.id) == ["d"])
        let last = try await h.queue.complete([(byID["c"]!.lease, "{}"), (next[0].lease, "{}")])
        #expect(last.outcomes == [.ok, .ok] && last.flip == .ready)
        status = try await h.queue.status()
        #expect(status.state == .ready && status.count("succeeded") == 4 && status.count("active") == 0)
    }

    @Test func aBatchWithAnOversizeResultWritesNothing() async throws {
        let h = try await Harness()
        defer { h.redis.stop() }
        _ = try await h.queue.enqueue(planJSON: planJSON("p1", [job("a"), job("b")]))
        let jobs = try await h.claimAll()
        let huge = "\"" + String(repeating: "x", count: 1_048_577) + "\""
        await #expect(throws: JobQueueError.self) {
            _ = try await h.queue.complete([(jobs[0].lease, "{}"), (jobs[1].lease, huge)])
        }
        let status = try await h.queue.status()
        #expect(status.count("succeeded") == 0 && status.count("active") == 2)
        let tooMany = (0...1000).map { (Lease(plan: "p1", job: "j\($0)", token: "1"), "{}") }
        await #expect(throws: JobQueueError.self) { _ = try await h.queue.complete(tooMany) }
    }

    @Test func workersRegisterWithHeartbeats() async throws {
        let h = try await Harness()
        defer { h.redis.stop() }
        try await h.queue.register(worker: "w1", infoJSON: #"{"id":"w1","pid":1}"#)
        let workers = try await h.queue.workers()
        #expect(workers.count == 1 && workers[0].id == "w1" && workers[0].heartbeat != nil)
        try await h.queue.unregister(worker: "w1")
        #expect(try await h.queue.workers().isEmpty)
    }

    func eventuallyClaim(_ h: Harness, _ id: String) async throws -> ClaimedJob? {
        var found: ClaimedJob?
        _ = try await eventually(timeout: .seconds(5), every: .milliseconds(20)) {
            found = try await h.claimAll().first { $0.id == id }
            return found != nil
        }
        return found
    }
}
