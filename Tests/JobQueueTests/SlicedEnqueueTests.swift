import Foundation
import JobQueue
import RedisClient
import TestSupport
import Testing

/// A large plan is enqueued in slices staged in `B:staging`: invisible until the last call, all or
/// nothing, and no call carries more than one slice.
@Suite("Sliced enqueue", .serialized)
struct SlicedEnqueueTests {
    static func smallSlices(_ jobs: Int = 300) -> JobQueue.Limits {
        var limits = JobQueue.Limits()
        limits.sliceJobs = jobs
        return limits
    }

    /// 2,500 jobs and a last job depending on all of them, listed first so the client must reorder.
    static func bigPlan(_ id: String, jobs n: Int = 2500) -> String {
        var jobs = [job("last", deps: (0..<n).map { "j\($0)" })]
        jobs += (0..<n).map { job("j\($0)") }
        return planJSON(id, jobs)
    }

    @Test func aPlanBiggerThanOneSliceEndsReadyWithExactCounts() async throws {
        let h = try await Harness()
        defer { h.redis.stop() }
        let slices = SliceCounter()
        let enqueued = try await h.queue.enqueue(planJSON: Self.bigPlan("big"), limits: Self.smallSlices()) { _ in await slices.add() }
        #expect(enqueued.generation == 1 && enqueued.jobs == 2501 && enqueued.ready == 2500)
        #expect(await slices.count == 9)
        var status = try await h.queue.status()
        #expect(status.state == .pending && status.count("total") == 2501 && status.count("ready") == 2500 && status.count("waiting") == 1)
        #expect(try await h.client.send("LLEN", h.queue.keys.ready).int == 2500)
        #expect(try await h.client.send("EXISTS", h.queue.keys.staging).int == 0)
        var flip: MachineFlip?
        while true {
            let claimed = try await h.queue.claim(worker: "w1", count: 1000).jobs
            if claimed.isEmpty { break }
            flip = try await h.queue.complete(claimed.map { ($0.lease, "{}") }).flip ?? flip
        }
        #expect(flip == .ready)
        status = try await h.queue.status()
        #expect(status.state == .ready && status.count("succeeded") == 2501 && status.count("ready") == 0 && status.count("waiting") == 0)
        let last = try #require(try await h.queue.job(plan: "big", id: "last"))
        #expect(last["state"] == "succeeded" && last["pending"] == "0" && last["attempts"] == "1")
        #expect(try await h.queue.job(plan: "big", id: "j7")?["dependents"] == #"["last"]"#)
        // Plan order as sent: every job after the jobs it depends on.
        let records = try await h.queue.jobs(plan: "big")
        #expect(records.count == 2501 && records.first?["id"] == "j0" && records.last?["id"] == "last")
    }

    /// A services job depending on 5,000 jobs of earlier slices: more than one call links (4,000), so
    /// the slice leaves the rest to enqueue_link; a missing one among them still refuses everything.
    @Test func aJobDependingOnManyEarlierJobsIsLinkedInSteps() async throws {
        let h = try await Harness()
        defer { h.redis.stop() }
        // Every id twice: the job waits on 5,000 distinct jobs.
        let plan = planJSON("fan-in", [job("last", deps: (0..<5000).map { "j\($0)" } + (0..<5000).map { "j\($0)" })] + (0..<5000).map { job("j\($0)") })
        let enqueued = try await h.queue.enqueue(planJSON: plan)
        #expect(enqueued.jobs == 5001 && enqueued.ready == 5000)
        #expect(try await h.queue.job(plan: "fan-in", id: "j4321")?["dependents"] == #"["last"]"#)
        #expect(try await h.queue.job(plan: "fan-in", id: "last")?["pending"] == "5000")
        let fields = try await h.client.send("HKEYS", h.queue.keys.jobs).array?.compactMap(\.string) ?? []
        #expect(!fields.contains { $0.hasPrefix("|links") || $0 == "|upload" }, "staging fields left in B:jobs")

        try await h.queue.enqueueBegin(upload: "u9", planHeadJSON: #"{"version":1,"plan_id":"p9"}"#, replace: true)
        _ = try await h.queue.enqueueSlice(upload: "u9", jobsJSON: planJSON("x", (0..<2000).map { job("a\($0)") }).jobsArray)
        _ = try await h.queue.enqueueSlice(upload: "u9", jobsJSON: planJSON("x", (2000..<4000).map { job("a\($0)") }).jobsArray)
        let needs = (0..<4000).map { "a\($0)" } + ["ghost"] + (4000..<4100).map { "a\($0)" }
        await #expect(throws: JobQueueError.planRejected("job 'z' depends on more than 4000 jobs: send it in a slice of its own")) {
            _ = try await h.queue.enqueueSlice(upload: "u9", jobsJSON: planJSON("x", [job("y"), job("z", deps: needs)]).jobsArray)
        }
        try await h.queue.enqueueBegin(upload: "u9", planHeadJSON: #"{"version":1,"plan_id":"p9"}"#, replace: true)
        _ = try await h.queue.enqueueSlice(upload: "u9", jobsJSON: planJSON("x", (0..<2000).map { job("a\($0)") }).jobsArray)
        _ = try await h.queue.enqueueSlice(upload: "u9", jobsJSON: planJSON("x", (2000..<4000).map { job("a\($0)") }).jobsArray)
        _ = try await h.queue.enqueueSlice(upload: "u9", jobsJSON: planJSON("x", (4000..<4100).map { job("a\($0)") }).jobsArray)
        await #expect(throws: JobQueueError.planRejected(
            "job 'z' depends on 'ghost', which is not in this or an earlier slice (a job must be sent after the jobs it depends on)"
        )) {
            _ = try await h.queue.enqueueSlice(upload: "u9", jobsJSON: planJSON("x", [job("z", deps: needs)]).jobsArray)
        }
        #expect(try await h.client.send("EXISTS", h.queue.keys.staging).int == 0)
        #expect(try await h.queue.status().planID == "fan-in")
    }

    @Test func aWorkerPollingDuringASlowEnqueueNeverSeesAPartialPlan() async throws {
        let h = try await Harness()
        defer { h.redis.stop() }
        // A previous plan finished: the new one must not show until its commit.
        _ = try await h.queue.enqueue(planJSON: planJSON("old", [job("o")]))
        let old = try await h.queue.claim(worker: "w1", count: 1).jobs
        _ = try await h.queue.complete(old.map { ($0.lease, "{}") })
        let observer = try JobQueue(redis: try h.redis.client(), machine: "m1")
        let seen = Observations()
        _ = try await h.queue.enqueue(planJSON: Self.bigPlan("new", jobs: 1000), limits: Self.smallSlices(100)) { staged in
            try? await Task.sleep(for: .milliseconds(30))
            let claimed = (try? await observer.claim(worker: "poller", count: 100).jobs.count) ?? -1
            let status = try? await observer.status()
            await seen.add(staged: staged, claimed: claimed, plan: status?.planID, state: status?.state)
        }
        let observations = await seen.all
        #expect(observations.count == 11)  // 1,001 jobs in slices of 100
        for o in observations {
            #expect(o.claimed == 0 && o.plan == "old" && o.state == .ready, "after \(o.staged) staged: \(o)")
        }
        #expect(try await observer.jobs(plan: "new").isEmpty == false)
        #expect(try await observer.claim(worker: "poller", count: 100).jobs.count == 100)
    }

    /// The Python reference client slices the same way, and between its slices a poller sees nothing.
    @Test func thePythonClientEnqueuesInSlices() async throws {
        let h = try await Harness()
        defer { h.redis.stop() }
        let program = #"""
            import json, sys
            sys.path.insert(0, sys.argv[2])
            import redis
            from provision_client import ProvisionQueue
            r = redis.Redis.from_url(sys.argv[1], decode_responses=True)
            q = ProvisionQueue(r, "m1")
            poller = ProvisionQueue(redis.Redis.from_url(sys.argv[1]), "m1")
            jobs = [{"id": "last", "kind": "services", "depends_on": [f"j{i}" for i in range(1000)]}]
            jobs += [{"id": f"j{i}", "kind": "noop"} for i in range(1000)]
            seen = []
            def between(staged):
                status = poller.status()
                seen.append((staged, status["state"], len(poller.call("claim", "poller", 10, 0)) - 2))
            result = q.enqueue({"version": 1, "plan_id": "py", "jobs": jobs}, slice_jobs=150, between_slices=between)
            snapshot = {"last": q.job("py", "last"), "j5": q.job("py", "j5")}
            cancelled = q.cancel("py", reason="sliced from python", slice=300)
            print(json.dumps({"result": result, "seen": seen, **snapshot, "cancelled": cancelled, "after": q.status()}))
            """#
        let client = packageRoot().appendingPathComponent("protocols/clients/python").path
        let out = try await runPython(program, [h.redis.url, client])
        #expect(out.status == 0, "\(out.output)")
        let decoded = try JSONSerialization.jsonObject(with: Data(out.output.utf8)) as? [String: Any] ?? [:]
        #expect((decoded["result"] as? [String: Int]) == ["generation": 1, "jobs": 1001, "ready": 1000])
        let seen = decoded["seen"] as? [[Any]] ?? []
        #expect(seen.count == 7 && seen.allSatisfy { ($0[1] as? String) == "idle" && ($0[2] as? Int) == 0 }, "\(seen)")
        let last = decoded["last"] as? [String: Any] ?? [:]
        #expect(last["state"] as? String == "waiting" && last["pending"] as? Int == 1000)
        #expect((decoded["j5"] as? [String: Any])?["dependents"] as? String == #"["last"]"#)
        // Then the client cancelled the plan 300 records a call (4 calls).
        #expect(decoded["cancelled"] as? Int == 1001)
        let after = decoded["after"] as? [String: Any] ?? [:]
        #expect(after["state"] as? String == "cancelled", "\(after)")
        let status = try await h.queue.status()
        #expect(status.state == .cancelled && status.count("total") == 1001 && status.count("cancelled") == 1001)
        #expect(try await h.client.send("EXISTS", h.queue.keys.ready).int == 0)
        #expect(try await h.client.send("HEXISTS", h.queue.keys.status, "cancel_cursor").int == 0)
        #expect(try await h.queue.job(plan: "py", id: "j999")?["error"] == "sliced from python")
    }

    @Test func anEnqueueInterruptedBetweenSlicesLeavesNothingVisible() async throws {
        let h = try await Harness()
        defer { h.redis.stop() }
        try await h.queue.enqueueBegin(upload: "u1", planHeadJSON: #"{"version":1,"plan_id":"cut"}"#)
        #expect(try await h.queue.enqueueSlice(upload: "u1", jobsJSON: #"[{"id":"a","kind":"noop"},{"id":"b","kind":"noop"}]"#) == 2)
        // The caller stops here. Nothing is visible, and the staging expires on its own.
        #expect(try await h.queue.status().state == .idle)
        #expect(try await h.queue.claim(worker: "w1", count: 10).jobs.isEmpty)
        #expect(try await h.client.send("EXISTS", h.queue.keys.jobs, h.queue.keys.ready, h.queue.keys.wake).int == 0)
        let ttl = try await h.client.send("PTTL", h.queue.keys.staging).int ?? -3
        #expect(ttl > 0 && ttl <= 600_000)
        // The next enqueue works and replaces the staging; the abandoned one cannot commit later.
        let enqueued = try await h.queue.enqueue(planJSON: planJSON("cut", [job("x")]))
        #expect(enqueued.jobs == 1)
        await #expect(throws: JobQueueError.self) { try await h.queue.enqueueCommit(upload: "u1") }
        #expect(try await h.queue.job(plan: "cut", id: "a") == nil)
        #expect(try await h.queue.status().count("total") == 1)
        #expect(try await h.client.send("EXISTS", h.queue.keys.staging).int == 0)
    }

    @Test func aRefusedSliceDropsTheWholeEnqueue() async throws {
        let h = try await Harness()
        defer { h.redis.stop() }
        try await h.queue.enqueueBegin(upload: "u2", planHeadJSON: #"{"version":1,"plan_id":"p"}"#)
        _ = try await h.queue.enqueueSlice(upload: "u2", jobsJSON: #"[{"id":"a","kind":"noop"}]"#)
        await #expect(throws: JobQueueError.planRejected(
            "job 'b' depends on 'c', which is not in this or an earlier slice (a job must be sent after the jobs it depends on)"
        )) {
            try await h.queue.enqueueSlice(upload: "u2", jobsJSON: #"[{"id":"b","kind":"noop","depends_on":["a","c"]}]"#)
        }
        await #expect(throws: JobQueueError.planRejected("job 'a' appears twice")) {
            try await h.queue.enqueueBegin(upload: "u3", planHeadJSON: #"{"version":1,"plan_id":"p"}"#)
            _ = try await h.queue.enqueueSlice(upload: "u3", jobsJSON: #"[{"id":"a","kind":"noop"}]"#)
            _ = try await h.queue.enqueueSlice(upload: "u3", jobsJSON: #"[{"id":"a","kind":"noop"}]"#)
        }
        #expect(try await h.dbsize() == 0)
    }

    @Test func oversizeMetaAndPayloadAreRefusedNamingTheField() async throws {
        let h = try await Harness()
        defer { h.redis.stop() }
        let blob = String(repeating: "x", count: 70_000)
        // The client checks before sending ...
        let plan = #"{"version":1,"plan_id":"p","meta":{"note":"\#(blob)"},"jobs":[{"id":"a","kind":"noop"}]}"#
        await #expect(throws: JobQueueError.planRejected("meta is 70011 bytes, more than the limit of 65536")) {
            try await h.queue.enqueue(planJSON: plan)
        }
        // ... and the script checks what reaches it anyway.
        await #expect(throws: JobQueueError.planRejected("meta is 70011 bytes, more than the limit of 65536")) {
            try await h.queue.enqueueBegin(upload: "u", planHeadJSON: #"{"version":1,"plan_id":"p","meta":{"note":"\#(blob)"}}"#)
        }
        try await h.queue.enqueueBegin(upload: "u", planHeadJSON: #"{"version":1,"plan_id":"p"}"#)
        await #expect(throws: JobQueueError.planRejected("job 'a' has a payload of 70008 bytes, more than the limit of 65536")) {
            _ = try await h.queue.enqueueSlice(upload: "u", jobsJSON: #"[{"id":"a","kind":"sleep","payload":{"b":"\#(blob)"}}]"#)
        }
        #expect(try await h.dbsize() == 0)
        // One call carries at most 2,000 jobs: a bigger plan sent in one raw call is refused.
        let raw = planJSON("raw", (0..<2001).map { job("j\($0)") })
        do {
            _ = try await h.client.eval(QueueScript.queue, keys: h.queue.keys.scriptKeys,
                                       arguments: ["enqueue", h.queue.keys.base, "m1", raw, "65536", "50000", "0", "604800"])
            Issue.record("2,001 jobs were accepted in one call")
        } catch {
            #expect(error.serverMessage?.contains("more than 2000 in one call: send it in slices") == true, "\(error)")
        }
        #expect(try await h.dbsize() == 0)
    }
}

extension String {
    /// The `jobs` array of a plan's JSON text, as the JSON of a slice.
    var jobsArray: String {
        let plan = (try? JSONSerialization.jsonObject(with: Data(utf8))) as? [String: Any] ?? [:]
        let data = (try? JSONSerialization.data(withJSONObject: plan["jobs"] ?? [])) ?? Data("[]".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}

actor SliceCounter {
    var count = 0
    func add() { count += 1 }
}

actor Observations {
    struct Observation: Sendable {
        let staged: Int
        let claimed: Int
        let plan: String?
        let state: MachineStatus.State?
    }
    var all: [Observation] = []
    func add(staged: Int, claimed: Int, plan: String?, state: MachineStatus.State?) {
        all.append(Observation(staged: staged, claimed: claimed, plan: plan, state: state))
    }
}
