import Foundation
import JobCore
import ComponentSpec
import Export
import Planning
import TestSupport
import Testing

@Suite("Plans and exports from locks and manifests", .serialized)
struct PlanExportTests {
    /// A lock written by hand: ComfyUI, three nodes (two ordered), two models.
    func sampleLock() -> Lockfile {
        Lockfile(
            comfyui: LockedRepository(url: "https://github.com/comfyanonymous/ComfyUI", commit: String(repeating: "c", count: 40), tag: "v0.3.40"),
            customNodes: [
                LockedNode(name: "zeta", url: "https://github.com/z/zeta", commit: String(repeating: "1", count: 40)),
                LockedNode(name: "first", url: "https://github.com/a/first", commit: String(repeating: "2", count: 40), requirements: true, env: ["KEY": "${SECRET}"], installOrder: 1),
                LockedNode(name: "second", url: "https://github.com/a/second", commit: String(repeating: "3", count: 40), recursive: true, requirements: false, installOrder: 2),
            ],
            models: [
                LockedModel(url: "https://huggingface.co/o/r/resolve/\(String(repeating: "d", count: 40))/m.safetensors", directory: "checkpoints", filename: "SDXL/m.safetensors", sha256: String(repeating: "e", count: 64), size: 10),
                LockedModel(url: "https://example.com/v.pt", directory: "vae", filename: "v.pt", sha256: String(repeating: "f", count: 64), size: 20),
            ],
            python: PythonRequirements(packages: ["insightface==0.7.3"]))
    }

    @Test func aLockBecomesTheInstallDAG() async throws {
        let plan = PlanBuilder(machineID: "gpu-1").plan(for: sampleLock())
        let text = PlanBuilder.encode(plan)
        try await validateAgainstSchema(text, schema: "plan.schema.json", payloads: true)
        let jobs = try #require(plan["jobs"]?.array)
        let byID = Dictionary(uniqueKeysWithValues: jobs.compactMap { job in job["id"]?.string.map { ($0, job) } })
        func deps(_ id: String) -> Set<String> { Set(byID[id]?["depends_on"]?.array?.compactMap(\.string) ?? []) }
        #expect(jobs.map { $0["id"]?.string ?? "" } == [
            "comfyui", "model:checkpoints_SDXL_m.safetensors", "model:vae_v.pt", "node:first", "node:second", "node:zeta", "python-deps", "install-scripts", "verify",
        ])
        #expect(deps("comfyui").isEmpty && deps("model:vae_v.pt").isEmpty)
        // Ordered nodes one group after another; unordered ones right after ComfyUI.
        #expect(deps("node:first") == ["comfyui"] && deps("node:second") == ["node:first"] && deps("node:zeta") == ["comfyui"])
        #expect(deps("python-deps") == ["comfyui", "node:first", "node:second", "node:zeta"])
        #expect(deps("verify") == Set(byID.keys).subtracting(["verify"]))
        #expect(byID["python-deps"]?["payload"]?["nodes"]?.array?.compactMap(\.string) == ["first", "zeta"])
        #expect(byID["node:first"]?["payload"]?["env"]?["KEY"]?.string == "${SECRET}")
        #expect(byID["node:second"]?["payload"]?["recursive"]?.bool == true)
        let verify = try #require(byID["verify"]?["payload"])
        #expect(verify["nodes"]?.array?.count == 3 && verify["models"]?.array?.count == 2)
        #expect(verify["comfyui"]?["commit"]?.string == String(repeating: "c", count: 40))
        #expect(verify["python_packages"]?.array?.compactMap(\.string) == ["insightface==0.7.3"])
        #expect(plan["machine_id"]?.string == "gpu-1" && plan["plan_id"]?.string?.hasPrefix("lock-") == true)
        // Deterministic: the same lock gives the same plan.
        #expect(PlanBuilder.encode(PlanBuilder(machineID: "gpu-1").plan(for: sampleLock())) == text)
    }

    @Test func configNodesJSONBecomesAPlanThroughTheCLI() async throws {
        // The old system's file is a manifest as it stands.
        try await validateAgainstSchema(try String(contentsOfFile: fixture("config_nodes.json"), encoding: .utf8), schema: "manifest.schema.json")
        let result = try await provision(["plan", fixture("config_nodes.json"), "--machine", "gpu-7", "--plan-id", "from-config"])
        #expect(result.status == 0, "\(result.output)")
        try await validateAgainstSchema(result.output, schema: "plan.schema.json", payloads: true)
        let plan = try JSONValue.parse(result.output)
        let jobs = try #require(plan["jobs"]?.array)
        #expect(jobs.filter { $0["kind"]?.string == "node" }.count == 42)
        let vhs = try #require(jobs.first { $0["id"]?.string == "node:ComfyUI-VideoHelperSuite" })
        #expect(vhs["payload"]?["commit"]?.string == "0d44f4b46dd05303664a1aa26e87534d5eef3ac8")
        let llava = try #require(jobs.first { $0["id"]?.string == "node:ComfyUI-LLaVA-OneVision" })
        #expect(llava["payload"]?["branch"]?.string == "add-video-dependencies")
        // Only the node with a full commit can be verified without a lock.
        #expect(jobs.last?["payload"]?["nodes"]?.array?.count == 1)
        let workflow = try await provision(["plan", fixture("workflow-api.json")])
        #expect(workflow.status == 1 && workflow.output.contains("is a workflow: pin it first with `provision lock"))
    }

    @Test func theExportedScriptInstallsWhatTheLockPinsAndVerifies() async throws {
        let f = try await LockFixture()
        // Nodes without requirements (no network for pip), a node whose env tries to inject commands.
        let marker = f.folder.appendingPathComponent("pwned").path
        let manifest = try write(json([
            "comfyui": ["url": f.comfyui.url, "tag": "v0.3.0"],
            "custom_nodes": [
                ["name": "beta", "url": f.beta.url, "branch": "dev", "requirements": false,
                 "env": ["EVIL": "$(touch \(marker))'\"`touch \(marker)`", "FROM_ENV": "user=${PROVISION_TEST_USER}!"]],
                ["name": "gamma", "url": f.gamma.url, "commit": f.gammaFirst, "requirements": false],
            ],
            "models": [
                ["url": f.hfURL, "directory": "vae", "filename": "flux/ae.safetensors"],
                ["url": f.plainURL, "directory": "upscale_models", "filename": "4x.pth"],
            ],
        ]), to: "export-manifest.json", in: f.folder)
        let lockPath = f.folder.appendingPathComponent("export.lock").path
        let locked = try await provision(["lock", manifest, "-o", lockPath, "--allow-local-sources", "--allow-loopback"])
        #expect(locked.status == 0, "\(locked.output)")
        let scriptPath = f.folder.appendingPathComponent("install.sh").path
        let exported = try await provision(["export", "--lock", lockPath, "--format", "script", "-o", scriptPath])
        #expect(exported.status == 0, "\(exported.output)")

        let workspace = f.folder.appendingPathComponent("ws")
        let environment = ["WORKSPACE": workspace.path, "PROVISION_TEST_USER": "ada", "GIT_ALLOW_PROTOCOL": "file"]
        let first = try await run("/bin/bash", [scriptPath], environment: environment, timeout: .seconds(300))
        #expect(first.status == 0, "\(first.output)")
        #expect(first.output.contains("fetched \(workspace.path)/ComfyUI/models/vae/flux/ae.safetensors"))
        let env = try String(contentsOfFile: workspace.appendingPathComponent("ComfyUI/custom_nodes/beta/.env").path, encoding: .utf8)
        #expect(env == "EVIL=$(touch \(marker))'\"`touch \(marker)`\nFROM_ENV=user=ada!\n")
        #expect(!FileManager.default.fileExists(atPath: marker))
        // Running it again changes nothing and fetches nothing.
        try await f.origin.reset()
        let second = try await run("/bin/bash", [scriptPath], environment: environment, timeout: .seconds(300))
        #expect(second.status == 0 && !second.output.contains("fetched") && !second.output.contains("cloned"), "\(second.output)")
        #expect(try await f.origin.stats().requests.isEmpty)
        // The machine the script made passes a deep verify of the same lock.
        let verified = try await provision(["verify", "--lock", lockPath, "--workspace", workspace.path, "--deep"])
        #expect(verified.status == 0, "\(verified.output)")
    }

    @Test func dockerfileAndDependencyReport() async throws {
        var lock = sampleLock()
        lock.workflows = [LockedWorkflow(name: "portrait.json", sha256: String(repeating: "a", count: 64), format: .ui,
                                         nodes: ["GetNode", "Mystery"], models: ["checkpoints/SDXL/m.safetensors", "loras/missing.safetensors"],
                                         unresolved: ["Mystery"])]
        let exporter = Exporter(lock: lock)
        let dockerfile = exporter.export(.dockerfile)
        #expect(dockerfile.contains("ADD --checksum=sha256:\(String(repeating: "e", count: 64)) [\"https://huggingface.co/o/r/resolve/\(String(repeating: "d", count: 40))/m.safetensors\", \"/workspace/ComfyUI/models/checkpoints/SDXL/m.safetensors\"]"))
        #expect(dockerfile.contains("git -C '/workspace/ComfyUI/custom_nodes/first' fetch -q --depth 1 origin \(String(repeating: "2", count: 40))"))
        #expect(dockerfile.contains("submodule update -q --init --recursive"))
        #expect(dockerfile.contains("# first reads KEY from its .env: provide them at run time, not in the image."))
        #expect(!dockerfile.contains("${SECRET}"))
        // first (order 1) is installed before second (order 2), both before zeta (unordered).
        let order = ["custom_nodes/first'", "custom_nodes/second'", "custom_nodes/zeta'"].map { dockerfile.range(of: $0)?.lowerBound }
        #expect(order.allSatisfy { $0 != nil } && order[0]! < order[1]! && order[1]! < order[2]!)

        let report = try JSONValue.parse(exporter.export(.dependenciesJSON))
        #expect(report["uniqueNodes"]?.array?.compactMap(\.string) == ["GetNode", "Mystery"])
        #expect(report["missingFromRegistry"]?["nodes"]?.array?.compactMap(\.string) == ["Mystery"])
        #expect(report["missingFromRegistry"]?["models"]?.array?.compactMap(\.string) == ["loras/missing.safetensors"])
        #expect(report["workflows"]?.array?.first?["name"]?.string == "portrait.json")
        let model = try #require(report["verificationStatus"]?["models"]?["checkpoints/SDXL/m.safetensors"])
        #expect(model["verified"]?.bool == true && model["fileSize"]?.int == 10 && model["commit"]?.string == String(repeating: "d", count: 40))
        #expect(report["verificationStatus"]?["nodes"]?["zeta"]?["version"]?.string == String(repeating: "1", count: 40))
        #expect(report["verificationStatus"]?["nodes"]?["Mystery"]?["verified"]?.bool == false)
    }

    @Test func exportRefusesAMalformedLock() async throws {
        let folder = try makeTemporaryDirectory("export")
        defer { try? FileManager.default.removeItem(at: folder) }
        let bad = try write(#"{"lock_version": 1, "custom_nodes": [{"name": "a", "url": "https://x/y", "commit": "main"}]}"#, to: "bad.lock", in: folder)
        let result = try await provision(["export", "--lock", bad, "--format", "script"])
        #expect(result.status == 1 && result.output == "provision: The lockfile \(bad) pins a to 'main', which is not a full 40-digit commit.\n")
        let shape = try write(#"{"lock_version": 1, "models": [{"url": "https://x/y"}]}"#, to: "shape.lock", in: folder)
        let second = try await provision(["verify", "--lock", shape, "--workspace", folder.path])
        #expect(second.status == 1 && second.output == "provision: The lockfile \(shape) is malformed: models[0] has no directory.\n", "\(second.output)")
        let format = try await provision(["export", "--lock", bad, "--format", "zip"])
        #expect(format.status != 0 && format.output.contains("--format must be one of script, dockerfile, dependencies-json."))
    }
}
