import Downloader
import Foundation
import JobQueue
import TestSupport
import Testing

/// Runs `provision download … --json` and decodes its result line.
func downloadResult(_ output: String) throws -> [String: Any] {
    let line = try #require(output.split(separator: "\n").last { $0.hasPrefix("{") })
    return try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
}

@Suite("Downloads across process crashes", .serialized)
struct ResumeTests {
    static let size = 4_000_000
    static let chunk = 262_144
    static let connections = 4

    /// `download URL --output OUTPUT` with this suite's chunk size and connections, then `extra`.
    func downloadArguments(_ url: String, output: String, _ extra: [String] = []) -> [String] {
        ["download", url, "--output", output, "--allow-loopback", "--chunk-size", String(Self.chunk), "--connections", String(Self.connections)] + extra
    }

    func startThrottled(_ origin: TestOrigin, output: String) throws -> TestProcess {
        try TestProcess.provision(downloadArguments(origin.url("f.bin", "throttle=250000"), output: output, ["--json"]))
    }

    /// Bytes the origin sent, once the killed run's requests are all recorded: the origin records a
    /// request when it notices the closed connection, at its next throttled write, which under load can
    /// come after a reset and be counted against the next run.
    func settledBytes(_ origin: TestOrigin) async throws -> Int {
        var last = try await origin.stats()
        for _ in 0..<20 {
            try await Task.sleep(for: .milliseconds(750))
            let now = try await origin.stats()
            if now.bytes_sent == last.bytes_sent && now.requests.count == last.requests.count { return now.bytes_sent }
            last = now
        }
        return last.bytes_sent
    }

    /// Kills the download with SIGKILL once its state file shows progress.
    func killMidway(_ process: TestProcess, output: String) async throws {
        #expect(await eventually(timeout: .seconds(20)) {
            guard let data = FileManager.default.contents(atPath: output + ".partial.state"),
                let state = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                let written = state["written"] as? [Int]
            else { return false }
            return written.reduce(0, +) > Self.size / 4
        })
        process.signal(SIGKILL)
        _ = await process.wait(timeout: .seconds(10))
        #expect(FileManager.default.fileExists(atPath: output + ".partial"))
    }

    @Test func resumeAfterKillNineRefetchesAtMostOneChunkPerConnection() async throws {
        let origin = try await TestOrigin()
        defer { origin.stop() }
        let data = try origin.addFile("f.bin", size: Self.size)
        let folder = try makeTemporaryDirectory("resume")
        defer { try? FileManager.default.removeItem(at: folder) }
        let output = folder.appendingPathComponent("model.safetensors").path

        try await killMidway(try startThrottled(origin, output: output), output: output)
        let firstRun = try await settledBytes(origin)
        try await origin.reset()

        let second = try await run(provisionExecutable(), downloadArguments(origin.url("f.bin"), output: output, ["--json", "--sha256", sha256(data)]))
        #expect(second.status == 0, "\(second.output)")
        let result = try downloadResult(second.output)
        let resumed = try #require(result["resumed_bytes"] as? Int)
        #expect(resumed > 0)
        let secondRun = try await origin.stats().bytes_sent
        // The second run fetches what was missing, plus at most what the killed run had in flight.
        #expect(secondRun <= Self.size - resumed + 1)
        #expect(firstRun + secondRun <= Self.size + Self.connections * Self.chunk + 2, "first \(firstRun), second \(secondRun)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: output)) == data)
        #expect(!FileManager.default.fileExists(atPath: output + ".partial.state"))
    }

    /// Each connection finishes a chunk every 0.2 s and the kill comes once two chunks per connection
    /// are done, well inside the first second: the bound must hold however fast chunks complete, not
    /// only when a timed save happened to come just before the kill.
    @Test func aKillSoonAfterTheStartLosesAtMostTheChunksInFlight() async throws {
        let origin = try await TestOrigin()
        defer { origin.stop() }
        let size = 8_000_000
        let data = try origin.addFile("f.bin", size: size)
        let folder = try makeTemporaryDirectory("early-kill")
        defer { try? FileManager.default.removeItem(at: folder) }
        let output = folder.appendingPathComponent("model.safetensors").path

        let first = try TestProcess.provision(downloadArguments(origin.url("f.bin", "throttle=1310720"), output: output, ["--json"]))
        #expect(await eventually(timeout: .seconds(20), every: .milliseconds(10)) {
            (try? await origin.stats().requests.filter { $0.status == 206 && $0.bytes == Self.chunk }.count) ?? 0 >= 2 * Self.connections
        })
        first.signal(SIGKILL)
        _ = await first.wait(timeout: .seconds(10))
        #expect(FileManager.default.fileExists(atPath: output + ".partial.state"))
        let firstRun = try await settledBytes(origin)
        try await origin.reset()

        let second = try await run(provisionExecutable(), downloadArguments(origin.url("f.bin"), output: output, ["--json", "--sha256", sha256(data)]))
        #expect(second.status == 0, "\(second.output)")
        let secondRun = try await origin.stats().bytes_sent
        #expect(firstRun + secondRun <= size + Self.connections * Self.chunk + 2, "first \(firstRun), second \(secondRun)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: output)) == data)
    }

    /// The chunks' cut depends on the number of connections (`ChunkPlan.taper` and `ramp`), and
    /// the state saves both: a download killed at 8 connections and resumed at 4 keeps what it had.
    @Test func aResumeWithFewerConnectionsKeepsTheSavedChunks() async throws {
        let origin = try await TestOrigin()
        defer { origin.stop() }
        let data = try origin.addFile("f.bin", size: Self.size)
        let folder = try makeTemporaryDirectory("resume-fewer")
        defer { try? FileManager.default.removeItem(at: folder) }
        let output = folder.appendingPathComponent("model.safetensors").path
        func arguments(_ url: String, connections: Int) -> [String] {
            ["download", url, "--output", output, "--allow-loopback", "--chunk-size", String(Self.chunk), "--connections", String(connections), "--json"]
        }

        try await killMidway(try TestProcess.provision(arguments(origin.url("f.bin", "throttle=250000"), connections: 8)), output: output)
        let saved = try #require(FileManager.default.contents(atPath: output + ".partial.state"))
        let state = try #require(try JSONSerialization.jsonObject(with: saved) as? [String: Any])
        // 256 KiB chunks: a first round too small to ramp (a ramped state: ChunkSchedulerTests).
        #expect(state["taper"] as? Int == 24 && state["ramp"] as? Int == 1 && state["version"] as? Int == 4)

        let second = try await run(provisionExecutable(), arguments(origin.url("f.bin"), connections: 4) + ["--sha256", sha256(data)])
        #expect(second.status == 0, "\(second.output)")
        let result = try downloadResult(second.output)
        #expect((result["resumed_bytes"] as? Int ?? 0) > 0, "\(second.output)")
        #expect(result["restarts"] as? Int == 0)
        #expect(try Data(contentsOf: URL(fileURLWithPath: output)) == data)
    }

    @Test func aFileChangedOnTheServerBetweenRunsIsDetected() async throws {
        let origin = try await TestOrigin()
        defer { origin.stop() }
        try origin.addFile("f.bin", size: Self.size, seed: 7)
        let folder = try makeTemporaryDirectory("changed")
        defer { try? FileManager.default.removeItem(at: folder) }
        let output = folder.appendingPathComponent("model.safetensors").path
        try await killMidway(try startThrottled(origin, output: output), output: output)

        let replaced = try origin.addFile("f.bin", size: Self.size, seed: 8)
        let second = try await run(provisionExecutable(), [
            "download", origin.url("f.bin"), "--output", output, "--allow-loopback", "--chunk-size", String(Self.chunk), "--json",
        ])
        #expect(second.status == 0, "\(second.output)")
        let result = try downloadResult(second.output)
        #expect(result["restarts"] as? Int == 1 && result["resumed_bytes"] as? Int == 0)
        #expect(result["sha256"] as? String == sha256(replaced))
        #expect(try Data(contentsOf: URL(fileURLWithPath: output)) == replaced)
    }

    /// A state file this build cannot read says nothing about the server: the download starts over
    /// without claiming that the file changed there.
    @Test func aDamagedStateFileStartsOverWithoutBlamingTheServer() async throws {
        let origin = try await TestOrigin()
        defer { origin.stop() }
        let data = try origin.addFile("f.bin", size: Self.size)
        let folder = try makeTemporaryDirectory("damaged")
        defer { try? FileManager.default.removeItem(at: folder) }
        let output = folder.appendingPathComponent("model.safetensors").path
        try await killMidway(try startThrottled(origin, output: output), output: output)
        try Data(#"{"version": 2, "written": "#.utf8).write(to: URL(fileURLWithPath: output + ".partial.state"))

        let second = try await run(provisionExecutable(), downloadArguments(origin.url("f.bin"), output: output, ["--json", "--sha256", sha256(data)]))
        #expect(second.status == 0, "\(second.output)")
        let result = try downloadResult(second.output)
        #expect(result["restarts"] as? Int == 0 && result["resumed_bytes"] as? Int == 0, "\(result)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: output)) == data)
    }

    @Test func twoProcessesGivenOneDestinationFetchItOnce() async throws {
        let origin = try await TestOrigin()
        defer { origin.stop() }
        let data = try origin.addFile("f.bin", size: Self.size)
        let folder = try makeTemporaryDirectory("claimed")
        defer { try? FileManager.default.removeItem(at: folder) }
        let output = folder.appendingPathComponent("model.safetensors").path

        let first = try TestProcess.provision(
            downloadArguments(origin.url("f.bin", "throttle=500000"), output: output, ["--json", "--sha256", sha256(data)]))
        #expect(await eventually(timeout: .seconds(20)) { FileManager.default.fileExists(atPath: output + ".partial.state") })
        // Same file, same place, while the first is still at it: it must wait, then find the file done.
        let second = try await run(provisionExecutable(), downloadArguments(origin.url("f.bin"), output: output, ["--json", "--sha256", sha256(data)]))
        #expect(await first.wait(timeout: .seconds(60)) == 0, "\(first.output)")
        #expect(second.status == 0, "\(second.output)")
        #expect(second.output.contains("waiting for another download of this file"), "\(second.output)")
        let result = try downloadResult(second.output)
        #expect(result["skipped"] as? Bool == true && result["fetched_bytes"] as? Int == 0)
        // The first run's probe (one byte) and the file once.
        #expect(try await origin.stats().bytes_sent <= Self.size + 1)
        #expect(try Data(contentsOf: URL(fileURLWithPath: output)) == data)
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path) == ["model.safetensors"])
    }

    @Test func aWriteThatFailsEndsTheDownloadAtOnceAndKeepsWhatWasWritten() async throws {
        let origin = try await TestOrigin()
        defer { origin.stop() }
        let data = try origin.addFile("f.bin", size: Self.size)
        let folder = try makeTemporaryDirectory("unwritable")
        defer { try? FileManager.default.removeItem(at: folder) }
        let output = folder.appendingPathComponent("model.safetensors").path
        try await killMidway(try startThrottled(origin, output: output), output: output)
        _ = try await settledBytes(origin)
        try await origin.reset()

        // A file size limit below the unfinished chunks: every write there fails with EFBIG, a
        // real write error (the kernel's, not an injected one) that no retry can cure.
        let limited = try await run("/usr/bin/prlimit", ["--fsize=\(Self.chunk * 2)", provisionExecutable()] + downloadArguments(origin.url("f.bin"), output: output))
        #expect(limited.status == 1, "\(limited.output)")
        #expect(limited.output.contains("Could not write to \(output).partial: File too large."), "\(limited.output)")
        let requests = try await origin.stats().requests
        // The probe and one request per connection at most: nothing is fetched again.
        #expect(requests.count <= 1 + Self.connections, "\(requests.map(\.range))")
        #expect(FileManager.default.fileExists(atPath: output + ".partial.state"))

        let resumed = try await run(provisionExecutable(), downloadArguments(origin.url("f.bin"), output: output, ["--json", "--sha256", sha256(data)]))
        #expect(resumed.status == 0, "\(resumed.output)")
        #expect(try downloadResult(resumed.output)["resumed_bytes"] as? Int ?? 0 > Self.size / 4)
        #expect(try Data(contentsOf: URL(fileURLWithPath: output)) == data)
    }

    @Test func downloadJobsRunInTheWorkerPool() async throws {
        let origin = try await TestOrigin()
        let redis = try await TestRedis()
        defer { origin.stop(); redis.stop() }
        let a = try origin.addFile("a.bin", size: 700_000, seed: 1)
        let b = try origin.addFile("b.bin", size: 1_300_000, seed: 2)
        let models = try makeTemporaryDirectory("models")
        let outside = try makeTemporaryDirectory("outside")
        defer { try? FileManager.default.removeItem(at: models); try? FileManager.default.removeItem(at: outside) }
        let jobs: [[String: Any]] = [
            ["id": "model:a", "kind": "download", "payload": ["url": origin.url("a.bin"), "directory": "checkpoints", "filename": "a.safetensors", "sha256": sha256(a)]],
            ["id": "model:b", "kind": "download", "payload": ["url": origin.url("b.bin", "drop=200000&times=2"), "path": "loras/b.safetensors", "sha256": sha256(b), "size": 1_300_000]],
            ["id": "model:evil", "kind": "download", "max_attempts": 3, "payload": ["url": origin.url("a.bin"), "path": "../../\(outside.lastPathComponent)/pwned.bin"]],
        ]
        let plan = try JSONSerialization.data(withJSONObject: ["version": 1, "plan_id": "models", "jobs": jobs])
        let queue = try JobQueue(redis: try redis.client(), machine: "m1")
        _ = try await queue.enqueue(planJSON: String(decoding: plan, as: UTF8.self))
        let pool = try TestProcess.provision(
            ["worker", "--machine", "m1", "--processes", "1", "--concurrency", "3", "--models-root", models.path, "--allow-loopback-origins", "--health-port", "0"],
            environment: ["REDIS_URL": redis.url])
        defer { pool.terminate() }
        var status = try await queue.status()
        _ = try await eventually(timeout: .seconds(60)) {
            status = try await queue.status()
            return status.isSettled
        }
        #expect(status.state == .failed, "\(pool.output.suffix(2000))")
        #expect(status.count("succeeded") == 2 && status.count("dead") == 1)
        #expect(try Data(contentsOf: models.appendingPathComponent("checkpoints/a.safetensors")) == a)
        #expect(try Data(contentsOf: models.appendingPathComponent("loras/b.safetensors")) == b)
        let evil = try #require(status.failures.first { $0.job == "model:evil" })
        #expect(evil.errorType == "invalid_destination" && evil.attempts == 1)
        #expect(try FileManager.default.contentsOfDirectory(atPath: outside.path).isEmpty)
        let record = try #require(try await queue.job(plan: "models", id: "model:b"))
        let result = try JSONSerialization.jsonObject(with: Data((record["result"] ?? "{}").utf8)) as? [String: Any]
        #expect(result?["sha256"] as? String == sha256(b) && result?["ranged"] as? Bool == true)
    }
}
