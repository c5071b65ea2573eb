import Foundation
import JobQueue
import TestSupport
import Testing

@Suite("Node jobs through worker processes", .serialized)
struct NodeWorkerTests {
    func pool(_ redis: TestRedis, _ h: NodeHarness, processes: Int, concurrency: Int, path: String? = nil) throws -> TestProcess {
        var environment = ["REDIS_URL": redis.url]
        if let path { environment["PATH"] = path }
        return try TestProcess.provision(
            ["worker", "--machine", "m1", "--processes", String(processes), "--concurrency", String(concurrency),
             "--workspace", h.configuration.workspace.root, "--allow-local-sources", "--git-rewrite", "https://github.example/=file://\(h.repos.path)/",
             "--uv", testUV(), "--find-links", h.wheels.path, "--no-index", "--log-level", "debug", "--health-port", "0"],
            environment: environment)
    }

    func plan(_ id: String, _ jobs: [[String: Any]]) -> String {
        String(decoding: try! JSONSerialization.data(withJSONObject: ["version": 1, "plan_id": id, "jobs": jobs]), as: UTF8.self)
    }

    func settle(_ queue: JobQueue, timeout: Duration = .seconds(120)) async throws -> MachineStatus {
        var status = try await queue.status()
        _ = try await eventually(timeout: timeout, every: .milliseconds(100)) {
            status = try await queue.status()
            return status.isSettled
        }
        return status
    }

    @Test func comfyUINodesAndRequirementsInstallAsOneDAG() async throws {
        let h = try NodeHarness()
        let redis = try await TestRedis()
        defer { h.cleanup(); redis.stop() }
        try await makeWheels(in: h.wheels, ["tinyfoo==1.0", "tinybar==1.0;tinyfoo>=1"])
        _ = try await makeGitRepo(in: h.repos, name: "ComfyUI", commits: [["main.py": "", "requirements.txt": "tinyfoo\n"]])
        var nodeJobs: [[String: Any]] = []
        for index in 1...6 {
            _ = try await makeGitRepo(in: h.repos, name: "node\(index)", commits: [["__init__.py": "", "requirements.txt": index.isMultiple(of: 2) ? "tinybar\n" : "tinyfoo==1.0\n"]])
            nodeJobs.append(["id": "node:node\(index)", "kind": "node", "depends_on": ["comfyui"], "payload": ["name": "node\(index)", "url": "https://github.example/node\(index)"]])
        }
        let jobs: [[String: Any]] = [["id": "comfyui", "kind": "comfyui", "payload": ["url": "https://github.example/ComfyUI"]]] + nodeJobs
            + [["id": "python-deps", "kind": "python-deps", "depends_on": nodeJobs.compactMap { $0["id"] as? String }, "payload": ["nodes": (1...6).map { "node\($0)" }]]]
        let queue = try JobQueue(redis: try redis.client(), machine: "m1")
        _ = try await queue.enqueue(planJSON: plan("dag", jobs))
        let workers = try pool(redis, h, processes: 2, concurrency: 3)
        defer { workers.terminate() }
        let status = try await settle(queue)
        #expect(status.state == .ready, "\(status.failures) \(workers.output.suffix(3000))")
        #expect(status.count("succeeded") == 8)
        for index in 1...6 { #expect(FileManager.default.fileExists(atPath: h.configuration.workspace.node("node\(index)") + "/__init__.py")) }
        let installed = try await h.installed()
        #expect(installed["tinyfoo"] == "1.0" && installed["tinybar"] == "1.0")
        let records = try await queue.jobs(plan: "dag")
        let comfy = try #require(records.first { $0["id"] == "comfyui" })
        let deps = try #require(records.first { $0["id"] == "python-deps" })
        for node in records where node["kind"] == "node" {
            #expect(Int(node["started_at"] ?? "") ?? 0 >= Int(comfy["finished_at"] ?? "") ?? .max)
            #expect(Int(deps["started_at"] ?? "") ?? 0 >= Int(node["finished_at"] ?? "") ?? .max)
        }
    }

    @Test func killNineMidCloneLeavesNoHalfInstalledNodeAndTheRetrySucceeds() async throws {
        let h = try NodeHarness()
        let redis = try await TestRedis()
        defer { h.cleanup(); redis.stop() }
        let repo = try await makeGitRepo(in: h.repos, name: "slow", commits: [["a.py": "1"], ["a.py": "2"]])
        // A git that, the first time it clones, finishes the clone and then hangs before exiting.
        let wrapper = h.folder.appendingPathComponent("bin")
        try FileManager.default.createDirectory(at: wrapper, withIntermediateDirectories: true)
        let marker = h.folder.appendingPathComponent("clone-started").path
        let real = try await TestSupport.run("/bin/sh", ["-c", "command -v git"]).output.trimmingCharacters(in: .whitespacesAndNewlines)
        try """
            #!/bin/sh
            \(real) "$@"; status=$?
            case " $* " in *" clone "*) if [ ! -e "\(marker)" ]; then touch "\(marker)"; sleep 20; fi;; esac
            exit $status
            """.write(to: wrapper.appendingPathComponent("git"), atomically: true, encoding: .utf8)
        chmod(wrapper.appendingPathComponent("git").path, 0o755)

        let queue = try JobQueue(redis: try redis.client(), machine: "m1")
        _ = try await queue.enqueue(planJSON: plan("crash", [["id": "node:slow", "kind": "node", "lease_ms": 1500, "payload": ["name": "slow", "url": repo.url, "commit": repo.commits[0]]]]))
        let workers = try pool(redis, h, processes: 1, concurrency: 1, path: wrapper.path + ":" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"))
        defer { workers.terminate() }
        #expect(await eventually(timeout: .seconds(30)) { FileManager.default.fileExists(atPath: marker) })
        let child = try #require(childPIDs(of: workers.pid).first)
        kill(child, SIGKILL)
        let target = h.configuration.workspace.node("slow")
        #expect(!FileManager.default.fileExists(atPath: target), "no half-installed node in custom_nodes")
        #expect(!(try FileManager.default.contentsOfDirectory(atPath: h.configuration.workspace.staging)).isEmpty, "the clone was in staging")

        let status = try await settle(queue, timeout: .seconds(60))
        #expect(status.state == .ready, "\(status.failures) \(workers.output.suffix(2000))")
        let record = try #require(try await queue.job(plan: "crash", id: "node:slow"))
        #expect(record["attempts"] == "2")
        #expect(try await fixtureGit(["rev-parse", "HEAD"], in: target) == repo.commits[0])
        #expect(try FileManager.default.contentsOfDirectory(atPath: h.configuration.workspace.staging).isEmpty)
    }
}
