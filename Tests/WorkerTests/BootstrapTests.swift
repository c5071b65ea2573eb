import Downloader
import Foundation
import JobQueue
import TestSupport
import Testing

/// The whole bootstrap with real processes on both sides: a Python client enqueues through
/// protocols/ only, two worker pools run it, one worker process is killed halfway.
@Suite("Bootstrap end to end", .serialized)
struct BootstrapTests {
    @Test func pythonEnqueuesWorkersSurviveAKillAndTheFleetHearsReadyOnce() async throws {
        let redis = try await TestRedis()
        let origin = try await TestOrigin()
        let folder = try makeTemporaryDirectory("bootstrap")
        defer { redis.stop(); origin.stop(); try? FileManager.default.removeItem(at: folder) }
        let python = ProcessInfo.processInfo.environment["PROVISION_PYTHON"] ?? "python3"
        let repos = folder.appendingPathComponent("repos")
        let wheels = folder.appendingPathComponent("wheels")
        let workspace = folder.appendingPathComponent("workspace").path
        try await makeWheels(in: wheels, ["tinyfoo==1.0"])

        // ComfyUI and 10 custom nodes as local repositories; 5 model files, one of 1 GiB.
        let core = try await makeGitRepo(in: repos, name: "ComfyUI", commits: [["main.py": "", "requirements.txt": ""]])
        var nodes: [(name: String, commit: String)] = []
        for index in 1...10 {
            let repo = try await makeGitRepo(in: repos, name: "node\(index)", commits: [["__init__.py": "", "requirements.txt": index == 3 ? "tinyfoo\n" : ""], ["v2.py": ""]])
            nodes.append(("node\(index)", repo.commits[1]))
        }
        var models: [(path: String, url: String, size: Int64, sha256: String)] = []
        let big = origin.root.appendingPathComponent("big.safetensors").path
        let made = try await run("/bin/sh", ["-c", "head -c 1073741824 /dev/urandom > '\(big)'"])
        #expect(made.status == 0)
        models.append(("checkpoints/big.safetensors", origin.url("big.safetensors"), 1 << 30, try SHA256Hasher.hashFile(at: big)))
        for (index, directory) in ["loras", "vae", "controlnet", "upscale_models"].enumerated() {
            let data = try origin.addFile("m\(index).bin", size: 3_000_000 + index * 777_777, seed: UInt64(index + 9))
            var hasher = SHA256Hasher()
            hasher.update(data)
            models.append(("\(directory)/m\(index).bin", origin.url("m\(index).bin", "throttle=2000000"), Int64(data.count), hasher.finalize()))
        }

        var jobs: [[String: Any]] = [["id": "comfyui", "kind": "comfyui", "payload": ["url": core.url]]]
        for node in nodes {
            jobs.append(["id": "node:\(node.name)", "kind": "node", "depends_on": ["comfyui"], "lease_ms": 3000, "payload": ["name": node.name, "url": "https://github.example/\(node.name)", "commit": node.commit]])
        }
        jobs.append(["id": "python-deps", "kind": "python-deps", "depends_on": nodes.map { "node:\($0.name)" }, "payload": ["nodes": nodes.map(\.name)]])
        for model in models {
            jobs.append(["id": "model:" + model.path.replacingOccurrences(of: "/", with: ":"), "kind": "download", "lease_ms": 3000, "payload": ["url": model.url, "path": model.path, "sha256": model.sha256, "size": model.size]])
        }
        jobs.append(["id": "verify", "kind": "verify", "depends_on": ["python-deps"] + models.map { "model:" + $0.path.replacingOccurrences(of: "/", with: ":") },
                     "payload": ["nodes": nodes.map { ["name": $0.name, "commit": $0.commit] }, "models": models.map { ["path": $0.path, "size": $0.size, "sha256": $0.sha256] }]])
        let planFile = folder.appendingPathComponent("plan.json")
        try JSONSerialization.data(withJSONObject: ["version": 1, "plan_id": "bootstrap", "machine_id": "m1", "jobs": jobs]).write(to: planFile)

        let subscriber = try TestProcess(python, [packageRoot().appendingPathComponent("Tests/fixtures/fleet_subscriber.py").path, redis.url, "m1", "--linger", "3"])
        defer { subscriber.terminate() }
        #expect(await eventually(timeout: .seconds(20)) { subscriber.output.contains("subscribed") })
        let client = packageRoot().appendingPathComponent("protocols/clients/python/provision_client.py").path
        let enqueue = try await run(python, [client, "--redis", redis.url, "--machine", "m1", "enqueue", planFile.path])
        try #require(enqueue.status == 0, "\(enqueue.output)")

        let arguments = ["worker", "--redis", redis.url, "--machine", "m1", "--processes", "1", "--concurrency", "4", "--health-port", "0",
                         "--workspace", workspace, "--allow-local-sources", "--allow-loopback-origins",
                         "--git-rewrite", "https://github.example/=file://\(repos.path)/", "--uv", testUV(), "--find-links", wheels.path, "--no-index"]
        let first = try TestProcess.provision(arguments)
        let second = try TestProcess.provision(arguments)
        defer { first.terminate(); second.terminate() }
        let queue = try JobQueue(redis: try redis.client(), machine: "m1")
        try #require(try await eventually(timeout: .seconds(120)) { try await queue.status().count("succeeded") >= jobs.count / 2 })
        let victim = try #require(childPIDs(of: first.pid).first)
        kill(victim, SIGKILL)

        let wait = try await run(provisionExecutable(), ["status", "--redis", redis.url, "--machine", "m1", "--wait", "--timeout", "240"], timeout: .seconds(260))
        #expect(wait.status == 0, "\(wait.output) \(first.output.suffix(2000)) \(second.output.suffix(2000))")
        let status = try await queue.status()
        #expect(status.state == .ready && status.count("succeeded") == jobs.count)

        // Exactly one machine_ready reached the subscriber that was listening before the plan.
        #expect(await subscriber.wait(timeout: .seconds(30)) == 0)
        let announcements = subscriber.output.split(separator: "\n").filter { $0.hasPrefix("{") }
        #expect(announcements.count == 1 && announcements.first?.contains("\"machine_ready\"") == true, "\(subscriber.output)")

        for model in models {
            #expect(try SHA256Hasher.hashFile(at: workspace + "/ComfyUI/models/" + model.path) == model.sha256, "\(model.path)")
        }
        for node in nodes {
            #expect(try await fixtureGit(["rev-parse", "HEAD"], in: workspace + "/ComfyUI/custom_nodes/" + node.name) == node.commit)
        }
        // The event stream holds the step sequence, with one flip.
        let events = try await run(provisionExecutable(), ["events", "--redis", redis.url, "--machine", "m1", "--format", "json"])
        #expect(events.status == 0)
        for name in ["machine.worker.connection.start", "machine.custom_nodes.install.start", "machine.custom_nodes.install.complete",
                     "machine.models.install.start", "machine.models.install.complete", "machine.models.install.progress"] {
            #expect(events.output.contains("\"\(name)\""), "\(name)")
        }
        #expect(events.output.components(separatedBy: "\"machine.ready.complete\"").count - 1 == 1)
        first.signal(SIGTERM)
        second.signal(SIGTERM)
        #expect(await first.wait(timeout: .seconds(60)) == 0)
        #expect(await second.wait(timeout: .seconds(60)) == 0)
    }
}
