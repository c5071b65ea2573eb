import Foundation
import JobQueue
import RedisClient
import TestSupport
import Testing

@Suite("Redis restarts and the shutdown of provision up", .serialized)
struct ShutdownTests {
    /// A Redis on a unix socket restarted while `up` (its supervisor and workers) runs a plan: writes
    /// to the dead socket must not kill anyone with SIGPIPE (exit 141); the plan ends `ready`.
    @Test func aUnixSocketRedisRestartedMidPlanEndsReady() async throws {
        let redis = try await TestRedis(appendOnly: true)
        defer { redis.stop() }
        let folder = try makeTemporaryDirectory("up-unix")
        defer { try? FileManager.default.removeItem(at: folder) }
        let jobs = (0..<40).map { sleepJob("j\($0)", ms: 150) }
        let planFile = folder.appendingPathComponent("plan.json")
        try planJSON("unix", jobs).write(to: planFile, atomically: true, encoding: .utf8)
        let up = try TestProcess.provision(
            ["up", "--redis", redis.url, "--machine", "m1", "--plan", planFile.path, "--processes", "2", "--concurrency", "2",
             "--health-port", "0", "--state-dir", folder.path])
        defer { up.terminate() }
        let queue = try JobQueue(redis: try redis.client(reconnectWindow: .seconds(30)), machine: "m1")
        #expect(try await eventually(timeout: .seconds(60)) { (try? await queue.status().count("succeeded")) ?? 0 >= 4 }, "\(up.output)")
        let before = descendantPIDs(of: up.pid)
        // Twice: once with a pause long enough that every process meets the dead socket.
        try await redis.restart(downtime: .milliseconds(1500))
        try await Task.sleep(for: .milliseconds(500))
        try await redis.restart(downtime: .milliseconds(300))
        let exit = await up.wait(timeout: .seconds(120))
        #expect(exit == 0, "exit \(String(describing: exit)): \(up.output.suffix(3000))")
        let status = try await queue.status()
        #expect(status.state == .ready && status.count("succeeded") == 40, "\(status)")
        // No worker process died on the way (a death would be logged and the process replaced).
        #expect(!up.output.contains("worker process died"), "\(up.output.suffix(3000))")
        #expect(!before.isEmpty && before.allSatisfy { !processExists($0) })
    }

    /// With SIGPIPE ignored, `events --follow | head -1` must still end once `head` is gone: the
    /// next write fails with EPIPE and the command stops.
    @Test func eventsFollowStopsWhenItsReaderIsGone() async throws {
        let redis = try await TestRedis()
        defer { redis.stop() }
        let client = try redis.client()
        let stream = try MachineKeys(prefix: "provision", machine: "m1").events
        try await client.send("XADD", stream, "*", "event", #"{"event":"first"}"#)
        let pipeline = try TestProcess(
            "/bin/sh", ["-c", "\"$0\" events --machine m1 --follow | head -1", provisionExecutable()], environment: ["REDIS_URL": redis.url])
        defer { pipeline.terminate() }
        #expect(try await eventually(timeout: .seconds(20)) { pipeline.output.contains("first") }, "\(pipeline.output)")
        try await Task.sleep(for: .milliseconds(300))
        for index in 0..<3 {
            try await client.send("XADD", stream, "*", "event", #"{"event":"more-\#(index)"}"#)
            try await Task.sleep(for: .milliseconds(300))
        }
        let exit = await pipeline.wait(timeout: .seconds(20))
        #expect(exit == 0, "\(String(describing: exit)): \(pipeline.output)")
        #expect(!pipeline.output.contains("more-"))
    }

    /// SIGTERM (a service manager stopping `up`) ends the same way, with exit 143.
    @Test func sigtermOnUpStopsInOrderWithExit143() async throws {
        let folder = try makeTemporaryDirectory("up-term")
        defer { try? FileManager.default.removeItem(at: folder) }
        let planFile = folder.appendingPathComponent("plan.json")
        try planJSON("terminated", (0..<10).map { sleepJob("j\($0)", ms: 2000) }).write(to: planFile, atomically: true, encoding: .utf8)
        let up = try TestProcess.provision(
            ["up", "--machine", "m1", "--plan", planFile.path, "--processes", "1", "--concurrency", "2", "--health-port", "0",
             "--state-dir", folder.path],
            environment: ["REDIS_URL": "", "PROVISION_REDIS_URL": ""])
        defer { up.terminate() }
        #expect(try await eventually(timeout: .seconds(60)) { up.output.contains("active") }, "\(up.output)")
        let tree = descendantPIDs(of: up.pid)
        up.signal(SIGTERM)
        let exit = await up.wait(timeout: .seconds(90))
        #expect(exit == 143, "exit \(String(describing: exit)): \(up.output.suffix(3000))")
        #expect(up.output.contains("stopped the private redis-server") && up.output.contains("interrupted by SIGTERM"), "\(up.output.suffix(2000))")
        for pid in tree { #expect(!processExists(pid), "pid \(pid) is left") }
    }

    /// Ctrl-C on `provision up` with its private Redis: SIGINT reaches the whole foreground process
    /// group; the workers drain, the private Redis stops and is waited for, the summary is printed,
    /// and `up` exits 130. No process is left, zombies included.
    @Test func ctrlCOnUpStopsWorkersThenRedisThenPrintsTheSummary() async throws {
        let folder = try makeTemporaryDirectory("up-int")
        defer { try? FileManager.default.removeItem(at: folder) }
        let jobs = (0..<20).map { sleepJob("j\($0)", ms: 2000) }
        let planFile = folder.appendingPathComponent("plan.json")
        try planJSON("interrupted", jobs).write(to: planFile, atomically: true, encoding: .utf8)
        let up = try TestProcess.provision(
            ["up", "--machine", "m1", "--plan", planFile.path, "--processes", "2", "--concurrency", "2", "--health-port", "0",
             "--state-dir", folder.path],
            environment: ["REDIS_URL": "", "PROVISION_REDIS_URL": ""], ownProcessGroup: true)
        defer { up.terminate() }
        // A job was claimed ("0 active" is printed first, before any worker claimed).
        #expect(try await eventually(timeout: .seconds(60)) { up.output.range(of: "[1-9][0-9]* active", options: .regularExpression) != nil }, "\(up.output)")
        let tree = descendantPIDs(of: up.pid)
        #expect(tree.count >= 3, "redis-server and two workers: \(tree)")
        up.signalGroup(SIGINT)
        let exit = await up.wait(timeout: .seconds(90))
        #expect(exit == 130, "exit \(String(describing: exit)): \(up.output.suffix(3000))")
        let output = up.output
        #expect(output.contains("machine m1: running"), "the summary: \(output.suffix(2000))")
        #expect(output.contains("interrupted"), "\(output.suffix(2000))")
        for pid in tree { #expect(!processExists(pid), "pid \(pid) is left: \(output.suffix(2000))") }
    }
}

/// What a worker process killed with SIGKILL left running: its commands run in process groups of
/// their own, so nothing stopped them, and the retried job ran install.py a second time beside the
/// first (found by bench/chaos).
@Suite("Commands of a killed worker process", .serialized)
struct OrphanedCommandTests {
    @Test func aKilledWorkersInstallScriptIsStoppedBeforeItsJobRunsAgain() async throws {
        let h = try await WorkerHarness()
        let folder = try makeTemporaryDirectory("orphans")
        defer { try? FileManager.default.removeItem(at: folder) }
        let workspace = folder.appendingPathComponent("ws")
        let node = workspace.appendingPathComponent("ComfyUI/custom_nodes/sleepy")
        // It says who it is and who started it, then outlives any test unless it is stopped.
        let script = "import os, time\nwith open('runs.txt', 'a') as f:\n    f.write(f'{os.getpid()} {os.getppid()}\\n')\ntime.sleep(600)\n"
        let repo = try await makeGitRepo(in: folder.appendingPathComponent("repos"), name: "sleepy", commits: [["install.py": script, ".gitignore": "runs.txt\n"]])
        let cloned = try await run("/usr/bin/git", ["clone", "--quiet", repo.url, node.path])
        #expect(cloned.status == 0, "\(cloned.output)")
        let pool = try TestProcess.provision(
            ["worker", "--machine", "m1", "--processes", "1", "--concurrency", "1", "--health-port", "0", "--workspace", workspace.path,
             "--no-services", "--drain-timeout", "2"],
            environment: ["REDIS_URL": h.redis.url])
        defer { pool.terminate() }
        try await h.enqueue(planJSON("orphans", [["id": "scripts", "kind": "install-scripts", "payload": ["nodes": [["name": "sleepy"]]], "lease_ms": 3000]]))
        let runs = node.appendingPathComponent("runs.txt")
        func started() -> [(script: Int32, worker: Int32)] {
            ((try? String(contentsOf: runs, encoding: .utf8)) ?? "").split(separator: "\n").compactMap { line in
                let pids = line.split(separator: " ").compactMap { Int32($0) }
                return pids.count == 2 ? (pids[0], pids[1]) : nil
            }
        }
        let began = try await eventually(timeout: .seconds(60)) { started().count == 1 }
        let state = try await h.queue.status()
        #expect(began, "\(pool.output) \(state)")
        let first = try #require(started().first)
        #expect(kill(first.worker, SIGKILL) == 0)
        // The supervisor sees its worker die and stops the script it left, before anyone retries the job.
        #expect(try await eventually(timeout: .seconds(30)) { !isRunning(first.script) }, "\(pool.output)")
        // The job runs again once its lease expires: one script at a time, never two.
        #expect(try await eventually(timeout: .seconds(60)) { started().count == 2 }, "\(pool.output)")
        #expect(started().filter { isRunning($0.script) }.count == 1)
        pool.terminate()
        let second = started()[1]
        _ = await pool.wait(timeout: .seconds(60))
        // A drain that ends with the script still running stops it too.
        #expect(try await eventually(timeout: .seconds(30)) { !isRunning(second.script) })
    }

    /// Running, not a zombie (an orphan's zombie waits for a reaper that may be slow in a container).
    private func isRunning(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return false }
        return !stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z")
    }
}
