import Foundation
import JobQueue
import Logging
import NodeInstaller
import Scheduler
import TestSupport
import Testing

/// A workspace, local repositories and a wheelhouse for one test; runs executors in-process.
struct NodeHarness {
    let folder: URL
    var configuration: NodeInstallerConfiguration
    let wheels: URL

    init(force: Bool = false, environment: [String: String] = [:]) throws {
        folder = try makeTemporaryDirectory("nodes")
        wheels = folder.appendingPathComponent("wheels")
        configuration = NodeInstallerConfiguration(
            workspace: Workspace(root: folder.appendingPathComponent("workspace").path),
            sources: GitSourcePolicy(rewrites: [("https://github.example/", "file://" + folder.path + "/repos/")], allowLocal: true))
        configuration.force = force
        configuration.uv = testUV()
        configuration.findLinks = [wheels.path]
        configuration.noIndex = true
        // The given variables are what the operator exposed (--expose-env).
        configuration.environmentPolicy = EnvironmentPolicy(
            environment: ProcessInfo.processInfo.environment.merging(environment) { $1 }, exposed: Set(environment.keys))
    }

    var repos: URL { folder.appendingPathComponent("repos") }

    func run<E: JobExecutor>(_ executor: E, _ payload: [String: Any]) async throws -> [String: Any] {
        let text = String(decoding: try JSONSerialization.data(withJSONObject: payload), as: UTF8.self)
        let job = try AnyJobExecutor(executor).prepare(id: "j", payload: text)
        let result = try await job.run(context: JobContext(workerID: "test", logger: Logger(label: "test")))
        return try JSONSerialization.jsonObject(with: Data(result.utf8)) as? [String: Any] ?? [:]
    }

    func node(_ payload: [String: Any]) async throws -> [String: Any] { try await run(NodeExecutor(configuration: configuration), payload) }
    func deps(_ payload: [String: Any] = [:]) async throws -> [String: Any] { try await run(PythonDepsExecutor(configuration: configuration), payload) }
    func scripts(_ nodes: [[String: Any]]) async throws -> [String: Any] { try await run(InstallScriptsExecutor(configuration: configuration), ["nodes": nodes]) }

    func head(_ name: String) async throws -> String {
        try await fixtureGit(["rev-parse", "HEAD"], in: configuration.workspace.node(name))
    }

    /// Names of packages installed in the workspace's environment, with versions.
    func installed() async throws -> [String: String] {
        let script = "import importlib.metadata as m\nfor d in m.distributions(): print(d.metadata['Name'].lower(), d.version)"
        let text = try await TestSupport.run(configuration.workspace.python, ["-c", script]).output
        return Dictionary(text.split(separator: "\n").compactMap { line in
            let parts = line.split(separator: " ")
            return parts.count == 2 ? (String(parts[0]), String(parts[1])) : nil
        }, uniquingKeysWith: { $1 })
    }

    func cleanup() { try? FileManager.default.removeItem(at: folder) }
}

func failure(_ body: () async throws -> Any) async -> JobFailure? {
    do {
        _ = try await body()
        return nil
    } catch {
        return error as? JobFailure
    }
}

@Suite("Custom nodes, ComfyUI and Python requirements", .serialized)
struct NodeInstallerTests {
    @Test func pinnedCommitTagBranchAndDefaultBranchAreCheckedOut() async throws {
        let h = try NodeHarness()
        defer { h.cleanup() }
        let repo = try await makeGitRepo(
            in: h.repos, name: "pins", commits: [["a.py": "1"], ["a.py": "2"], ["a.py": "3"]],
            tags: ["v1.0": 0], branches: ["dev": 2], mainAt: 1)
        _ = try await h.node(["name": "by-commit", "url": "https://github.example/pins", "commit": String(repo.commits[0].prefix(10))])
        _ = try await h.node(["name": "by-tag", "url": "https://github.example/pins.git", "tag": "v1.0"])
        _ = try await h.node(["name": "by-branch", "url": repo.url, "branch": "dev"])
        _ = try await h.node(["name": "by-default", "url": repo.url])
        #expect(try await h.head("by-commit") == repo.commits[0])
        #expect(try await h.head("by-tag") == repo.commits[0])
        #expect(try await h.head("by-branch") == repo.commits[2])
        #expect(try await h.head("by-default") == repo.commits[1])
        // Nothing is left in the staging area, and custom_nodes holds the nodes alone: ComfyUI
        // imports every folder there, so a staging folder inside it failed to import on every machine.
        #expect(try FileManager.default.contentsOfDirectory(atPath: h.configuration.workspace.staging).isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: h.configuration.workspace.customNodes).sorted() == ["by-branch", "by-commit", "by-default", "by-tag"])
    }

    @Test func aFreshCloneOfAMissingTagOrBranchFailsForGoodAndALocalSourceSharesItsObjects() async throws {
        let h = try NodeHarness()
        defer { h.cleanup() }
        let repo = try await makeGitRepo(in: h.repos, name: "local", commits: [["a.py": "1"], ["a.py": "2"]], tags: ["v1.0": 0])
        // No ls-remote before a fresh clone: git's own refusal says the ref is missing, for good.
        let missingTag = await failure { try await h.node(["name": "no-tag", "url": repo.url, "tag": "v9.9"]) }
        #expect(missingTag?.type == "ref_not_found")
        #expect(missingTag?.retryable == false)
        #expect(missingTag?.message.contains("has no tag v9.9") == true)
        let missingBranch = await failure { try await h.node(["name": "no-branch", "url": "https://github.example/local", "branch": "gone"]) }
        #expect(missingBranch?.type == "ref_not_found")
        #expect(missingBranch?.message.contains("has no branch gone") == true)
        #expect(!FileManager.default.fileExists(atPath: h.configuration.workspace.node("no-tag")))

        // A local repository is cloned from its path: git hardlinks its object files.
        _ = try await h.node(["name": "linked", "url": "https://github.example/local", "tag": "v1.0"])
        #expect(try await h.head("linked") == repo.commits[0])
        let objects = h.configuration.workspace.node("linked") + "/.git/objects"
        let files = (FileManager.default.enumerator(atPath: objects)?.allObjects as? [String] ?? []).filter { !$0.hasPrefix("info") }
        let linked = files.filter { file in
            var info = stat()
            return stat(objects + "/" + file, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG && info.st_nlink > 1
        }
        #expect(!linked.isEmpty)
        // A second run finds it in place at the tag's commit (the remote asked only now) and keeps it.
        let again = try await h.node(["name": "linked", "url": "https://github.example/local", "tag": "v1.0"])
        #expect(again["skipped"] as? Bool == true)
    }

    @Test func aStagingFolderLeftInCustomNodesByAnOlderVersionIsRemovedWhenEmpty() async throws {
        let h = try NodeHarness()
        defer { h.cleanup() }
        let repo = try await makeGitRepo(in: h.repos, name: "plain", commits: [["a.py": "1"]])
        try FileManager.default.createDirectory(atPath: h.configuration.workspace.customNodes + "/.staging", withIntermediateDirectories: true)
        _ = try await h.node(["name": "plain", "url": repo.url])
        #expect(try FileManager.default.contentsOfDirectory(atPath: h.configuration.workspace.customNodes) == ["plain"])
    }

    @Test func submodulesArePresentAndARerunIsANoOp() async throws {
        let h = try NodeHarness()
        defer { h.cleanup() }
        let sub = try await makeGitRepo(in: h.repos, name: "sub", commits: [["lib.py": "LIB = 1"]])
        let repo = try await makeGitRepo(in: h.repos, name: "withsub", commits: [["node.py": "x"]], submodules: ["vendor/lib": sub])
        let payload: [String: Any] = ["name": "withsub", "url": repo.url, "recursive": true]
        let first = try await h.node(payload)
        #expect(first["skipped"] as? Bool == false)
        let lib = h.configuration.workspace.node("withsub") + "/vendor/lib/lib.py"
        #expect(try String(contentsOfFile: lib, encoding: .utf8) == "LIB = 1")
        let before = try FileManager.default.attributesOfItem(atPath: lib)[.modificationDate] as? Date
        let second = try await h.node(payload)
        #expect(second["skipped"] as? Bool == true && second["commit"] as? String == repo.commits[0])
        #expect(try FileManager.default.attributesOfItem(atPath: lib)[.modificationDate] as? Date == before)
    }

    @Test func anotherCommitOrLocalChangesAreReplacedOnlyWithForce() async throws {
        var h = try NodeHarness()
        defer { h.cleanup() }
        let repo = try await makeGitRepo(in: h.repos, name: "moving", commits: [["a.py": "1"], ["a.py": "2"]])
        _ = try await h.node(["name": "moving", "url": repo.url, "commit": repo.commits[0]])
        let conflict = await failure { try await h.node(["name": "moving", "url": repo.url, "commit": repo.commits[1]]) }
        #expect(conflict?.type == "node_conflict" && conflict?.retryable == false)
        #expect(conflict?.message.contains("run with force") == true)
        // A modified file also counts as a conflict, even at the right commit.
        try "edited".write(toFile: h.configuration.workspace.node("moving") + "/a.py", atomically: true, encoding: .utf8)
        #expect(await failure { try await h.node(["name": "moving", "url": repo.url, "commit": repo.commits[0]]) }?.type == "node_conflict")
        _ = try await h.node(["name": "moving", "url": repo.url, "commit": repo.commits[1], "force": true])
        #expect(try await h.head("moving") == repo.commits[1])
        h.configuration.force = true
        _ = try await h.node(["name": "moving", "url": repo.url, "commit": repo.commits[0]])
        #expect(try await h.head("moving") == repo.commits[0])
    }

    @Test func envFileHasExpandedValuesAndInstallScriptRuns() async throws {
        let h = try NodeHarness(environment: ["TEST_NODE_SECRET": "s3cret-value"])
        defer { h.cleanup() }
        let script = "import os, pathlib\npathlib.Path('installed.txt').write_text(os.environ['API_KEY'][:2] + os.environ['COMFYUI_PATH'])\n"
        let repo = try await makeGitRepo(in: h.repos, name: "envnode", commits: [["install.py": script, ".gitignore": "installed.txt\n.env\n"]])
        let env = ["API_KEY": "${TEST_NODE_SECRET}", "REGION": "eu-${TEST_NODE_SECRET}-x"]
        let result = try await h.node(["name": "envnode", "url": repo.url, "env": env])
        #expect(result["install_script"] as? Bool == true)
        let directory = h.configuration.workspace.node("envnode")
        // install.py runs in its own job, after the requirements.
        #expect(!FileManager.default.fileExists(atPath: directory + "/installed.txt"))
        let ran = try await h.scripts([["name": "envnode", "env": env]])
        let entry = try #require((ran["scripts"] as? [[String: Any]])?.first)
        #expect(entry["skipped"] as? Bool == false)
        let again = try await h.scripts([["name": "envnode", "env": env]])
        #expect((again["scripts"] as? [[String: Any]])?.first?["skipped"] as? Bool == true)
        #expect(try String(contentsOfFile: directory + "/.env", encoding: .utf8) == "API_KEY=\"s3cret-value\"\nREGION=\"eu-s3cret-value-x\"\n")
        let mode = try FileManager.default.attributesOfItem(atPath: directory + "/.env")[.posixPermissions] as? Int
        #expect(mode == 0o600)
        #expect(try String(contentsOfFile: directory + "/installed.txt", encoding: .utf8) == "s3" + h.configuration.workspace.comfyUI)
        let missing = await failure { try await h.node(["name": "other", "url": repo.url, "env": ["TOKEN": "${NOT_SET_ANYWHERE}"]]) }
        #expect(missing?.type == "missing_variable" && missing?.message.contains("NOT_SET_ANYWHERE") == true)
    }

    @Test func hostileInputIsRefusedBeforeAnythingRuns() async throws {
        let h = try NodeHarness()
        defer { h.cleanup() }
        let executor = AnyJobExecutor(NodeExecutor(configuration: h.configuration))
        let bad: [[String: Any]] = [
            ["name": "../escape", "url": "https://github.example/x"],
            ["name": "a/b", "url": "https://github.example/x"],
            ["name": ".hidden", "url": "https://github.example/x"],
            ["name": "ok", "url": "ext::sh -c touch% /tmp/pwned"],
            ["name": "ok", "url": "--upload-pack=touch /tmp/pwned"],
            ["name": "ok", "url": "https://github.example/x", "branch": "--upload-pack=evil"],
            ["name": "ok", "url": "https://github.example/x", "tag": "v1..2"],
            ["name": "ok", "url": "https://github.example/x", "commit": "not-a-commit"],
            ["name": "ok", "url": "https://github.example/x", "commit": "abcdef1", "tag": "v1"],
            ["name": "ok", "url": "https://github.example/x", "env": ["NOT-AN-ID": "x"]],
        ]
        for payload in bad {
            let text = String(decoding: try JSONSerialization.data(withJSONObject: payload), as: UTF8.self)
            #expect(throws: JobFailure.self, "\(payload)") { try executor.validate(payload: text) }
        }
        var strict = h.configuration
        strict.sources = GitSourcePolicy()
        #expect(throws: JobFailure.self) { try AnyJobExecutor(NodeExecutor(configuration: strict)).validate(payload: #"{"name":"x","url":"file:///etc"}"#) }
        #expect(!FileManager.default.fileExists(atPath: "/tmp/pwned"))
    }

    @Test func requirementsResolveTogetherAndConflictsNameBothNodes() async throws {
        let h = try NodeHarness()
        defer { h.cleanup() }
        try await makeWheels(in: h.wheels, ["tinyfoo==1.0", "tinyfoo==2.0", "tinybar==1.0;tinyfoo>=1", "torch==2.5.0"])
        let a = try await makeGitRepo(in: h.repos, name: "node-a", commits: [["requirements.txt": "tinyfoo==1.0\n"]])
        let b = try await makeGitRepo(in: h.repos, name: "node-b", commits: [["requirements.txt": "# needs the new one\ntinyfoo==2.0\n"]])
        let c = try await makeGitRepo(in: h.repos, name: "node-c", commits: [["requirements.txt": "tinybar\n-r extra.txt\n", "extra.txt": "tinyfoo>=1.0\n"]])
        for (name, repo) in [("node-a", a), ("node-b", b), ("node-c", c)] { _ = try await h.node(["name": name, "url": repo.url]) }
        let conflict = await failure { try await h.deps(["nodes": ["node-a", "node-b", "node-c"]]) }
        #expect(conflict?.type == "requirements_conflict" && conflict?.retryable == false)
        #expect(conflict?.message.contains("node-a") == true && conflict?.message.contains("node-b") == true, "\(conflict?.message ?? "")")
        // Without the clash, one resolution and one install.
        let result = try await h.deps(["nodes": ["node-b", "node-c"]])
        #expect(result["installed"] as? Int == 2)
        let installed = try await h.installed()
        #expect(installed["tinyfoo"] == "2.0" && installed["tinybar"] == "1.0")
    }

    @Test func anInstalledTorchIsNeverReplaced() async throws {
        let h = try NodeHarness()
        defer { h.cleanup() }
        try await makeWheels(in: h.wheels, ["torch==2.5.0", "torch==1.13.0", "tinyfoo==1.0"])
        let greedy = try await makeGitRepo(in: h.repos, name: "greedy", commits: [["requirements.txt": "torch==1.13.0\ntinyfoo\n"]])
        let polite = try await makeGitRepo(in: h.repos, name: "polite", commits: [["requirements.txt": "torch>=2.0\ntinyfoo\n"]])
        _ = try await h.node(["name": "greedy", "url": greedy.url])
        _ = try await h.node(["name": "polite", "url": polite.url])
        // The machine's torch: installed first, as a GPU image ships it.
        _ = try await h.deps(["nodes": [], "constraints": []])
        let pip = try await TestSupport.run(h.configuration.uv, ["pip", "install", "--python", h.configuration.workspace.python, "--no-index", "--find-links", h.wheels.path, "torch==2.5.0"])
        #expect(pip.status == 0, "\(pip.output)")
        let refused = await failure { try await h.deps(["nodes": ["greedy"]]) }
        #expect(refused?.message.contains("custom node greedy requires torch==1.13.0, but the installed torch==2.5.0 is kept") == true, "\(refused?.message ?? "")")
        _ = try await h.deps(["nodes": ["polite"]])
        let installed = try await h.installed()
        #expect(installed["torch"] == "2.5.0" && installed["tinyfoo"] == "1.0")
    }

    @Test func requirementLinesThatReachOutsideAreRefused() async throws {
        let h = try NodeHarness()
        defer { h.cleanup() }
        for (index, line) in ["--extra-index-url https://evil.example/simple", "-e .", "git+ssh://example.com/x.git", "pkg @ file:///etc/x", "-r ../../../etc/passwd", "-i https://evil.example"].enumerated() {
            let repo = try await makeGitRepo(in: h.repos, name: "outside\(index)", commits: [["requirements.txt": "tinyfoo\n\(line)\n"]])
            _ = try await h.node(["name": "outside\(index)", "url": repo.url])
            let refused = await failure { try await h.deps(["nodes": ["outside\(index)"]]) }
            #expect(refused?.type == "requirements_refused" && refused?.message.contains("outside\(index)'s requirements.txt line 2") == true, "\(line): \(refused?.message ?? "nil")")
        }
    }

    @Test func comfyUIIsClonedOverAnExistingModelsFolderWithItsRequirements() async throws {
        let h = try NodeHarness()
        defer { h.cleanup() }
        try await makeWheels(in: h.wheels, ["tinyfoo==1.0"])
        let core = try await makeGitRepo(in: h.repos, name: "ComfyUI", commits: [["main.py": "print('comfy')", "requirements.txt": "tinyfoo\n", "models/checkpoints/put_checkpoints_here": ""]], tags: ["v0.3.0": 0])
        // A model download that finished before the core was cloned.
        let early = h.configuration.workspace.models + "/loras/early.safetensors"
        try FileManager.default.createDirectory(atPath: (early as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try "weights".write(toFile: early, atomically: true, encoding: .utf8)
        let result = try await h.run(ComfyUIExecutor(configuration: h.configuration), ["url": "https://github.example/ComfyUI", "tag": "v0.3.0"])
        #expect(result["commit"] as? String == core.commits[0] && result["cloned"] as? Bool == true)
        #expect(FileManager.default.fileExists(atPath: h.configuration.workspace.comfyUI + "/main.py"))
        #expect(try String(contentsOfFile: early, encoding: .utf8) == "weights")
        #expect(try await h.installed()["tinyfoo"] == "1.0")
        let again = try await h.run(ComfyUIExecutor(configuration: h.configuration), ["url": "https://github.example/ComfyUI", "tag": "v0.3.0"])
        #expect(again["cloned"] as? Bool == false && again["requirements"] as? Int == 0)
    }

    /// Found by bench/chaos: a worker killed after ComfyUI's repository was moved in but before its
    /// files were checked out left a checkout whose files all look deleted; every retry refused it as
    /// "local changes" and the machine failed. The marker written before the move lets the retry
    /// finish the checkout.
    @Test func aComfyUICheckoutInterruptedAfterTheMoveIsFinishedByTheRetry() async throws {
        let h = try NodeHarness()
        defer { h.cleanup() }
        let core = try await makeGitRepo(in: h.repos, name: "ComfyUI", commits: [["main.py": "print('comfy')", "requirements.txt": "# none\n"]], tags: ["v0.3.0": 0])
        let payload: [String: Any] = ["url": "https://github.example/ComfyUI", "tag": "v0.3.0"]
        _ = try await h.run(ComfyUIExecutor(configuration: h.configuration), payload)
        let target = h.configuration.workspace.comfyUI
        #expect(!FileManager.default.fileExists(atPath: target + "/.git/provision-checkout-pending"))
        // The state the kill left: the repository in place, no files, the pending marker from the stage.
        for file in ["main.py", "requirements.txt"] { try FileManager.default.removeItem(atPath: target + "/" + file) }
        try FileManager.default.removeItem(atPath: target + "/.git/provision-installed")
        try (core.commits[0] + "\n").write(toFile: target + "/.git/provision-checkout-pending", atomically: true, encoding: .utf8)
        let retry = try await h.run(ComfyUIExecutor(configuration: h.configuration), payload)
        #expect(retry["commit"] as? String == core.commits[0])
        #expect(FileManager.default.fileExists(atPath: target + "/main.py"))
        #expect(!FileManager.default.fileExists(atPath: target + "/.git/provision-checkout-pending"))
        // Without the marker, missing files are someone's local changes: still refused.
        try FileManager.default.removeItem(atPath: target + "/main.py")
        let refused = await failure { try await h.run(ComfyUIExecutor(configuration: h.configuration), payload) }
        #expect(refused?.type == "comfyui_conflict")
    }
}
