import Foundation
import JobQueue
import RedisClient
import TestSupport
import Testing

func planJSON(_ id: String, _ jobs: [[String: Any]]) -> String {
    let data = try! JSONSerialization.data(withJSONObject: ["version": 1, "plan_id": id, "jobs": jobs], options: [.sortedKeys])
    return String(decoding: data, as: UTF8.self)
}

func sleepJob(_ id: String, ms: Int, deps: [String] = [], _ extra: [String: Any] = [:]) -> [String: Any] {
    var job: [String: Any] = ["id": id, "kind": "sleep", "payload": ["ms": ms], "depends_on": deps]
    for (key, value) in extra { job[key] = value }
    return job
}

/// A private Redis, a queue for machine `m1`, and `provision worker` pools started against it.
final class WorkerHarness: Sendable {
    let redis: TestRedis
    let queue: JobQueue

    init(appendOnly: Bool = false) async throws {
        redis = try await TestRedis(appendOnly: appendOnly)
        queue = try JobQueue(redis: try redis.client(reconnectWindow: .seconds(30)), machine: "m1")
    }

    func pool(processes: Int, concurrency: Int, drainTimeout: Int = 30) throws -> TestProcess {
        try TestProcess.provision(
            ["worker", "--machine", "m1", "--processes", String(processes), "--concurrency", String(concurrency),
             "--drain-timeout", String(drainTimeout), "--log-level", "debug", "--health-port", "0"],
            environment: ["REDIS_URL": redis.url])
    }

    func enqueue(_ plan: String) async throws {
        _ = try await queue.enqueue(planJSON: plan)
    }

    func waitForState(_ states: Set<MachineStatus.State>, timeout: Duration = .seconds(60)) async throws -> MachineStatus {
        var status = try await queue.status()
        _ = try await eventually(timeout: timeout, every: .milliseconds(100)) {
            status = try await queue.status()
            return states.contains(status.state) && status.isSettled
        }
        return status
    }

    func jobs(_ plan: String) async throws -> [String: [String: String]] {
        Dictionary(uniqueKeysWithValues: try await queue.jobs(plan: plan).compactMap { hash in hash["id"].map { ($0, hash) } })
    }

    func stop(_ pool: TestProcess) async -> Int32? {
        pool.signal(SIGTERM)
        return await pool.wait(timeout: .seconds(60))
    }

    deinit { redis.stop() }
}

@Suite("Worker processes against a real redis-server", .serialized)
struct WorkerTests {
    @Test func dagRunsInDependencyOrderWithNJobsInParallel() async throws {
        let h = try await WorkerHarness()
        let nodes = (1...8).map { "node\($0)" }
        var jobs = [sleepJob("core", ms: 100)]
        jobs += nodes.map { sleepJob($0, ms: 700, deps: ["core"]) }
        jobs.append(["id": "deps", "kind": "noop", "depends_on": nodes])
        jobs += (1...4).map { sleepJob("model\($0)", ms: 700) }
        try await h.enqueue(planJSON("dag", jobs))
        let pool = try h.pool(processes: 2, concurrency: 4)
        let status = try await h.waitForState([.ready, .failed])
        #expect(status.state == .ready, "\(pool.output)")
        #expect(status.count("succeeded") == 14 && status.count("total") == 14)
        for field in ["waiting", "ready", "active", "delayed", "failed", "dead", "retries"] { #expect(status.count(field) == 0) }

        let records = try await h.jobs("dag")
        func time(_ id: String, _ field: String) -> Int { Int(records[id]?[field] ?? "") ?? -1 }
        for node in nodes { #expect(time(node, "started_at") >= time("core", "finished_at")) }
        for node in nodes { #expect(time("deps", "started_at") >= time(node, "finished_at")) }
        // The most jobs running at one moment never exceeds 2 processes × 4 slots (how close it
        // comes is timing: bench/queue measures it).
        let intervals = records.values.compactMap { r -> (Int, Int)? in
            guard let s = r["started_at"].flatMap({ Int($0) }), let f = r["finished_at"].flatMap({ Int($0) }) else { return nil }
            return (s, f)
        }
        let peak = intervals.map { point in intervals.filter { $0.0 <= point.0 && point.0 < $0.1 }.count }.max() ?? 0
        #expect(peak <= 8, "peak concurrency \(peak)")

        // The CLI agrees and exits 0 for ready.
        let cli = try await run(provisionExecutable(), ["status", "--redis", h.redis.url, "--machine", "m1", "--wait", "--json", "--timeout", "5"])
        #expect(cli.status == 0)
        let decoded = try JSONDecoder().decode(MachineStatus.self, from: Data(cli.output.utf8))
        #expect(decoded.state == .ready && decoded.count("succeeded") == 14)

        // Workers registered themselves while running, and leave on SIGTERM with exit 0.
        let workers = try await h.queue.workers()
        #expect(workers.count == 2)
        for worker in workers {
            let info = try JSONSerialization.jsonObject(with: Data(worker.info.utf8)) as? [String: Any]
            #expect((info?["capabilities"] as? [String])?.contains("sleep") == true)
            #expect(info?["pid"] is Int && info?["host"] is String)
        }
        #expect(await h.stop(pool) == 0)
        #expect(try await h.queue.workers().isEmpty)
    }

    @Test func killNineMidJobLeaseExpiresAndAnotherWorkerFinishes() async throws {
        let h = try await WorkerHarness()
        var jobs = [sleepJob("long", ms: 3000, ["lease_ms": 1500])]
        jobs.append(["id": "after", "kind": "noop", "depends_on": ["long"]])
        jobs += (1...6).map { sleepJob("short\($0)", ms: 200, ["lease_ms": 1500]) }
        try await h.enqueue(planJSON("crash", jobs))
        let pool = try h.pool(processes: 2, concurrency: 2)
        defer { pool.terminate() }

        var owner = ""
        var token = ""
        #expect(try await eventually(timeout: .seconds(20)) {
            let record = try await h.queue.job(plan: "crash", id: "long") ?? [:]
            owner = record["owner"] ?? ""
            token = record["token"] ?? ""
            return record["state"] == "active"
        })
        // Worker ids are host-pid-random: kill that process mid-job, with no chance to clean up.
        let parts = owner.split(separator: "-")
        let pid = try #require(parts.count >= 3 ? Int32(parts[parts.count - 2]) : nil)
        #expect(childPIDs(of: pool.pid).contains(pid))
        kill(pid, SIGKILL)

        let status = try await h.waitForState([.ready, .failed], timeout: .seconds(40))
        #expect(status.state == .ready, "\(pool.output)")
        #expect(status.count("succeeded") == 8 && status.count("total") == 8)
        // Every job the killed process held (the long one, perhaps a short one) ran again, once.
        let records = try await h.jobs("crash")
        #expect(status.count("reclaimed") == records.values.filter { $0["attempts"] == "2" }.count)
        #expect(records.values.allSatisfy { $0["attempts"] == "1" || $0["attempts"] == "2" })
        let long = try #require(try await h.queue.job(plan: "crash", id: "long"))
        #expect(long["attempts"] == "2" && long["token"] != token)
        // The dead worker's lease cannot complete the job any more.
        #expect(try await h.queue.complete(Lease(plan: "crash", job: "long", token: token)).outcome == .stale)
        #expect(try await h.queue.status().count("succeeded") == 8)
        // The supervisor replaced the killed process.
        #expect(await eventually(timeout: .seconds(10)) { childPIDs(of: pool.pid).count == 2 && !childPIDs(of: pool.pid).contains(pid) })
        #expect(await h.stop(pool) == 0)
    }

    @Test func anOrphanedWorkerExitsOnItsOwnEvenWithRedisGone() async throws {
        let h = try await WorkerHarness()
        try await h.enqueue(planJSON("orphan", [sleepJob("long", ms: 60_000, ["lease_ms": 5000])]))
        let pool = try h.pool(processes: 1, concurrency: 1, drainTimeout: 1)
        defer { pool.terminate() }
        #expect(try await eventually(timeout: .seconds(20)) {
            try await h.queue.job(plan: "orphan", id: "long")?["state"] == "active"
        })
        let worker = try #require(childPIDs(of: pool.pid).first)
        // Nobody is left to stop the worker, and its Redis calls would retry for a minute.
        h.redis.server.stop()
        kill(pool.pid, SIGKILL)
        // A 1 s drain timeout and the 5 s grace: gone long before Redis's reconnect window ends.
        #expect(await eventually(timeout: .seconds(15)) { !isRunning(worker) }, "\(pool.output)")
    }

    @Test func failingJobRetriesThenDiesAndTheMachineFails() async throws {
        let h = try await WorkerHarness()
        try await h.enqueue(planJSON("failing", [
            sleepJob("broken", ms: 10, ["payload": ["ms": 10, "fail": ["message": "checksum mismatch"]], "max_attempts": 3, "backoff_ms": 100]),
            ["id": "dependent", "kind": "noop", "depends_on": ["broken"]],
            sleepJob("fine", ms: 50),
        ]))
        let pool = try h.pool(processes: 1, concurrency: 2)
        defer { pool.terminate() }
        let cli = try await run(provisionExecutable(), ["status", "--redis", h.redis.url, "--machine", "m1", "--wait", "--json", "--timeout", "30"])
        #expect(cli.status == 1, "\(cli.output)")
        let status = try await h.waitForState([.failed])
        #expect(status.state == .failed)
        #expect(status.count("dead") == 1 && status.count("failed") == 1 && status.count("succeeded") == 1 && status.count("retries") == 2)
        let broken = try #require(status.failures.first { $0.job == "broken" })
        #expect(broken.error == "checksum mismatch" && broken.errorType == "sleep_failed" && broken.attempts == 3)
        #expect(status.failures.first { $0.job == "dependent" }?.errorType == "dependency_failed")
        let record = try #require(try await h.queue.job(plan: "failing", id: "broken"))
        let retryGap = (Int(record["finished_at"] ?? "") ?? 0) - (Int(record["created_at"] ?? "") ?? 0)
        #expect(retryGap >= 150, "two backoffs of at least 50 and 100 ms")
        let text = try await run(provisionExecutable(), ["status", "--redis", h.redis.url, "--machine", "m1"])
        #expect(text.output.contains("broken: sleep_failed: checksum mismatch"))
        #expect(await h.stop(pool) == 0)
    }

    @Test func aJobPastItsTimeoutIsStoppedAndReportedAsATimeout() async throws {
        let h = try await WorkerHarness()
        try await h.enqueue(planJSON("slow", [
            sleepJob("stuck", ms: 30_000, ["timeout_ms": 1000, "max_attempts": 1]),
            sleepJob("quick", ms: 50, ["timeout_ms": 1000]),
        ]))
        let pool = try h.pool(processes: 1, concurrency: 2)
        defer { pool.terminate() }
        let started = ContinuousClock.now
        let status = try await h.waitForState([.failed], timeout: .seconds(20))
        #expect(ContinuousClock.now - started < .seconds(10), "the 30 s sleep was stopped at its 1 s timeout")
        let stuck = try #require(status.failures.first { $0.job == "stuck" })
        #expect(stuck.errorType == "timeout" && stuck.error.contains("timeout of 1000 ms"), "\(stuck)")
        #expect(status.count("succeeded") == 1 && status.count("dead") == 1)
        let record = try #require(try await h.queue.job(plan: "slow", id: "stuck"))
        let ran = (Int(record["finished_at"] ?? "") ?? 0) - (Int(record["started_at"] ?? "") ?? 0)
        #expect(ran >= 1000 && ran < 2000, "stopped within a watchdog tick of the timeout: \(ran) ms")
        #expect(await h.stop(pool) == 0)
    }

    @Test func redisRestartMidRunWorkersReconnectAndThePlanCompletes() async throws {
        let h = try await WorkerHarness(appendOnly: true)
        try await h.enqueue(planJSON("restart", (1...40).map { sleepJob("j\($0)", ms: 250) }))
        let pool = try h.pool(processes: 2, concurrency: 2)
        defer { pool.terminate() }
        #expect(try await eventually(timeout: .seconds(30)) { try await h.queue.status().count("succeeded") >= 8 })
        try await h.redis.restart(downtime: .milliseconds(1500))
        let status = try await h.waitForState([.ready, .failed], timeout: .seconds(60))
        #expect(status.state == .ready, "\(pool.output.suffix(3000))")
        #expect(status.count("succeeded") == 40 && status.count("total") == 40 && status.count("active") == 0)
        #expect(await h.stop(pool) == 0)
    }

    @Test func sigtermDrainsRunningJobsAndExitsZero() async throws {
        let h = try await WorkerHarness()
        try await h.enqueue(planJSON("drain", [sleepJob("finishes", ms: 1500), sleepJob("handed-back", ms: 20_000)]))
        let pool = try h.pool(processes: 1, concurrency: 2, drainTimeout: 3)
        defer { pool.terminate() }
        #expect(try await eventually(timeout: .seconds(20)) { try await h.queue.status().count("active") == 2 })
        let started = ContinuousClock.now
        #expect(await h.stop(pool) == 0, "\(pool.output)")
        #expect(ContinuousClock.now - started < .seconds(10))
        let records = try await h.jobs("drain")
        #expect(records["finishes"]?["state"] == "succeeded")
        // The long job was handed back for another worker, its attempt not counted.
        #expect(records["handed-back"]?["state"] == "ready" && records["handed-back"]?["attempts"] == "0")
        #expect(try await h.queue.workers().isEmpty)
    }

    @Test func pythonClientEnqueuesThroughProtocolsOnly() async throws {
        let h = try await WorkerHarness()
        let python = ProcessInfo.processInfo.environment["PROVISION_PYTHON"] ?? "python3"
        let client = packageRoot().appendingPathComponent("protocols/clients/python/provision_client.py").path
        let directory = try makeTemporaryDirectory("interop")
        defer { try? FileManager.default.removeItem(at: directory) }
        let plan = directory.appendingPathComponent("plan.json")
        let nodes = (1...5).map { "node:n\($0)" }
        var jobs: [[String: Any]] = [sleepJob("comfyui", ms: 100)]
        jobs += nodes.map { sleepJob($0, ms: 150, deps: ["comfyui"]) }
        jobs.append(["id": "python-deps", "kind": "noop", "depends_on": nodes])
        jobs += (1...3).map { sleepJob("model:m\($0).safetensors", ms: 200) }
        try planJSON("from-python", jobs).write(to: plan, atomically: true, encoding: .utf8)

        let enqueue = try await run(python, [client, "--redis", h.redis.url, "--machine", "m1", "enqueue", plan.path])
        #expect(enqueue.status == 0, "\(enqueue.output)")
        let pool = try h.pool(processes: 2, concurrency: 3)
        defer { pool.terminate() }
        let wait = try await run(python, [client, "--redis", h.redis.url, "--machine", "m1", "wait", "--timeout", "60"])
        #expect(wait.status == 0, "\(wait.output)")
        let status = try await h.queue.status()
        #expect(status.state == .ready && status.planID == "from-python" && status.count("succeeded") == 10)

        // A plan the script refuses reaches Python as the same one sentence, and writes nothing.
        let bad = directory.appendingPathComponent("bad.json")
        try planJSON("cyclic", [["id": "a", "kind": "noop", "depends_on": ["b"]], ["id": "b", "kind": "noop", "depends_on": ["a"]]])
            .write(to: bad, atomically: true, encoding: .utf8)
        let refused = try await run(python, [client, "--redis", h.redis.url, "--machine", "m1", "enqueue", bad.path])
        #expect(refused.status != 0)
        #expect(refused.output.contains("the dependencies form a cycle through a, b"), "\(refused.output)")
        #expect(try await h.queue.status().planID == "from-python")
        #expect(await h.stop(pool) == 0)
    }

    /// `--plan -` is read in chunks with the size checked as it grows: a generator that would write
    /// 256 MiB is cut off soon after the 64 MiB limit (it gets a broken pipe), not read to its end.
    @Test func cliStopsReadingAnOversizePlanOnStandardInput() async throws {
        let h = try await WorkerHarness()
        let directory = try makeTemporaryDirectory("stdin")
        defer { try? FileManager.default.removeItem(at: directory) }
        let written = directory.appendingPathComponent("written")
        let generator = """
            import sys
            chunk, total = b" " * 65536, 0
            try:
                while total < 256 << 20:
                    sys.stdout.buffer.write(chunk)
                    total += len(chunk)
                sys.stdout.flush()
            except BrokenPipeError:
                pass
            open(sys.argv[1], "w").write(str(total))
            """
        let python = ProcessInfo.processInfo.environment["PROVISION_PYTHON"] ?? "python3"
        let result = try await run("/bin/sh", [
            "-c", "\"$0\" -c \"$1\" \"$2\" 2>/dev/null | \"$3\" enqueue --redis \"$4\" --machine m1 --plan -",
            python, generator, written.path, provisionExecutable(), h.redis.url,
        ])
        #expect(result.status == 1)
        #expect(result.output == "provision: The plan on standard input is larger than the limit of 67108864 bytes.\n", "\(result.output)")
        let total = Int(try String(contentsOf: written, encoding: .utf8)) ?? -1
        #expect(total > 64 << 20 && total < 80 << 20, "the generator wrote \(total) bytes")
        #expect(try await h.queue.redis.send("DBSIZE").int == 0)
    }

    @Test func cliRefusesABadPlanWithOneSentence() async throws {
        let h = try await WorkerHarness()
        let directory = try makeTemporaryDirectory("cli")
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("plan.json")
        try planJSON("p", [["id": "a", "kind": "rm-rf"]]).write(to: file, atomically: true, encoding: .utf8)
        let result = try await run(provisionExecutable(), ["enqueue", "--redis", h.redis.url, "--machine", "m1", "--plan", file.path])
        #expect(result.status == 1)
        #expect(result.output == "provision: The plan was refused: job 'a' has an unknown kind 'rm-rf'.\n")
        #expect(try await h.queue.redis.send("DBSIZE").int == 0)
    }
}

@Suite("provision demo", .serialized)
struct DemoTests {
    @Test func theDemoEndsReady() async throws {
        let state = try makeTemporaryDirectory("demo")
        defer { try? FileManager.default.removeItem(at: state) }
        let result = try await run(provisionExecutable(), ["demo", "--state-dir", state.path, "--models-mib", "32"], timeout: .seconds(300))
        #expect(result.status == 0, "\(result.output.suffix(3000))")
        // ComfyUI, 6 nodes, python-deps, install-scripts, 5 models, verify, services.
        #expect(result.output.contains("ready: 16/16 succeeded"), "\(result.output.suffix(3000))")
        #expect(result.output.contains("comfyui-cpu: serving on http://127.0.0.1:"), "\(result.output.suffix(3000))")
        let models = state.appendingPathComponent("workspace/ComfyUI/models")
        #expect(FileManager.default.fileExists(atPath: models.appendingPathComponent("checkpoints/demo-checkpoint.safetensors").path))
        #expect(FileManager.default.fileExists(atPath: state.appendingPathComponent("workspace/ComfyUI/custom_nodes/was-node-suite-comfyui/installed.flag").path))
        // ComfyUI imports every folder in custom_nodes: nothing of provision's may be there.
        let folders = try FileManager.default.contentsOfDirectory(atPath: state.appendingPathComponent("workspace/ComfyUI/custom_nodes").path)
        #expect(!folders.contains { $0.hasPrefix(".") }, "\(folders)")

        // The private Redis stopped with the demo: the readers say how to get at its state...
        let stopped = try await run(provisionExecutable(), ["status", "--state-dir", state.path], environment: ["REDIS_URL": "", "PROVISION_REDIS_URL": ""])
        #expect(stopped.status == 3 && stopped.output.contains("--offline"), "\(stopped.output)")
        // ...and read it from a copy of its data.
        let offline = try await run(provisionExecutable(), ["status", "--state-dir", state.path, "--offline", "--jobs"], environment: ["REDIS_URL": "", "PROVISION_REDIS_URL": ""])
        #expect(offline.status == 0 && offline.output.contains("ready") && offline.output.contains("install-scripts"), "\(offline.output)")
        let events = try await run(provisionExecutable(), ["events", "--state-dir", state.path, "--offline"], environment: ["REDIS_URL": "", "PROVISION_REDIS_URL": ""])
        #expect(events.status == 0 && events.output.contains("machine.ready.complete"), "\(events.output.suffix(500))")
    }
}

/// True while `pid` runs (an exited process that nobody reaped yet counts as gone).
func isRunning(_ pid: Int32) -> Bool {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else {
        return false
    }
    let state = stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).first
    return state != "Z" && state != "X"
}
