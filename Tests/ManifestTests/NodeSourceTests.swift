import Foundation
import JobCore
@testable import ComponentSpec
import Planning
import TestSupport
import Testing

/// Types ComfyUI-Manager's map lacks, settled by what the workflow says (cnr_id, aux_id) or by the
/// candidates' own NODE_CLASS_MAPPINGS, read without running their code.
@Suite("Node types the map lacks", .serialized)
struct NodeSourceTests {
    @Test func aCnrIDThatIsTheRepositoryNameResolvesAClassTheMapLacks() throws {
        let registry = try testRegistry()
        // The registry id of chflame163/ComfyUI_LayerStyle is comfyui_layerstyle; Manager's is layerstyle.
        for cnr in ["comfyui_layerstyle", "ComfyUI-LayerStyle", "layerstyle"] {
            guard case .package(let package, let via) = registry.resolve("LayerUtility: NotInTheMap", cnrID: cnr) else {
                Issue.record("\(cnr) did not resolve")
                continue
            }
            #expect(package.repository == "https://github.com/chflame163/ComfyUI_LayerStyle" && via == "properties", "\(cnr)")
        }
        guard case .package(let byAux, _) = registry.resolve("Anything", auxID: "someone/not-in-registry") else {
            Issue.record("aux_id did not resolve")
            return
        }
        #expect(byAux.repository == "https://github.com/someone/not-in-registry")
        #expect(registry.resolve("LayerUtility: NotInTheMap", cnrID: "no-such-pack") == .unresolved)
    }

    @Test func theScannerReadsMappingsWithoutRunningCode() {
        let source = #"""
        from .nodes import *
        NODE_CLASS_MAPPINGS = {
            "Plain Node": Plain,   # a comment with "Fake": 1
            'Single': Single, "Nested": make({"NotAKey": 1}),
            r"Raw\Name": Raw,
            f"Computed{x}": Computed,
            """Triple""": T,
        }
        NODE_CLASS_MAPPINGS["Assigned"] = A
        NODE_CLASS_MAPPINGS.update({"Updated": U})
        EXTRA_NODE_CLASS_MAPPINGS = {"Extra": E}
        NODE_DISPLAY_NAME_MAPPINGS = {"Display Only": "x"}
        if NODE_CLASS_MAPPINGS == {"Compared": 1}: pass
        """#
        let names = NodeClassScanner.classNames(inPython: source)
        #expect(names == ["Plain Node", "Single", "Nested", "Raw\\Name", "Triple", "Assigned", "Updated", "Extra"], "\(names.sorted())")
        #expect(NodeClassScanner.classNames(inPython: "NODE_CLASS_MAPPINGS = {\"unterminated: 1") == [])
    }

    @Test func lockSettlesTypesTheMapLacksFromTheCandidatesSource() async throws {
        let f = try await LockFixture()
        let mirror = f.folder.appendingPathComponent("github")
        for (path, file) in [("kijai/ComfyUI-KJNodes", "kj.py"), ("city96/ComfyUI-GGUF", "gguf.py"), ("Derfuu/Derfuu_ComfyUI_ModdedNodes", "df.py"), ("rgthree/rgthree-comfy", "r.py")] {
            _ = try await LocalRepository.create(at: mirror.appendingPathComponent(path), files: [file: "X = 1\n"])
        }
        // Both claimants exist; only bob's registers the ambiguous type.
        _ = try await LocalRepository.create(at: mirror.appendingPathComponent("alice/captioner"), files: ["c.py": "NODE_CLASS_MAPPINGS = {\"OtherCaptioner\": C}\n"])
        let bob = try await LocalRepository.create(at: mirror.appendingPathComponent("bob/captioner-nodes"), files: ["nodes/captions.py": "NODE_CLASS_MAPPINGS = {\n    \"ImageCaptioner\": Captioner,\n}\n"])
        // The unknown type is registered by a node the manifest installs; its code would fail if run.
        let mystery = try await LocalRepository.create(at: f.folder.appendingPathComponent("repos/mystery"), files: [
            "__init__.py": "raise SystemExit('never run')\nNODE_CLASS_MAPPINGS = {}\nNODE_CLASS_MAPPINGS['Mystery Node'] = M\n",
        ])
        var text = try String(contentsOfFile: fixture("workflow-ui.json"), encoding: .utf8)
        text = text.replacingOccurrences(of: "https://huggingface.co/org/", with: "\(f.origin.base)/hf/org/")
        _ = try f.origin.addFile("ae.safetensors", size: 4096, seed: 3)
        let checkpoint = try f.origin.addFile("base.safetensors", size: 8192, seed: 4)
        text = text.replacingOccurrences(of: "31E35C80FC4829D14F90153F4C74CD59C90B779F6AFE05A74CD6145A2E6EF5D6", with: sha256Hex(checkpoint).uppercased())
        let workflow = try write(text, to: "wf.json", in: f.folder)
        let manifest = try write(json(["custom_nodes": [["name": "mystery", "url": mystery.url]]]), to: "m.json", in: f.folder)
        let output = f.folder.appendingPathComponent("wf.lock").path
        let locked = try await provision([
            "lock", workflow, manifest, "-o", output, "--registry", fixture("registry/extension-node-map.json"), "--allow-local-sources", "--allow-loopback",
            "--mirror", "https://github.com/=file://\(mirror.path)/", "--allow-unresolved",
        ])
        #expect(locked.status == 0, "\(locked.output)")
        #expect(!locked.output.contains("not pinned: node type"), "\(locked.output)")
        #expect(locked.output.contains("settled ImageCaptioner: https://github.com/bob/captioner-nodes registers it in its NODE_CLASS_MAPPINGS"), "\(locked.output)")
        let lock = try Lockfile.load(path: output)
        let nodes = Dictionary(uniqueKeysWithValues: lock.customNodes.map { ($0.name, $0) })
        #expect(nodes["captioner-nodes"]?.commit == (try await bob.head()) && nodes["captioner-nodes"]?.provides == ["ImageCaptioner"], "\(nodes.keys.sorted())")
        #expect(nodes["captioner"] == nil)
        #expect(nodes["mystery"]?.provides == ["Mystery Node"])
        #expect(lock.workflows?.first?.unresolved == nil && lock.workflows?.first?.ambiguous == nil)
    }

    @Test func anIncludedRequirementsFileIsFollowedOnlyInsideTheNode() {
        #expect(Git.includedFile("-r extra.txt", from: "requirements.txt") == "extra.txt")
        #expect(Git.includedFile("--requirement=sub/b.txt", from: "reqs/r.txt") == "reqs/sub/b.txt")
        #expect(Git.includedFile("-r ../base.txt", from: "reqs/r.txt") == "base.txt")
        #expect(Git.includedFile("-r ./a/../b.txt", from: "requirements.txt") == "b.txt")
        for outside in ["-r ../x.txt", "-r /etc/passwd", "-r https://example.com/r.txt", "-r C:\\r.txt", "-r ..", "numpy", "-e .", "-r"] {
            #expect(Git.includedFile(outside, from: "requirements.txt") == nil, "\(outside)")
        }
    }

    @Test func lockPinsGitRequirementLinesAndThePlanCarriesThePinsAndAllowances() async throws {
        let f = try await LockFixture()
        let mirror = f.folder.appendingPathComponent("github")
        // Mirrors are named like `git clone --mirror` names them; git finds NAME.git for a URL without it.
        let package = try await LocalRepository.create(at: mirror.appendingPathComponent("acme/gitpkg.git"), files: ["setup.py": "# v1\n"])
        try await git(["tag", "v1"], in: package.path)
        let v1 = try await package.head()
        try await package.commit(["setup.py": "# later\n"], message: "after v1")
        let helper = try await LocalRepository.create(at: mirror.appendingPathComponent("acme/helper.git"), files: ["setup.py": "# helper\n"])
        // A tag that looks like an abbreviated commit is still a tag.
        try await git(["tag", "20240101"], in: helper.path)
        let node = try await LocalRepository.create(at: mirror.appendingPathComponent("acme/was-like-node.git"), files: [
            "requirements.txt": "numpy\r\ngit+https://github.com/acme/gitpkg.git@v1#egg=gitpkg\r\n-r requirements/extra.txt\n",
            // An included file's git lines are pinned too; an include back to the first file is read
            // once, and one that leaves the node is not followed.
            "requirements/extra.txt": "helper @ git+https://github.com/acme/helper@20240101  # a date-like tag\n--requirement=../requirements.txt\n-r ../../outside.txt\n",
        ])
        let manifest = try write(json(["custom_nodes": [
            ["name": "was-like", "url": "https://github.com/acme/was-like-node", "allow_outside": true],
        ]]), to: "m.json", in: f.folder)
        let output = f.folder.appendingPathComponent("pins.lock").path
        let locked = try await provision(["lock", manifest, "-o", output, "--allow-local-sources", "--mirror", "https://github.com/=file://\(mirror.path)/"])
        #expect(locked.status == 0, "\(locked.output)")
        guard locked.status == 0 else { return }
        let lock = try Lockfile.load(path: output)
        let entry = try #require(lock.customNodes.first)
        #expect(entry.commit == (try await node.head()) && entry.allowOutside == true)
        #expect(entry.gitRequirements == ["https://github.com/acme/gitpkg": v1, "https://github.com/acme/helper": try await helper.head()], "\(entry.gitRequirements ?? [:])")
        let plan = try await provision(["plan", output])
        #expect(plan.status == 0, "\(plan.output)")
        let deps = try #require((try JSONValue.parse(plan.output))["jobs"]?.array?.first { $0["kind"]?.string == "python-deps" })
        #expect(deps["payload"]?["git_pins"]?["https://github.com/acme/gitpkg"]?.string == v1)
        #expect(deps["payload"]?["allow_outside_nodes"]?.array?.compactMap(\.string) == ["was-like"])
        try await validateAgainstSchema(plan.output, schema: "plan.schema.json", payloads: true)
        try await validateAgainstSchema(try String(contentsOfFile: output, encoding: .utf8), schema: "lockfile.schema.json")
    }
}
