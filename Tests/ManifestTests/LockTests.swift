import Downloader
import Foundation
import ComponentSpec
import Planning
import WorkflowAnalysis
import TestSupport
import Testing

/// Local repositories standing in for ComfyUI and custom nodes, and a loopback origin imitating
/// Hugging Face, for one test.
final class LockFixture: Sendable {
    let folder: URL
    let origin: TestOrigin
    let comfyui: LocalRepository
    let alpha: LocalRepository
    let beta: LocalRepository
    let gamma: LocalRepository
    /// Commits: ComfyUI at tag v0.3.0 (annotated), alpha's tag v1 (annotated) and its newer HEAD, beta's dev branch.
    let comfyTagged: String
    let alphaV1: String
    let alphaHead: String
    let betaDev: String
    let gammaFirst: String
    let gammaHead: String
    let hfData: Data
    let plainData: Data

    init() async throws {
        folder = try makeTemporaryDirectory("lock")
        origin = try await TestOrigin()
        comfyui = try await LocalRepository.create(at: folder.appendingPathComponent("repos/ComfyUI"), files: ["main.py": "print('comfy')\n"])
        try await git(["tag", "-a", "v0.3.0", "-m", "release"], in: comfyui.path)
        comfyTagged = try await comfyui.head()
        try await comfyui.commit(["main.py": "print('comfy 2')\n"], message: "after the tag")

        alpha = try await LocalRepository.create(at: folder.appendingPathComponent("repos/alpha.git"), files: ["__init__.py": "A = 1\n", "requirements.txt": "numpy\n"])
        try await git(["tag", "-a", "v1", "-m", "v1"], in: alpha.path)
        alphaV1 = try await alpha.head()
        alphaHead = try await alpha.commit(["__init__.py": "A = 2\n"], message: "second")

        beta = try await LocalRepository.create(at: folder.appendingPathComponent("repos/beta"), files: ["nodes.py": "B = 1\n"])
        try await git(["checkout", "-q", "-b", "dev"], in: beta.path)
        betaDev = try await beta.commit(["nodes.py": "B = 'dev'\n"], message: "dev work")
        try await git(["checkout", "-q", "main"], in: beta.path)

        gamma = try await LocalRepository.create(at: folder.appendingPathComponent("repos/gamma"), files: ["g.py": "G = 1\n"])
        gammaFirst = try await gamma.head()
        gammaHead = try await gamma.commit(["g.py": "G = 2\n"], message: "second")

        hfData = try origin.addFile("flux-ae.safetensors", size: 300_000, seed: 7)
        plainData = try origin.addFile("upscaler.pth", size: 150_000, seed: 9)
    }

    var hfURL: String { "\(origin.base)/hf/org/flux/resolve/main/flux-ae.safetensors" }
    var plainURL: String { origin.url("upscaler.pth") }

    /// A manifest naming every kind of ref.
    func manifest(extraModels: [[String: Any]] = []) throws -> String {
        try write(json([
            "comfyui": ["url": comfyui.url, "ref": "v0.3.0"],
            "custom_nodes": [
                ["name": "alpha", "url": alpha.url, "tag": "v1", "requirements": true, "env": ["TOKEN": "${ALPHA_TOKEN}"]],
                ["name": "beta", "url": beta.url, "branch": "dev", "install_order": 1],
                ["name": "gamma", "url": gamma.url, "commit": gammaFirst, "recursive": true],
                ["name": "delta", "url": gamma.url],
            ],
            "models": [
                ["url": hfURL, "directory": "vae", "filename": "flux/ae.safetensors"],
                ["url": plainURL, "directory": "upscale_models", "filename": "4x.pth"],
                ["url": "https://example.invalid/never-fetched.safetensors", "directory": "loras", "filename": "given.safetensors",
                 "sha256": String(repeating: "ab", count: 32), "size": 1234],
            ] + extraModels,
            "python": ["packages": ["numpy==1.26.4"]],
        ]), to: "manifest.json", in: folder)
    }

    func options() -> LockOptions {
        var options = LockOptions()
        options.git = Git(allowLocal: true, timeout: .seconds(60))
        options.policy = URLPolicy(allowLoopback: true)
        options.scratchDirectory = folder.path
        options.environment = [:]
        return options
    }

    deinit {
        origin.stop()
        try? FileManager.default.removeItem(at: folder)
    }
}

@Suite("Lock against local git repositories and a loopback origin imitating Hugging Face", .serialized)
struct LockTests {
    @Test func manifestRefsResolveToCommitsAndModelsToSizeAndHash() async throws {
        let f = try await LockFixture()
        let manifest = try f.manifest()
        let (lock, warnings) = try await Locker(options: f.options(), analyzer: WorkflowAnalyzer(registry: NodeRegistry())).lock([try SpecDocument.load(path: manifest)])
        #expect(warnings == LockWarnings())
        #expect(lock.comfyui == LockedRepository(url: f.comfyui.url, commit: f.comfyTagged, tag: "v0.3.0"))
        let nodes = Dictionary(uniqueKeysWithValues: lock.customNodes.map { ($0.name, $0) })
        #expect(lock.customNodes.map(\.name) == ["alpha", "beta", "delta", "gamma"])
        // An annotated tag resolves to the commit it tags, not the tag object.
        #expect(nodes["alpha"]?.commit == f.alphaV1 && nodes["alpha"]?.tag == "v1" && nodes["alpha"]?.env == ["TOKEN": "${ALPHA_TOKEN}"])
        #expect(nodes["beta"]?.commit == f.betaDev && nodes["beta"]?.branch == "dev" && nodes["beta"]?.installOrder == 1)
        #expect(nodes["gamma"]?.commit == f.gammaFirst && nodes["gamma"]?.recursive == true)
        #expect(nodes["delta"]?.commit == f.gammaHead)

        let models = Dictionary(uniqueKeysWithValues: lock.models.map { ($0.path, $0) })
        // Published by the origin: X-Linked-Etag / X-Linked-Size, and the URL pinned to X-Repo-Commit.
        let hf = try #require(models["vae/flux/ae.safetensors"])
        #expect(hf.sha256 == sha256Hex(f.hfData) && hf.size == 300_000)
        #expect(hf.url == "\(f.origin.base)/hf/org/flux/resolve/0123456789abcdef0123456789abcdef01234567/flux-ae.safetensors")
        #expect(hf.sourceURL == f.hfURL)
        // Not published: downloaded once and hashed.
        let plain = try #require(models["upscale_models/4x.pth"])
        #expect(plain.sha256 == sha256Hex(f.plainData) && plain.size == 150_000 && plain.sourceURL == nil)
        // Given in full by the spec: kept without a request.
        #expect(models["loras/given.safetensors"]?.size == 1234)
        #expect(lock.python?.packages == ["numpy==1.26.4"])

        let stats = try await f.origin.stats()
        // The published file was never transferred; the other one exactly once (plus one byte for each of
        // the two probes: the metadata request and the download's).
        #expect(stats.requests.filter { $0.path.contains("flux-ae") }.allSatisfy { $0.bytes == 0 })
        #expect(stats.requests.filter { $0.path.hasSuffix("upscaler.pth") }.map(\.bytes).reduce(0, +) == 150_000 + 2)
        // No scratch file left behind.
        #expect(try FileManager.default.contentsOfDirectory(atPath: f.folder.path).filter { $0.hasPrefix("provision-lock-") }.isEmpty)
    }

    @Test func theCLIWritesTheSameBytesEveryTime() async throws {
        let f = try await LockFixture()
        let manifest = try f.manifest()
        let first = f.folder.appendingPathComponent("first.lock").path
        let second = f.folder.appendingPathComponent("second.lock").path
        let a = try await provision(["lock", manifest, "--output", first, "--allow-local-sources", "--allow-loopback"])
        #expect(a.status == 0, "\(a.output)")
        #expect(a.output.contains("wrote \(first): ComfyUI, 4 custom nodes, 3 models"))
        let b = try await provision(["lock", manifest, "-o", second, "--allow-local-sources", "--allow-loopback", "--concurrency", "1"])
        #expect(b.status == 0, "\(b.output)")
        let bytes = try Data(contentsOf: URL(fileURLWithPath: first))
        #expect(bytes == (try Data(contentsOf: URL(fileURLWithPath: second))))
        let text = String(decoding: bytes, as: UTF8.self)
        #expect(text.hasPrefix("{\n  \"comfyui\" : {") && text.hasSuffix("}\n"))
        try await validateAgainstSchema(text, schema: "lockfile.schema.json")
        // A lock is a valid input to lock: it stays as it is.
        let again = try await provision(["lock", first, "-o", "-"])
        #expect(again.status == 0 && again.output == text, "\(again.output)")
    }

    @Test func badRefsAndUnsafeURLsAreRefusedWithOneSentence() async throws {
        let f = try await LockFixture()
        func refusal(_ nodes: [[String: Any]], allowLocal: Bool = true) async throws -> String? {
            let path = try write(json(["custom_nodes": nodes]), to: "bad-\(UUID().uuidString).json", in: f.folder)
            var options = f.options()
            options.git = Git(allowLocal: allowLocal, timeout: .seconds(30))
            do {
                _ = try await Locker(options: options, analyzer: WorkflowAnalyzer(registry: NodeRegistry())).lock([try SpecDocument.load(path: path)])
                return nil
            } catch {
                return "\(error)"
            }
        }
        #expect(try await refusal([["name": "a", "url": f.alpha.url, "tag": "v9"]]) == "The repository \(f.alpha.url) has no tag v9.")
        #expect(try await refusal([["name": "a", "url": f.alpha.url, "branch": "nope"]]) == "The repository \(f.alpha.url) has no branch nope.")
        let absent = String(repeating: "0", count: 40)
        #expect(try await refusal([["name": "a", "url": f.alpha.url, "commit": absent]]) == "The repository \(f.alpha.url) has no commit \(absent).")
        #expect(try await refusal([["name": "a", "url": f.alpha.url, "commit": "abc"]])?.contains("is not 7 to 40 hexadecimal digits") == true)
        #expect(try await refusal([["name": "a", "url": f.alpha.url]], allowLocal: false)
            == "The repository URL '\(f.alpha.url)' is local; local sources need --allow-local-sources.")
        // Option injection: neither a URL nor a ref can become an option of git.
        let marker = f.folder.appendingPathComponent("pwned").path
        #expect(try await refusal([["name": "a", "url": "--upload-pack=touch \(marker)"]])?.contains("contains spaces, control characters or a leading '-'") == true)
        #expect(try await refusal([["name": "a", "url": "--upload-pack=/bin/true"]])?.contains("a leading '-'") == true)
        #expect(try await refusal([["name": "a", "url": "not a url"]])?.contains("contains spaces") == true)
        #expect(try await refusal([["name": "a", "url": "github.com/o/r"]])?.contains("is not a URL") == true)
        #expect(try await refusal([["name": "a", "url": "ext::sh"]])?.contains("uses ext; only https") == true)
        #expect(try await refusal([["name": "a", "url": f.alpha.url, "tag": "--output=/tmp/x"]]) == "The tag of a '--output=/tmp/x' is not a valid git ref name.")
        #expect(try await refusal([["name": "a", "url": "https://user:secret@example.invalid/r.git"]])?.contains("carries credentials") == true)
        #expect(try await refusal([["name": "../escape", "url": f.alpha.url]])?.contains("has a custom node named '../escape'") == true)
        #expect(try await refusal([["name": "a", "url": f.alpha.url, "tag": "v1", "branch": "main"]])?.contains("more than one of commit, tag and branch") == true)
        #expect(!FileManager.default.fileExists(atPath: marker))
    }

    @Test func aPublishedHashThatContradictsTheSpecFailsTheLock() async throws {
        let f = try await LockFixture()
        let path = try write(json(["models": [["url": f.hfURL, "directory": "vae", "filename": "ae.safetensors", "sha256": String(repeating: "0", count: 64)]]]), to: "m.json", in: f.folder)
        await #expect(throws: LockError.publishedHashDiffers(model: "vae/ae.safetensors", published: sha256Hex(f.hfData), expected: String(repeating: "0", count: 64))) {
            _ = try await Locker(options: f.options(), analyzer: WorkflowAnalyzer(registry: NodeRegistry())).lock([try SpecDocument.load(path: path)])
        }
        let missing = try write(json(["models": [["url": f.origin.url("absent.bin"), "directory": "vae", "filename": "x.bin"]]]), to: "n.json", in: f.folder)
        let result = try await provision(["lock", missing, "-o", f.folder.appendingPathComponent("x.lock").path, "--allow-loopback"])
        #expect(result.status == 1 && result.output.hasPrefix("provision: The model vae/x.bin cannot be pinned: ") && result.output.contains("HTTP 404"), "\(result.output)")
    }

    @Test func workflowsAddTheirPackagesAndModelsThroughAMirror() async throws {
        let f = try await LockFixture()
        // The registry names GitHub repositories; --mirror maps them to local ones.
        let mirror = f.folder.appendingPathComponent("github")
        let kj = try await LocalRepository.create(at: mirror.appendingPathComponent("kijai/ComfyUI-KJNodes"), files: ["kj.py": "KJ = 1\n"])
        let gguf = try await LocalRepository.create(at: mirror.appendingPathComponent("city96/ComfyUI-GGUF"), files: ["gguf.py": "G = 1\n"])
        let derfuu = try await LocalRepository.create(at: mirror.appendingPathComponent("Derfuu/Derfuu_ComfyUI_ModdedNodes"), files: ["df.py": "D = 1\n"])
        let rgthree = try await LocalRepository.create(at: mirror.appendingPathComponent("rgthree/rgthree-comfy"), files: ["r.py": "R = 1\n"])
        let alice = try await LocalRepository.create(at: mirror.appendingPathComponent("alice/captioner"), files: ["c.py": "C = 1\n"])
        _ = try f.origin.addFile("ae.safetensors", size: 4096, seed: 3)
        let checkpoint = try f.origin.addFile("base.safetensors", size: 8192, seed: 4)
        // The workflow's models lists name Hugging Face; point them at the loopback imitation.
        var text = try String(contentsOfFile: fixture("workflow-ui.json"), encoding: .utf8)
        text = text.replacingOccurrences(of: "https://huggingface.co/org/flux/resolve/main/ae.safetensors", with: "\(f.origin.base)/hf/org/flux/resolve/main/ae.safetensors")
        text = text.replacingOccurrences(of: "https://huggingface.co/org/sdxl/resolve/main/base.safetensors", with: "\(f.origin.base)/hf/org/sdxl/resolve/main/base.safetensors")
        text = text.replacingOccurrences(of: "31E35C80FC4829D14F90153F4C74CD59C90B779F6AFE05A74CD6145A2E6EF5D6", with: sha256Hex(checkpoint).uppercased())
        let workflow = try write(text, to: "wf.json", in: f.folder)
        let output = f.folder.appendingPathComponent("wf.lock").path
        let base = ["lock", workflow, "-o", output, "--registry", fixture("registry/extension-node-map.json"), "--allow-local-sources", "--allow-loopback",
                    "--mirror", "https://github.com/=file://\(mirror.path)/"]

        // Ambiguous and unknown types, and models without a URL, stop the lock...
        let refused = try await provision(base)
        #expect(refused.status == 1)
        #expect(refused.output.hasSuffix("provision: These node types cannot be pinned: Mystery Node (unknown); ImageCaptioner (claimed by https://github.com/alice/captioner, https://github.com/bob/captioner-nodes); add their packages to a manifest given with the workflows, or pass --allow-unresolved.\n"), "\(refused.output)")

        // ...unless a manifest settles them (its repository picks the candidate) and the rest is allowed.
        let manifest = try write(json(["custom_nodes": [["name": "captioner", "url": "https://github.com/alice/captioner"]]]), to: "prefer.json", in: f.folder)
        let locked = try await provision(base + [manifest, "--allow-unresolved"])
        #expect(locked.status == 0, "\(locked.output)")
        #expect(locked.output.contains("warning: not pinned: node type Mystery Node (unknown)"))
        #expect(locked.output.contains("warning: not pinned: model diffusion_models/flux1-dev-Q4_K_S.gguf (no URL)"))
        let lock = try Lockfile.load(path: output)
        let nodes = Dictionary(uniqueKeysWithValues: lock.customNodes.map { ($0.name, $0) })
        #expect(Set(nodes.keys) == ["captioner", "ComfyUI-KJNodes", "ComfyUI-GGUF", "Derfuu_ComfyUI_ModdedNodes", "rgthree-comfy"])
        // The lock keeps the registry's URL; the commit came through the mirror.
        #expect(nodes["ComfyUI-KJNodes"]?.url == "https://github.com/kijai/ComfyUI-KJNodes")
        #expect(nodes["ComfyUI-KJNodes"]?.commit == (try await kj.head()))
        #expect(nodes["ComfyUI-KJNodes"]?.provides == ["GetNode", "ImageResizeKJ"])
        #expect(nodes["ComfyUI-GGUF"]?.commit == (try await gguf.head()))
        #expect(nodes["Derfuu_ComfyUI_ModdedNodes"]?.commit == (try await derfuu.head()))
        #expect(nodes["rgthree-comfy"]?.commit == (try await rgthree.head()))
        #expect(nodes["captioner"]?.commit == (try await alice.head()) && nodes["captioner"]?.provides == ["ImageCaptioner"])
        // Models with a URL in the workflow are pinned (the hash the workflow gives is checked against the
        // published one); models named only by loaders have no URL and are reported.
        #expect(lock.models.map(\.path) == ["checkpoints/SDXL/base.safetensors", "vae/ae.safetensors"])
        #expect(lock.models.first?.sha256 == sha256Hex(checkpoint) && lock.models.first?.size == 8192)
        let workflows = try #require(lock.workflows)
        #expect(workflows.count == 1 && workflows[0].name == "wf.json" && workflows[0].unresolved == ["Mystery Node"])
        #expect(workflows[0].nodes.contains("GetNode") && workflows[0].models.contains("vae/ae.safetensors"))
        // Locking the lock again changes nothing, its workflows included.
        let again = try await provision(["lock", output, "-o", "-"])
        let written = try String(contentsOfFile: output, encoding: .utf8)
        #expect(again.status == 0 && again.output == written, "\(again.output)")
    }

    @Test func configNodesJSONOfTheOldSystemLocksThroughAMirror() async throws {
        let f = try await LockFixture()
        let mirror = f.folder.appendingPathComponent("mirror")
        let text = try String(contentsOfFile: fixture("config_nodes.json"), encoding: .utf8)
        let document = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        var entries = try #require(document["custom_nodes"] as? [[String: Any]])
        #expect(entries.count == 42)
        for index in entries.indices {
            let url = try #require(entries[index]["url"] as? String)
            let path = String(url.dropFirst("https://github.com/".count))
            let repository = try await LocalRepository.create(at: mirror.appendingPathComponent(path), files: ["__init__.py": "# \(path)\n"])
            if let branch = entries[index]["branch"] as? String {
                try await git(["branch", branch], in: repository.path)
            }
            if entries[index]["commit"] != nil {
                // The pinned upstream commit does not exist in a local stand-in: pin the stand-in's.
                entries[index]["commit"] = try await repository.head()
            }
        }
        let config = try write(json(["custom_nodes": entries]), to: "config_nodes.json", in: f.folder)
        let output = f.folder.appendingPathComponent("config.lock").path
        let result = try await provision(["lock", config, "-o", output, "--allow-local-sources", "--mirror", "https://github.com/=file://\(mirror.path)/", "--concurrency", "8"], timeout: .seconds(300))
        #expect(result.status == 0, "\(result.output)")
        let lock = try Lockfile.load(path: output)
        #expect(lock.customNodes.count == 42 && lock.customNodes.allSatisfy { Git.isFullCommit($0.commit) })
        let emprops = try #require(lock.customNodes.first { $0.name == "emprops_comfy_nodes" })
        #expect(emprops.url == "https://github.com/stakeordie/emprops_comfy_nodes.git" && emprops.env?["AWS_DEFAULT_REGION"] == "${AWS_DEFAULT_REGION}")
        #expect(lock.customNodes.first { $0.name == "ComfyUI-LLaVA-OneVision" }?.branch == "add-video-dependencies")
        #expect(lock.customNodes.first { $0.name == "comfyui-prompt-reader-node" }?.recursive == true)
    }
}
