import Downloader
import Foundation
import JobQueue
import ComponentSpec
import Planning
import Verification
import WorkflowAnalysis
import RedisClient
import TestSupport
import Testing

/// A lock made from local repositories and loopback models, and a workspace installed to match it.
final class InstalledWorkspace: Sendable {
    let fixture: LockFixture
    let workspace: URL
    let lock: Lockfile
    let lockPath: String

    init() async throws {
        fixture = try await LockFixture()
        let f = fixture
        let manifest = try write(json([
            "comfyui": ["url": f.comfyui.url, "tag": "v0.3.0"],
            "custom_nodes": [["name": "alpha", "url": f.alpha.url, "tag": "v1"], ["name": "beta", "url": f.beta.url, "branch": "dev"]],
            "models": [
                ["url": f.hfURL, "directory": "vae", "filename": "flux/ae.safetensors"],
                ["url": f.plainURL, "directory": "upscale_models", "filename": "4x.pth"],
            ],
        ]), to: "verify-manifest.json", in: f.folder)
        lock = try await Locker(options: f.options(), analyzer: WorkflowAnalyzer(registry: NodeRegistry())).lock([try SpecDocument.load(path: manifest)]).lock
        lockPath = f.folder.appendingPathComponent("provision.lock").path
        try lock.encoded().write(to: URL(fileURLWithPath: lockPath))
        workspace = f.folder.appendingPathComponent("workspace")
        let comfy = workspace.appendingPathComponent("ComfyUI")
        try await clone(f.comfyui.url, into: comfy, at: try #require(lock.comfyui?.commit))
        for node in lock.customNodes {
            try await clone(node.url, into: comfy.appendingPathComponent("custom_nodes/\(node.name)"), at: node.commit)
        }
        try place(f.hfData, at: "vae/flux/ae.safetensors")
        try place(f.plainData, at: "upscale_models/4x.pth")
    }

    func clone(_ url: String, into directory: URL, at commit: String) async throws {
        try FileManager.default.createDirectory(at: directory.deletingLastPathComponent(), withIntermediateDirectories: true)
        try await git(["clone", "-q", url, directory.path])
        try await git(["checkout", "-q", "--detach", commit], in: directory)
    }

    func model(_ path: String) -> URL { workspace.appendingPathComponent("ComfyUI/models/\(path)") }

    func place(_ data: Data, at path: String) throws {
        let url = model(path)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try data.write(to: url)
    }

    func verify(_ extra: [String] = []) async throws -> (status: Int32, output: String) {
        try await provision(["verify", "--lock", lockPath, "--workspace", workspace.path] + extra)
    }
}

@Suite("Verify a machine against a lock", .serialized)
struct VerifyTests {
    @Test func aMatchingWorkspaceVerifiesAndEachKindOfDriftIsCaught() async throws {
        let w = try await InstalledWorkspace()
        let good = try await w.verify()
        #expect(good.status == 0, "\(good.output)")
        #expect(good.output.contains("verified: all 5 checks match"))
        // Untracked files (the .env a node installer writes, caches) are not local changes.
        try "TOKEN=x\n".write(to: w.workspace.appendingPathComponent("ComfyUI/custom_nodes/alpha/.env"), atomically: true, encoding: .utf8)
        #expect(try await w.verify().status == 0)

        // A wrong commit, a modified node file, a missing model, a truncated model.
        let alpha = w.workspace.appendingPathComponent("ComfyUI/custom_nodes/alpha")
        try await git(["checkout", "-q", "--detach", w.fixture.alphaHead], in: alpha)
        try "B = 'edited'\n".write(to: w.workspace.appendingPathComponent("ComfyUI/custom_nodes/beta/nodes.py"), atomically: true, encoding: .utf8)
        try FileManager.default.removeItem(at: w.model("upscale_models/4x.pth"))
        try w.fixture.hfData.prefix(1000).write(to: w.model("vae/flux/ae.safetensors"))

        let bad = try await w.verify(["--json"])
        #expect(bad.status == 1)
        let report = try JSONDecoder().decode(VerificationReport.self, from: Data(bad.output.utf8))
        let status = Dictionary(uniqueKeysWithValues: report.checks.map { ("\($0.kind) \($0.name)", $0.status) })
        #expect(status == [
            "comfyui ComfyUI": "ok", "node alpha": "wrong_commit", "node beta": "modified",
            "model upscale_models/4x.pth": "missing", "model vae/flux/ae.safetensors": "wrong_size",
        ])
        #expect(report.ok == false && report.failed == 4)

        let text = try await w.verify()
        #expect(text.status == 1)
        #expect(text.output.contains("WRONG_COMMIT node alpha: at \(w.fixture.alphaHead.prefix(12)), the lock says \(w.fixture.alphaV1.prefix(12))"))
        #expect(text.output.contains("MODIFIED     node beta: at \(w.fixture.betaDev.prefix(12)) but 1 tracked file changed (nodes.py)"))
        #expect(text.output.contains("MISSING      model upscale_models/4x.pth"))
        #expect(text.output.contains("WRONG_SIZE   model vae/flux/ae.safetensors: 1000 bytes, the lock says 300000 (truncated or partial)"))
        #expect(text.output.contains("NOT verified: 4 of 5 checks differ"))
    }

    @Test func aWrongHashOfTheRightSizeIsCaughtOnlyWithDeep() async throws {
        let w = try await InstalledWorkspace()
        var corrupted = w.fixture.plainData
        corrupted[corrupted.count / 2] ^= 0xFF
        try corrupted.write(to: w.model("upscale_models/4x.pth"))
        #expect(try await w.verify().status == 0)
        let deep = try await w.verify(["--deep"])
        #expect(deep.status == 1)
        #expect(deep.output.contains("WRONG_HASH   model upscale_models/4x.pth: SHA-256 \(sha256Hex(corrupted)), the lock says \(sha256Hex(w.fixture.plainData))"), "\(deep.output)")
        #expect(deep.output.contains("ok           model vae/flux/ae.safetensors: 300000 bytes, SHA-256 matches"))
    }

    @Test func pythonPackagesAreCheckedInTheWorkspaceEnvironment() async throws {
        let python = try #require(ProcessInfo.processInfo.environment["PROVISION_PYTHON"], "scripts/test sets PROVISION_PYTHON")
        let folder = try makeTemporaryDirectory("py")
        defer { try? FileManager.default.removeItem(at: folder) }
        let target = VerificationTarget(pythonPackages: ["jsonschema>=3", "redis", "jsonschema==0.0.1", "surely-not-installed-package-xyz"])
        let report = await Verifier(workspace: folder.path, python: python).verify(target)
        let status = Dictionary(uniqueKeysWithValues: report.checks.map { ($0.name, $0.status) })
        #expect(status["jsonschema>=3"] == "ok" && status["redis"] == "ok", "\(report.checks)")
        #expect(status["jsonschema==0.0.1"] == "unsatisfied" && status["surely-not-installed-package-xyz"] == "missing")
        #expect(status["pip check"] != nil && report.ok == false)
        // No interpreter in the workspace and none named: reported, not guessed.
        let none = await Verifier(workspace: folder.path).verify(VerificationTarget(pythonPackages: ["redis"]))
        #expect(none.checks.map(\.status) == ["missing"] && none.checks.first?.detail?.contains("venv/bin/python does not exist") == true)
    }

    @Test func theVerifyJobRunsAtTheEndOfAPlanOnAWorker() async throws {
        let w = try await InstalledWorkspace()
        let redis = try await TestRedis()
        defer { redis.stop() }
        let queue = try JobQueue(redis: try redis.client(), machine: "m1")
        // The plan's verify job, alone (the install executors belong to other jobs).
        func verifyOnlyPlan(_ id: String) throws -> String {
            let plan = PlanBuilder(planID: id).plan(for: w.lock)
            let jobs = try #require(plan["jobs"]?.array)
            var job = try #require(jobs.last?.object)
            #expect(job["kind"]?.string == "verify")
            job["depends_on"] = nil
            return PlanBuilder.encode(.object(["version": .number(1), "plan_id": .string(id), "jobs": .array([.object(job)])]))
        }
        let pool = try TestProcess.provision(
            ["worker", "--machine", "m1", "--processes", "1", "--concurrency", "2", "--workspace", w.workspace.path, "--health-port", "0"],
            environment: ["REDIS_URL": redis.url])
        defer { pool.terminate() }
        func settle() async throws -> MachineStatus {
            var status = try await queue.status()
            _ = try await eventually(timeout: .seconds(60), every: .milliseconds(100)) {
                status = try await queue.status()
                return [.ready, .failed].contains(status.state) && status.isSettled
            }
            return status
        }
        _ = try await queue.enqueue(planJSON: try verifyOnlyPlan("verify-good"))
        let good = try await settle()
        #expect(good.state == .ready, "\(pool.output)")

        try FileManager.default.removeItem(at: w.model("upscale_models/4x.pth"))
        _ = try await queue.enqueue(planJSON: try verifyOnlyPlan("verify-bad"))
        let bad = try await settle()
        #expect(bad.state == .failed)
        let failure = try #require(bad.failures.first)
        #expect(failure.errorType == "verify_mismatch" && failure.attempts == 1)
        #expect(failure.error.hasPrefix("1 of 5 checks failed: model upscale_models/4x.pth: ") && failure.error.contains("does not exist"), "\(failure.error)")
        pool.signal(SIGTERM)
        #expect(await pool.wait(timeout: .seconds(60)) == 0)
    }

    /// Found by bench/chaos: a worker with `--models-root` downloads there, but its verify job looked
    /// in `<workspace>/ComfyUI/models` and failed every plan with "does not exist".
    @Test func theVerifyJobLooksForModelsUnderTheWorkersModelsRoot() async throws {
        let w = try await InstalledWorkspace()
        let modelsRoot = w.fixture.folder.appendingPathComponent("models-elsewhere")
        try FileManager.default.moveItem(at: w.workspace.appendingPathComponent("ComfyUI/models"), to: modelsRoot)
        let redis = try await TestRedis()
        defer { redis.stop() }
        let queue = try JobQueue(redis: try redis.client(), machine: "m1")
        let plan = PlanBuilder(planID: "verify-models-root").plan(for: w.lock)
        let jobs = try #require(plan["jobs"]?.array)
        var job = try #require(jobs.last?.object)
        #expect(job["kind"]?.string == "verify")
        job["depends_on"] = nil
        let pool = try TestProcess.provision(
            ["worker", "--machine", "m1", "--processes", "1", "--concurrency", "1", "--workspace", w.workspace.path,
             "--models-root", modelsRoot.path, "--health-port", "0"],
            environment: ["REDIS_URL": redis.url])
        defer { pool.terminate() }
        _ = try await queue.enqueue(planJSON: PlanBuilder.encode(.object(["version": .number(1), "plan_id": .string("verify-models-root"), "jobs": .array([.object(job)])])))
        var status = try await queue.status()
        _ = try await eventually(timeout: .seconds(60), every: .milliseconds(100)) {
            status = try await queue.status()
            return [.ready, .failed].contains(status.state) && status.isSettled
        }
        #expect(status.state == .ready, "\(status.failures.map(\.error)) \(pool.output)")
    }
}
