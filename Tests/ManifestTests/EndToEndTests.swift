import Foundation
import JobCore
import JobQueue
import TestSupport
import Testing

@Suite("A lockfile enqueued installs exactly what it pins", .serialized)
struct EndToEndTests {
    @Test func lockPlanEnqueueWorkersVerify() async throws {
        let folder = try makeTemporaryDirectory("e2e")
        defer { try? FileManager.default.removeItem(at: folder) }
        let origin = try await TestOrigin()
        defer { origin.stop() }
        let redis = try await TestRedis()
        defer { redis.stop() }
        let wheels = folder.appendingPathComponent("wheels")
        try await makeWheels(in: wheels, ["tinyfoo==1.0", "tinybar==1.0"])
        let comfyui = try await LocalRepository.create(at: folder.appendingPathComponent("repos/ComfyUI"), files: ["main.py": "", "requirements.txt": "tinyfoo\n"])
        try await git(["tag", "-a", "v1", "-m", "v1"], in: comfyui.path)
        let alpha = try await LocalRepository.create(at: folder.appendingPathComponent("repos/alpha"), files: ["__init__.py": "", "requirements.txt": "tinybar\n"])
        try await git(["tag", "v1"], in: alpha.path)
        let alphaV1 = try await alpha.head()
        try await alpha.commit(["__init__.py": "# newer\n"], message: "after v1")
        let beta = try await LocalRepository.create(at: folder.appendingPathComponent("repos/beta"), files: ["nodes.py": "B = 1\n"])
        try await git(["checkout", "-q", "-b", "dev"], in: beta.path)
        let betaDev = try await beta.commit(["nodes.py": "B = 2\n"], message: "dev")
        try await git(["checkout", "-q", "main"], in: beta.path)
        let vae = try origin.addFile("ae.safetensors", size: 200_000, seed: 5)
        let upscaler = try origin.addFile("up.pth", size: 70_000, seed: 6)

        let manifest = try write(json([
            "comfyui": ["url": comfyui.url, "tag": "v1"],
            "custom_nodes": [
                ["name": "alpha", "url": alpha.url, "tag": "v1", "requirements": true],
                ["name": "beta", "url": beta.url, "branch": "dev", "requirements": false, "env": ["KEY": "${PROVISION_E2E_SECRET}"]],
            ],
            "models": [
                ["url": "\(origin.base)/hf/org/flux/resolve/main/ae.safetensors", "directory": "vae", "filename": "flux/ae.safetensors"],
                ["url": origin.url("up.pth"), "directory": "upscale_models", "filename": "up.pth"],
            ],
            "python": ["packages": ["tinyfoo==1.0", "tinybar==1.0"]],
        ]), to: "manifest.json", in: folder)
        let lockPath = folder.appendingPathComponent("provision.lock").path
        let locked = try await provision(["lock", manifest, "-o", lockPath, "--allow-local-sources", "--allow-loopback"])
        #expect(locked.status == 0, "\(locked.output)")
        let planPath = folder.appendingPathComponent("plan.json").path
        let planned = try await provision(["plan", lockPath, "--machine", "m1", "--deep-verify", "-o", planPath])
        #expect(planned.status == 0, "\(planned.output)")
        let enqueued = try await provision(["enqueue", "--plan", planPath], environment: ["REDIS_URL": redis.url, "MACHINE_ID": "m1"])
        #expect(enqueued.status == 0 && enqueued.output.contains("enqueued 8 jobs"), "\(enqueued.output)")

        let workspace = folder.appendingPathComponent("ws")
        let workers = try TestProcess.provision(
            ["worker", "--machine", "m1", "--processes", "1", "--concurrency", "4", "--health-port", "0", "--workspace", workspace.path,
             "--allow-local-sources", "--allow-loopback-origins", "--uv", testUV(), "--find-links", wheels.path, "--no-index"],
            environment: ["REDIS_URL": redis.url, "PROVISION_E2E_SECRET": "s3cret", "PROVISION_EXPOSE_ENV": "PROVISION_E2E_SECRET"])
        defer { workers.terminate() }
        let queue = try JobQueue(redis: try redis.client(), machine: "m1")
        var status = try await queue.status()
        _ = try await eventually(timeout: .seconds(180), every: .milliseconds(200)) {
            status = try await queue.status()
            return status.isSettled && [.ready, .failed].contains(status.state)
        }
        #expect(status.state == .ready, "\(status.failures) \(workers.output.suffix(3000))")
        #expect(status.count("succeeded") == 8)

        // Every job's outcome, for people and as JSON that follows the schema.
        let listed = try await provision(["status", "--jobs"], environment: ["REDIS_URL": redis.url, "MACHINE_ID": "m1"])
        #expect(listed.status == 0 && listed.output.contains("install-scripts") && listed.output.contains("node:alpha"), "\(listed.output)")
        let listedJSON = try await provision(["status", "--jobs", "--json"], environment: ["REDIS_URL": redis.url, "MACHINE_ID": "m1"])
        try await validateAgainstSchema(listedJSON.output, schema: "status.schema.json")
        let entries = (try JSONValue.parse(listedJSON.output))["jobs"]?.array ?? []
        #expect(entries.count == 8 && entries.allSatisfy { $0["state"]?.string == "succeeded" }, "\(listedJSON.output)")

        // What the workers installed is what the lock pins.
        #expect(try await git(["rev-parse", "HEAD"], in: workspace.appendingPathComponent("ComfyUI/custom_nodes/alpha")) == alphaV1)
        #expect(try await git(["rev-parse", "HEAD"], in: workspace.appendingPathComponent("ComfyUI/custom_nodes/beta")) == betaDev)
        #expect(try Data(contentsOf: workspace.appendingPathComponent("ComfyUI/models/vae/flux/ae.safetensors")) == vae)
        #expect(try Data(contentsOf: workspace.appendingPathComponent("ComfyUI/models/upscale_models/up.pth")) == upscaler)
        let verified = try await provision(["verify", "--lock", lockPath, "--workspace", workspace.path, "--deep"])
        #expect(verified.status == 0, "\(verified.output)")
        #expect(verified.output.contains("ok           python tinybar==1.0: version 1.0"))

        // Drift after the fact is caught by the same command.
        try "B = 'hacked'\n".write(to: workspace.appendingPathComponent("ComfyUI/custom_nodes/beta/nodes.py"), atomically: true, encoding: .utf8)
        let drifted = try await provision(["verify", "--lock", lockPath, "--workspace", workspace.path])
        #expect(drifted.status == 1 && drifted.output.contains("MODIFIED     node beta"), "\(drifted.output)")
        workers.signal(SIGTERM)
        #expect(await workers.wait(timeout: .seconds(60)) == 0)
    }
}
