import Foundation
import GitClient
@testable import NodeInstaller
import ProcessControl
import Scheduler
import TestSupport
import Testing

/// What installing real nodes (ComfyUI 0.8 and 15 nodes) showed: install.py needs the requirements
/// first, requirement files come with CRLF and git+https lines, children must not see the queue's
/// credentials, and failures must say what they are.
@Suite("install.py, requirement lines and child environments", .serialized)
struct InstallScriptsTests {
    @Test func installScriptsRunAfterTheRequirementsAndTheirErrorsAreKept() async throws {
        let h = try NodeHarness()
        defer { h.cleanup() }
        try await makeWheels(in: h.wheels, ["tinyfoo==1.0"])
        // Like Impact-Pack: the script imports what requirements.txt installs.
        let needy = try await makeGitRepo(in: h.repos, name: "needy", commits: [[
            "requirements.txt": "tinyfoo\n", "install.py": "import tinyfoo\nopen('ok.txt', 'w').write(tinyfoo.__version__)\n", ".gitignore": "ok.txt\n",
        ]])
        let noisy = try await makeGitRepo(in: h.repos, name: "noisy", commits: [["install.py": "print('step 1')\nprint(\"[ERROR] No module named 'git'\")\n"]])
        let broken = try await makeGitRepo(in: h.repos, name: "broken", commits: [["install.py": "print('starting')\nraise ValueError('boom \\x00 here')\n"]])
        for (name, repo) in [("needy", needy), ("noisy", noisy), ("broken", broken)] { _ = try await h.node(["name": name, "url": repo.url]) }
        _ = try await h.deps(["nodes": ["needy"]])
        let result = try await h.scripts([["name": "needy"], ["name": "noisy"]])
        let scripts = try #require(result["scripts"] as? [[String: Any]])
        #expect(try String(contentsOfFile: h.configuration.workspace.node("needy") + "/ok.txt", encoding: .utf8) == "1.0")
        let noisyEntry = try #require(scripts.first { $0["name"] as? String == "noisy" })
        #expect(noisyEntry["error_lines"] as? [String] == ["[ERROR] No module named 'git'"], "\(noisyEntry)")
        #expect((noisyEntry["output_tail"] as? [String])?.first == "step 1")

        let failed = await failure { try await h.scripts([["name": "broken"]]) }
        #expect(failed?.type == "install_script_failed", "\(String(describing: failed))")
        #expect(failed?.message.contains("install.py of broken failed") == true && failed?.message.contains("ValueError: boom  here") == true, "\(failed?.message ?? "")")
        #expect(failed?.message.unicodeScalars.contains { $0.value < 0x20 } == false)
    }

    @Test func childProcessesGetNoQueueCredentialsOrTokens() async throws {
        var h = try NodeHarness()
        defer { h.cleanup() }
        // git as a wrapper that records the environment it was given.
        let record = h.folder.appendingPathComponent("git-env.txt").path
        let wrapper = h.folder.appendingPathComponent("git-wrapper")
        try "#!/bin/sh\nenv >> '\(record)'\nexec /usr/bin/git \"$@\"\n".write(to: wrapper, atomically: true, encoding: .utf8)
        chmod(wrapper.path, 0o755)
        h.configuration.gitExecutable = wrapper.path
        var environment = ProcessInfo.processInfo.environment
        environment["REDIS_URL"] = "redis://:queue-password@127.0.0.1:1/0"
        environment["PROVISION_REDIS_URL"] = "redis://:queue-password@127.0.0.1:1/0"
        environment["HF_TOKEN"] = "hf_not_for_children"
        environment["SOME_SECRET"] = "unlisted-value"
        environment["EXPOSED_ONE"] = "visible-value"
        h.configuration.environmentPolicy = EnvironmentPolicy(environment: environment, exposed: ["EXPOSED_ONE", "PROVISION_REDIS_URL"])
        let dump = "import os, json\njson.dump(dict(os.environ), open('env.json', 'w'))\n"
        let repo = try await makeGitRepo(in: h.repos, name: "dumper", commits: [["install.py": dump, ".gitignore": "env.json\n"]])
        _ = try await h.node(["name": "dumper", "url": repo.url])
        _ = try await h.scripts([["name": "dumper", "env": ["USES": "${EXPOSED_ONE}"]]])
        let seen = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: h.configuration.workspace.node("dumper") + "/env.json"))) as? [String: String] ?? [:]
        for name in ["REDIS_URL", "PROVISION_REDIS_URL", "HF_TOKEN", "SOME_SECRET"] { #expect(seen[name] == nil, "install.py saw \(name)") }
        #expect(seen["EXPOSED_ONE"] == "visible-value" && seen["USES"] == "visible-value" && seen["PATH"] != nil)
        let gitEnvironment = try String(contentsOfFile: record, encoding: .utf8)
        #expect(!gitEnvironment.isEmpty)
        for secret in ["queue-password", "hf_not_for_children", "unlisted-value"] { #expect(!gitEnvironment.contains(secret), "git saw \(secret)") }
        // A plan cannot name the queue's own credentials, exposed or not, nor what was not exposed.
        for name in ["PROVISION_REDIS_URL", "REDIS_URL", "SOME_SECRET", "HF_TOKEN"] {
            let refused = await failure { try await h.node(["name": "leak", "url": repo.url, "env": ["X": "${\(name)}"]]) }
            #expect(refused?.type == "missing_variable", "\(name): \(String(describing: refused))")
        }
    }

    @Test func httpSSHAndCredentialSourcesAreRefusedOnTheWorker() throws {
        let executor = AnyJobExecutor(NodeExecutor(configuration: NodeInstallerConfiguration(workspace: Workspace(root: "/nonexistent"))))
        for url in ["http://github.com/o/r", "ssh://git@github.com/o/r", "git@github.com:o/r.git", "https://user:pw@github.com/o/r", "git://github.com/o/r"] {
            let payload = String(decoding: try JSONSerialization.data(withJSONObject: ["name": "n", "url": url]), as: UTF8.self)
            #expect(throws: JobFailure.self, "\(url)") { try executor.validate(payload: payload) }
        }
        do throws(JobFailure) {
            try executor.validate(payload: #"{"name": "n", "url": "https://bob:hunter22@github.com/o/r"}"#)
            Issue.record("credentials in the URL were accepted")
        } catch {
            #expect(!error.message.contains("hunter22"))
        }
    }

    @Test func crlfContinuationsAndLinksAreReadAsPipReadsThem() async throws {
        let h = try NodeHarness()
        defer { h.cleanup() }
        let policy = h.configuration.sources
        func lines(_ text: String) throws -> [String] {
            let folder = h.folder.appendingPathComponent("req-\(UUID().uuidString.prefix(6))")
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            try text.write(to: folder.appendingPathComponent("requirements.txt"), atomically: true, encoding: .utf8)
            return try RequirementsReader.read(node: "n", directory: folder.path, allowOutside: false, sources: policy).map(\.line)
        }
        #expect(try lines("tinyfoo\r\ntinybar>=1 # why\r\n") == ["tinyfoo", "tinybar>=1"])
        #expect(try lines("numpy\\\n  >=1.0\nscipy\n") == ["numpy  >=1.0", "scipy"])
        // pip's comment rules: a # at the start or after whitespace; a comment line does not continue.
        #expect(try lines("tinyfoo\t# see https://h.example # pinned\n") == ["tinyfoo"])
        #expect(try lines("# old \\\ntinybar\n") == ["tinybar"])
        #expect(try lines("pkg#egg\n") == ["pkg#egg"])
        // Each of these hid behind CRLF before: the whole file was one line.
        for hostile in ["tinyfoo\r\n-e /etc", "tinyfoo\r\n--find-links /tmp", "tinyfoo\r\n-r /etc/hostname", "tinyfoo\r-i https://evil.example", "tinyfoo\r\n--extra-\\\nindex-url=https://evil.example"] {
            #expect(throws: JobFailure.self, "\(hostile.debugDescription)") { try lines(hostile) }
        }
        // A requirements.txt that is a link out of the node is not read.
        let linked = h.folder.appendingPathComponent("linked")
        try FileManager.default.createDirectory(at: linked, withIntermediateDirectories: true)
        try "secret-package\n".write(to: h.folder.appendingPathComponent("outside.txt"), atomically: true, encoding: .utf8)
        try FileManager.default.createSymbolicLink(atPath: linked.appendingPathComponent("requirements.txt").path, withDestinationPath: h.folder.appendingPathComponent("outside.txt").path)
        let refused = await failure { try RequirementsReader.read(node: "linked", directory: linked.path, allowOutside: false, sources: policy) }
        #expect(refused?.type == "requirements_refused" && refused?.message.contains("outside the node") == true)
    }

    @Test func gitRequirementLinesGoThroughTheSourcePolicyAndItsRewrites() async throws {
        let h = try NodeHarness()
        defer { h.cleanup() }
        let refuse: (String) -> JobFailure = { JobFailure(type: "requirements_refused", message: $0, retryable: false) }
        // The harness rewrites https://github.example/ to its local repositories.
        let rewritten = try #require(try RequirementsReader.vcsRequirement("git+https://github.example/img2texture.git@v1#egg=img2texture", sources: h.configuration.sources, refuse: refuse))
        #expect(rewritten.line == "git+file://\(h.folder.path)/repos/img2texture.git@v1#egg=img2texture" && rewritten.name == "img2texture")
        let named = try #require(try RequirementsReader.vcsRequirement("cstr @ git+https://github.example/cstr", sources: h.configuration.sources, refuse: refuse))
        #expect(named.name == "cstr" && named.line.hasPrefix("cstr @ git+file://"))
        let strict = GitSourcePolicy()
        for line in ["git+http://github.com/o/r", "git+ssh://git@github.com/o/r", "git+file:///etc/x", "git+https://github.com/o/r@--upload-pack=x",
                     "git+https://github.com/o/r#egg=x&subdirectory=../../etc", "git+https://github.com/o/r#egg=x&subdirectory=/home/u/other",
                     "git+https://github.com/o/r#egg=x&install=evil"] {
            #expect(throws: JobFailure.self, "\(line)") { try RequirementsReader.vcsRequirement(line, sources: strict, refuse: refuse) }
        }
        #expect(try RequirementsReader.vcsRequirement("git+https://github.com/WASasquatch/img2texture.git", sources: strict, refuse: refuse)?.name == "img2texture")
        #expect(try RequirementsReader.vcsRequirement("git+https://github.com/o/r#subdirectory=pkg&egg=r", sources: strict, refuse: refuse)?.name == "r")
        // A token in a refused line never reaches the job's error.
        let folder = h.folder.appendingPathComponent("token")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try "git+https://oauth2:ghp_secret123@github.com/org/private.git\n".write(to: folder.appendingPathComponent("requirements.txt"), atomically: true, encoding: .utf8)
        let leaked = await failure { try RequirementsReader.read(node: "token", directory: folder.path, allowOutside: false, sources: strict) }
        #expect(leaked?.type == "requirements_refused" && leaked?.message.contains("ghp_secret123") == false, "\(leaked?.message ?? "")")

        // End to end: uv fetches the package from the rewritten source, through git.
        try await makeWheels(in: h.wheels, ["setuptools==70.0", "wheel==0.43"])
        let package = try await makeGitRepo(in: h.repos, name: "gitpkg", commits: [[
            "pyproject.toml": "[build-system]\nrequires = []\nbuild-backend = \"backend\"\nbackend-path = [\".\"]\n[project]\nname = \"gitpkg\"\nversion = \"1.0\"\n",
            "backend.py": minimalBuildBackend, "gitpkg/__init__.py": "VALUE = 42\n",
        ]], tags: ["v1": 0])
        _ = package
        let user = try await makeGitRepo(in: h.repos, name: "user", commits: [["requirements.txt": "git+https://github.example/gitpkg@v1#egg=gitpkg\n"]])
        _ = try await h.node(["name": "user", "url": user.url])
        let result = try await h.deps(["nodes": ["user"]])
        #expect(result["installed"] as? Int == 1, "\(result)")
        #expect(try await h.installed()["gitpkg"] == "1.0")

        // A git source that cannot be fetched is a fetch failure, not a conflict.
        let missing = try await makeGitRepo(in: h.repos, name: "missing-user", commits: [["requirements.txt": "git+https://github.example/no-such-repo#egg=nope\n"]])
        _ = try await h.node(["name": "missing-user", "url": missing.url])
        let fetch = await failure { try await h.deps(["nodes": ["missing-user"]]) }
        #expect(fetch?.type == "requirements_fetch_failed" && fetch?.retryable == true, "\(String(describing: fetch))")
    }

    @Test func distributionsOfOneModuleAreNotInstalledTogether() async throws {
        var h = try NodeHarness()
        defer { h.cleanup() }
        try await makeWheels(in: h.wheels, ["onnxruntime==1.0", "onnxruntime-gpu==1.0", "opencv-python==5.1", "opencv-python-headless==4.9", "uses-ort==1.0;onnxruntime"])
        let cpu = try await makeGitRepo(in: h.repos, name: "cpu-node", commits: [["requirements.txt": "uses-ort\nopencv-python-headless==4.9\n"]])
        let gpu = try await makeGitRepo(in: h.repos, name: "gpu-node", commits: [["requirements.txt": "onnxruntime-gpu\nopencv-python\n"]])
        _ = try await h.node(["name": "cpu-node", "url": cpu.url])
        _ = try await h.node(["name": "gpu-node", "url": gpu.url])
        h.configuration.gpu = true
        let result = try await h.deps(["nodes": ["cpu-node", "gpu-node"]])
        let installed = try await h.installed()
        #expect(installed["onnxruntime-gpu"] == "1.0" && installed["onnxruntime"] == nil, "\(installed)")
        #expect(installed["opencv-python"] == "5.1" && installed["opencv-python-headless"] == nil, "\(installed)")
        let exclusive = try #require(result["exclusive"] as? [[String: Any]])
        #expect(exclusive.count == 2)
        #expect((exclusive.first?["wanted_by"] as? [String])?.contains("gpu-node: onnxruntime-gpu") == true, "\(exclusive)")
        // A CPU machine keeps the CPU build, and a build installed before is removed.
        h.configuration.gpu = false
        _ = try await h.deps(["nodes": ["cpu-node", "gpu-node"]])
        let again = try await h.installed()
        #expect(again["onnxruntime"] == "1.0" && again["onnxruntime-gpu"] == nil, "\(again)")
        #expect(ExclusiveDistributions.pick(["onnxruntime==1.0", "numpy==2.0"], gpu: true).lines == ["onnxruntime==1.0", "numpy==2.0"])
        // Two lines of one build (a leftover dist-info) are not two builds.
        #expect(ExclusiveDistributions.pick(["opencv-python==4.9", "opencv-python==4.10"], gpu: false).choices.isEmpty)
    }

    @Test func waitingForAChildEndsAtItsExitAndOnCancellation() async throws {
        let quick = try ChildProcess("/bin/sh", ["-c", "sleep 0.2; exit 3"])
        #expect(await quick.wait(timeout: .seconds(30)) == .exited(3))
        let slow = try ChildProcess("/bin/sleep", ["30"])
        defer { slow.signal(SIGKILL); _ = slow.waitBlocking(timeout: .seconds(5)) }
        #expect(await slow.wait(timeout: .milliseconds(100)) == nil)
        let waiting = Task { await slow.wait(timeout: .seconds(3600), cancellable: true) }
        try await Task.sleep(for: .milliseconds(100))
        waiting.cancel()
        // Cancelled, the wait returns (nil: the child still runs) instead of holding the task for an hour.
        #expect(await waiting.value == nil)
        slow.signal(SIGTERM)
        #expect(slow.waitBlocking(timeout: .seconds(10)) == .signalled(SIGTERM))
    }


    /// A supervisor waits on every child with a timeout and cancels the waits that lose: their timers,
    /// firing later, must not leave anything behind (one id per wait, for as long as the child runs).
    @Test func cancelledWaitsLeaveNothingBehindWhenTheirTimersFire() async throws {
        let child = try ChildProcess("/bin/sleep", ["30"])
        defer { child.signal(SIGKILL); _ = child.waitBlocking(timeout: .seconds(5)) }
        for _ in 0..<50 {
            let waiting = Task { await child.wait(timeout: .milliseconds(300), cancellable: true) }
            try await Task.sleep(for: .milliseconds(5))  // registered, its timer set
            waiting.cancel()
            #expect(await waiting.value == nil)
        }
        try await Task.sleep(for: .milliseconds(600))
        #expect(child.heldWaits == 0)
        #expect(await child.wait(timeout: .milliseconds(50)) == nil)
        #expect(child.heldWaits == 0)
    }

    @Test func aCommandStoppedByCancellationIsNotReportedAsTimedOut() async throws {
        // A deadline that passes: timed out.
        let late = try await ChildProcess.run("/bin/sleep", ["30"], timeout: .milliseconds(200), grace: .milliseconds(200))
        #expect(late.timedOut && !late.cancelled)
        #expect(late.ending(deadline: .milliseconds(200)).contains("longer than"))
        // The job's task cancelled long before the deadline: cancelled, and git says so.
        let running = Task { try await ChildProcess.run("/bin/sleep", ["30"], timeout: .seconds(3600), grace: .milliseconds(200)) }
        try await Task.sleep(for: .milliseconds(200))
        running.cancel()
        let stopped = try await running.value
        #expect(stopped.cancelled && !stopped.timedOut && stopped.termination == nil)
        #expect(stopped.ending(deadline: .seconds(3600)).contains("cancelled"))
        let gitTask = Task {
            try await GitClient.Git(policy: GitSourcePolicy(), timeout: .seconds(3600)).checked(["-c", "alias.wait=!sleep 30", "wait"], what: "git wait")
        }
        try await Task.sleep(for: .milliseconds(300))
        gitTask.cancel()
        do {
            _ = try await gitTask.value
            Issue.record("a cancelled git returned normally")
        } catch let error as GitError {
            #expect(error.kind == .cancelled)
            #expect(error.message.contains("cancelled"))
        } catch {
            Issue.record("a cancelled git threw \(error)")
        }
    }
    @Test func theLocksPinsReplaceGitRefsAndOnlyAllowedNodesReachOutside() async throws {
        let h = try NodeHarness()
        defer { h.cleanup() }
        let refuse: (String) -> JobFailure = { JobFailure(type: "requirements_refused", message: $0, retryable: false) }
        let pin = String(repeating: "a", count: 40)
        let pinned = try #require(try RequirementsReader.vcsRequirement(
            "pkg @ git+https://github.example/pkg.git@main ; python_version>'3'", sources: h.configuration.sources,
            pins: ["https://github.example/pkg": pin], refuse: refuse))
        #expect(pinned.line == "pkg @ git+file://\(h.folder.path)/repos/pkg.git@\(pin) ; python_version>'3'", "\(pinned.line)")
        // -e reaches outside: refused for one node, accepted for the node the operator allowed.
        let folder = h.folder.appendingPathComponent("editable")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try "-e ./vendor/lib\n".write(to: folder.appendingPathComponent("requirements.txt"), atomically: true, encoding: .utf8)
        #expect(throws: JobFailure.self) { try RequirementsReader.read(node: "editable", directory: folder.path, allowOutside: false, sources: h.configuration.sources) }
        #expect(try RequirementsReader.read(node: "editable", directory: folder.path, allowOutside: true, sources: h.configuration.sources).map(\.line) == ["-e ./vendor/lib"])
    }

    @Test func anInstallScriptThatClonesSeesTheMirrorRewrites() async throws {
        let h = try NodeHarness()
        defer { h.cleanup() }
        // Like Impact-Pack's install.py: it clones a sub-package from its public URL with git.
        _ = try await makeGitRepo(in: h.repos, name: "subpack", commits: [["sub.py": "SUB = 1\n"]])
        let script = """
            import subprocess, sys
            result = subprocess.run(["git", "clone", "-q", "https://github.example/subpack", "subpack"], capture_output=True, text=True)
            print(result.stderr)
            sys.exit(result.returncode)
            """
        let parent = try await makeGitRepo(in: h.repos, name: "parent", commits: [["install.py": script, ".gitignore": "subpack/\n"]])
        _ = try await h.node(["name": "parent", "url": parent.url])
        _ = try await h.scripts([["name": "parent"]])
        #expect(FileManager.default.fileExists(atPath: h.configuration.workspace.node("parent") + "/subpack/sub.py"))
    }

    @Test func aBuildAnInstallScriptBringsBackIsSettledAgain() async throws {
        let h = try NodeHarness()
        defer { h.cleanup() }
        // Both builds write cv2/, as the real ones do: removing one takes the other's files.
        try await makeWheels(in: h.wheels, ["opencv-contrib-python==4.11@cv2", "opencv-python==4.12@cv2"])
        let node = try await makeGitRepo(in: h.repos, name: "cv-node", commits: [["requirements.txt": "opencv-contrib-python\n"]])
        // Like Impact-Pack's subpack: the script installs a package whose dependency is another opencv build.
        let script = "import subprocess, sys\nsys.exit(subprocess.call(['\(testUV())', 'pip', 'install', '--python', sys.executable, '--no-index', '--find-links', '\(h.wheels.path)', 'opencv-python']))\n"
        let scripted = try await makeGitRepo(in: h.repos, name: "pulls-opencv", commits: [["install.py": script]])
        _ = try await h.node(["name": "cv-node", "url": node.url])
        _ = try await h.node(["name": "pulls-opencv", "url": scripted.url])
        _ = try await h.deps(["nodes": ["cv-node"]])
        let result = try await h.scripts([["name": "cv-node"], ["name": "pulls-opencv"]])
        let installed = try await h.installed()
        #expect(installed["opencv-contrib-python"] == "4.11" && installed["opencv-python"] == nil, "\(installed)")
        #expect((result["exclusive"] as? [[String: Any]])?.first?["kept"] as? String == "opencv-contrib-python==4.11", "\(result)")
        let imported = try await TestSupport.run(h.configuration.workspace.python, ["-c", "import cv2; print(cv2.__version__)"])
        #expect(imported.status == 0 && imported.output.contains("4.11"), "cv2 after the settle: \(imported.output)")
    }

    @Test func outputIsMadePrintable() {
        let bytes: [UInt8] = [0x41, 0x00, 0x1B, 0x5B, 0x33, 0x31, 0x6D, 0x42, 0x0D, 0x43, 0xFF, 0x07, 0x0A]
        #expect(ChildProcess.printable(Data(bytes)) == "AB\nC\u{FFFD}\n")
        #expect(UVFailure.classify("error: Failed to download and build `x @ git+https://h/x`\n  Caused by: Git operation failed") == .fetch)
        #expect(UVFailure.classify("× No solution found when resolving dependencies:\n╰─▶ Because a==1 depends on b<2 and you require b>=2, we can conclude that your requirements are unsatisfiable.") == .conflict)
        #expect(UVFailure.classify("error: Failed to build `pkg==1.0`\n  Caused by: Build backend failed to build wheel") == .build)
        #expect(UVFailure.classify("error: Git executable not found. Ensure that Git is installed and available.") == .tool)
    }
}

/// A PEP 517 build backend with no dependencies, so uv can build a package from a git checkout offline.
let minimalBuildBackend = #"""
import base64, hashlib, os, zipfile

def _meta():
    text = open("pyproject.toml").read()
    name = text.split('name = "')[1].split('"')[0]
    version = text.split('version = "')[1].split('"')[0]
    return name, version

def get_requires_for_build_wheel(config_settings=None):
    return []

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name, version = _meta()
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    files = {}
    for root, _, names in os.walk(dist):
        for n in names:
            if n.endswith(".py"):
                path = os.path.join(root, n)
                files[path] = open(path, "rb").read()
    files[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, wheel), "w") as z:
        for path, data in files.items():
            z.writestr(path, data)
    return wheel
"""#
