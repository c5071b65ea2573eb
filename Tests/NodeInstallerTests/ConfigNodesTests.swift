import Foundation
import JobQueue
import TestSupport
import Testing

@Suite("Planning from the seed's formats", .serialized)
struct ConfigNodesTests {
    func repositoryPath(_ url: String) -> String {
        // https://github.com/OWNER/REPO(.git) -> OWNER/REPO
        var path = String(url.dropFirst("https://github.com/".count))
        if path.hasSuffix(".git") { path.removeLast(4) }
        return path
    }

    /// The 42 entries of the real config_nodes.json, their GitHub URLs mapped to local repositories
    /// with a rewrite, planned by `provision enqueue --spec` and installed by two worker processes.
    @Test func theRealConfigNodesJSONInstallsEndToEnd() async throws {
        let h = try NodeHarness()
        let redis = try await TestRedis()
        defer { h.cleanup(); redis.stop() }
        // The seed's file as the old system shipped it, kept in the repository.
        let original = packageRoot().appendingPathComponent("Tests/ManifestTests/Fixtures/config_nodes.json")
        var config = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: original)) as? [String: Any])
        var nodes = try #require(config["custom_nodes"] as? [[String: Any]])
        #expect(nodes.count == 42)
        try await makeWheels(in: h.wheels, ["tinyfoo==1.0"])
        let github = h.folder.appendingPathComponent("github")
        let sub = try await makeGitRepo(in: h.folder, name: "shared-submodule", commits: [["lib.py": "x"]])
        var expectedCommits: [String: String] = [:]
        for index in nodes.indices {
            let node = nodes[index]
            let name = try #require(node["name"] as? String)
            let path = repositoryPath(try #require(node["url"] as? String))
            let owner = github.appendingPathComponent((path as NSString).deletingLastPathComponent)
            try FileManager.default.createDirectory(at: owner, withIntermediateDirectories: true)
            let branch = node["branch"] as? String
            let repo = try await makeGitRepo(
                in: owner, name: (path as NSString).lastPathComponent,
                commits: [["__init__.py": "# \(name)\n", "requirements.txt": index.isMultiple(of: 3) ? "tinyfoo\n" : ""], ["nodes.py": "NODE_CLASS_MAPPINGS = {}\n"]],
                branches: branch.map { [$0: 0] } ?? [:],
                submodules: node["recursive"] as? Bool == true ? ["vendor/lib": sub] : [:])
            expectedCommits[name] = branch == nil ? repo.commits[1] : repo.commits[0]
            if node["commit"] != nil {
                // The real pin names a GitHub commit, which no local repository can have: pin the local one.
                nodes[index]["commit"] = repo.commits[0]
                expectedCommits[name] = repo.commits[0]
            }
        }
        config["custom_nodes"] = nodes
        let spec = h.folder.appendingPathComponent("config_nodes.json")
        try JSONSerialization.data(withJSONObject: config).write(to: spec)

        let environment = [
            "REDIS_URL": redis.url, "AWS_ACCESS_KEY_ID": "AKIA-test", "AWS_SECRET_ACCESS_KEY_ENCODED": "c2VjcmV0", "AWS_DEFAULT_REGION": "eu-west-1", "OPENAI_API_KEY": "sk-test",
            // The nodes' env names these; the operator exposes them to plans.
            "PROVISION_EXPOSE_ENV": "AWS_ACCESS_KEY_ID,AWS_SECRET_ACCESS_KEY_ENCODED,AWS_DEFAULT_REGION,OPENAI_API_KEY",
        ]
        let enqueue = try await run(provisionExecutable(), ["enqueue", "--machine", "m1", "--spec", spec.path], environment: environment)
        #expect(enqueue.status == 0, "\(enqueue.output)")
        let workers = try TestProcess.provision(
            ["worker", "--machine", "m1", "--processes", "2", "--concurrency", "5", "--health-port", "0", "--workspace", h.configuration.workspace.root,
             "--allow-local-sources", "--git-rewrite", "https://github.com/=file://\(github.path)/", "--uv", testUV(),
             "--find-links", h.wheels.path, "--no-index"],
            environment: environment)
        defer { workers.terminate() }
        let wait = try await run(provisionExecutable(), ["status", "--machine", "m1", "--wait", "--timeout", "300", "--json"], environment: environment, timeout: .seconds(320))
        #expect(wait.status == 0, "\(wait.output) \(workers.output.suffix(3000))")
        for (name, commit) in expectedCommits {
            #expect(try await fixtureGit(["rev-parse", "HEAD"], in: h.configuration.workspace.node(name)) == commit, "\(name)")
        }
        let env = try String(contentsOfFile: h.configuration.workspace.node("emprops_comfy_nodes") + "/.env", encoding: .utf8)
        #expect(env.contains("AWS_DEFAULT_REGION=\"eu-west-1\""))
        #expect(FileManager.default.fileExists(atPath: h.configuration.workspace.node("comfyui-prompt-reader-node") + "/vendor/lib/lib.py"))
        #expect(try await h.installed()["tinyfoo"] == "1.0")
    }

    @Test func discoveryResponsesMergeDefaultsFirst() async throws {
        let h = try NodeHarness()
        defer { h.cleanup() }
        let defaults = #"{"custom_nodes": [{"name": "manager", "url": "https://github.com/a/manager", "install_order": 1}, {"name": "shared", "url": "https://github.com/a/shared"}]}"#
        let workflows = #"{"workflows": [{"name": "txt2img-flux", "custom_nodes": [{"name": "shared", "url": "https://github.com/a/shared", "install_order": 5}, {"name": "flux-tools", "url": "https://github.com/b/flux"}], "models": [{"url": "https://huggingface.co/x/flux1-dev.safetensors", "save_path": "diffusion_models"}]}]}"#
        let conflicting = #"{"collections": [{"name": "c", "custom_nodes": [{"name": "shared", "url": "https://github.com/EVIL/shared"}]}]}"#
        for (name, text) in [("defaults.json", defaults), ("workflows.json", workflows), ("collections.json", conflicting)] {
            try text.write(to: h.folder.appendingPathComponent(name), atomically: true, encoding: .utf8)
        }
        let redis = try await TestRedis()
        defer { redis.stop() }
        let ok = try await run(provisionExecutable(), ["enqueue", "--redis", redis.url, "--machine", "m1", "--spec", h.folder.appendingPathComponent("defaults.json").path, "--spec", h.folder.appendingPathComponent("workflows.json").path])
        #expect(ok.status == 0, "\(ok.output)")
        let queue = try JobQueue(redis: try redis.client(), machine: "m1")
        let status = try await queue.status()
        let jobs = try await queue.jobs(plan: try #require(status.planID))
        let ids = Set(jobs.compactMap { $0["id"] })
        #expect(ids.contains { $0.contains("manager") } && ids.contains { $0.contains("flux-tools") } && ids.contains { $0.contains("flux1-dev.safetensors") })
        #expect(jobs.filter { $0["kind"] == "node" }.count == 3)
        let refused = try await run(provisionExecutable(), ["enqueue", "--redis", redis.url, "--machine", "m1", "--replace", "--spec", h.folder.appendingPathComponent("defaults.json").path, "--spec", h.folder.appendingPathComponent("collections.json").path])
        #expect(refused.status == 1 && refused.output.contains("The custom node shared is given differently by"), "\(refused.output)")
    }
}
