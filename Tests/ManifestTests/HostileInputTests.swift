import Foundation
import ComponentSpec
import JobCore
import Planning
import WorkflowAnalysis
import TestSupport
import Testing

@Suite("Malformed and hostile workflows give one clear sentence")
struct HostileInputTests {
    func refusal(_ text: String) -> String? {
        do {
            var limits = WorkflowLimits()
            limits.strictLinks = true
            let workflow = try Workflow.parse(Data(text.utf8), name: "w.json", limits: limits)
            _ = try WorkflowAnalyzer(registry: NodeRegistry()).analyze([(workflow, nil)])
            return nil
        } catch {
            return error.description
        }
    }

    @Test(arguments: [
        ("{\"nodes\": [", "The workflow w.json is not valid JSON: the document ends where a value was expected at line 1, column 12."),
        ("not json at all", "The workflow w.json is not valid JSON: unexpected character 'n' at line 1, column 1."),
        ("", "The workflow w.json is not valid JSON: the document is empty at line 1, column 1."),
        ("[1, 2, 3]", "The workflow w.json is not a ComfyUI workflow: it is an array, not an object."),
        ("{\"a\": 1}", "The workflow w.json is not a ComfyUI workflow: it has neither a nodes array (UI format) nor nodes with a class_type (API format)."),
        ("{\"nodes\": \"many\"}", "The workflow w.json is not a ComfyUI workflow: its nodes field is a string, not an array."),
        ("{\"nodes\": [42]}", "The workflow w.json is malformed: node 0 is a number, not an object."),
        ("{\"nodes\": [{\"id\": 3}]}", "The workflow w.json is malformed: node 3 has no type."),
        ("{\"nodes\": [{\"id\": 1, \"type\": \"KSampler\"}], \"links\": [[7, 1, 0, 99, 0, \"MODEL\"]]}",
         "The workflow w.json is malformed: link 7 goes to node 99, which does not exist."),
        ("{\"nodes\": [{\"id\": 1, \"type\": \"KSampler\"}], \"links\": [[7, 5, 0, 1, 0, \"MODEL\"]]}",
         "The workflow w.json is malformed: link 7 goes from node 5, which does not exist."),
        ("{\"nodes\": [{\"id\": 1, \"type\": \"sg\"}], \"definitions\": {\"subgraphs\": [{\"id\": \"sg\", \"nodes\": [{\"id\": 1, \"type\": \"VAELoader\"}], \"links\": [{\"id\": 4, \"origin_id\": 1, \"target_id\": 2}]}]}}",
         "The workflow w.json is malformed: link 4 in subgraph sg goes to node 2, which does not exist."),
        ("{\"nodes\": [], \"definitions\": {\"subgraphs\": {\"id\": 1}}}", "The workflow w.json is malformed: definitions.subgraphs is an object, not an array."),
        ("{\"1\": {\"class_type\": \"KSampler\", \"inputs\": {\"model\": [\"9\", 0]}}}",
         "The workflow w.json is malformed: input model of node 1 is linked to node 9, which does not exist."),
        ("{\"1\": {\"class_type\": \"KSampler\", \"inputs\": []}}", "The workflow w.json is malformed: the inputs of node 1 are an array, not an object."),
        ("{\"1\": {\"class_type\": \"KSampler\"}, \"2\": \"x\"}", "The workflow w.json is malformed: node 2 is a string, not an object with a class_type."),
        ("{\"1\": {\"class_type\": \"KSampler\"}, \"2\": {\"inputs\": {}}}", "The workflow w.json is malformed: node 2 has no class_type."),
        ("{\"nodes\": [{\"id\": 1, \"type\": \"A\", \"widgets_values\": [\"\\ud800\"]}]}", nil),
        ("{\"nodes\": [{\"id\": 1, \"type\": \"A\"}]} trailing", "The workflow w.json is not valid JSON: unexpected text after the JSON value at line 1, column 37."),
    ] as [(String, String?)])
    func malformedWorkflows(text: String, expected: String?) {
        #expect(refusal(text) == expected)
    }

    @Test func uiLinksToMissingNodesAreWarningsUnlessStrict() async throws {
        // An official template (image_flux2_klein_image_edit_9b_distilled) has such links; the editor
        // loads it, so the analysis goes on and says so. --strict (and the API format) refuse them.
        let text = #"{"nodes": [{"id": 1, "type": "KSampler"}], "links": [[7, 1, 0, 99, 0, "MODEL"]]}"#
        let workflow = try Workflow.parse(Data(text.utf8), name: "w.json")
        #expect(workflow.warnings == ["link 7 goes to node 99, which does not exist"])
        let analysis = try WorkflowAnalyzer(registry: NodeRegistry()).analyze([(workflow, nil)])
        #expect(analysis.workflows.first?.warnings == ["link 7 goes to node 99, which does not exist"])

        let folder = try makeTemporaryDirectory("links")
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = try write(text, to: "w.json", in: folder)
        let lenient = try await provision(["analyze", "--no-registry", path])
        #expect(lenient.status == 0 && lenient.output.contains("provision: warning: \(path): link 7 goes to node 99, which does not exist."))
        let strict = try await provision(["analyze", "--no-registry", "--strict", path])
        #expect(strict.status == 1 && strict.output == "provision: The workflow \(path) is malformed: link 7 goes to node 99, which does not exist.\n")
    }

    /// Found by bench/fuzz: a link to a node whose id was 1 MiB long printed a 1 MiB warning, and
    /// `--strict` a 1 MiB error.
    @Test func aHugeIdQuotedInAMessageIsShortened() throws {
        let id = String(repeating: "x", count: 1 << 20)
        let text = #"{"nodes": [{"id": 1, "type": "KSampler"}], "links": [[7, 1, 0, ""# + id + #"", 0, "MODEL"]]}"#
        let workflow = try Workflow.parse(Data(text.utf8), name: "w.json")
        let warning = try #require(workflow.warnings.first)
        // The run cut is "x…x," (the comma is part of it): its first 80 and last 20 characters.
        #expect(warning == "link 7 goes to node " + String(repeating: "x", count: 80) + "…" + String(repeating: "x", count: 19) + ", which does not exist")
        let error = try #require(refusal(text))
        #expect(error.count < 300 && error.hasPrefix("The workflow w.json is malformed: link 7 goes to node xxx"), "\(error.prefix(300))")
    }

    @Test func deepNestingStopsAtTheDepthLimit() {
        let text = String(repeating: "[", count: 1_000_000)
        #expect(refusal(text) == "The workflow w.json is not valid JSON: arrays and objects are nested more than 128 levels deep at line 1, column 129.")
        let objects = String(repeating: "{\"a\":", count: 200_000)
        #expect(refusal("{\"nodes\": [], \"x\": " + objects)?.contains("nested more than 128 levels deep") == true)
    }

    @Test func oversizedAndUnreadableFilesThroughTheCLI() async throws {
        let folder = try makeTemporaryDirectory("hostile")
        defer { try? FileManager.default.removeItem(at: folder) }
        // 100 MB of nesting: refused by size before it is read.
        let big = folder.appendingPathComponent("big.json")
        let chunk = Data(repeating: UInt8(ascii: "["), count: 1 << 20)
        _ = FileManager.default.createFile(atPath: big.path, contents: nil)
        let handle = try FileHandle(forWritingTo: big)
        for _ in 0..<100 { handle.write(chunk) }
        try handle.close()
        let oversized = try await provision(["analyze", "--no-registry", big.path])
        #expect(oversized.status == 1)
        #expect(oversized.output == "provision: The workflow \(big.path) is 104857600 bytes, more than the limit of 67108864.\n")

        // 10 MB of nesting under the size limit: the depth limit, one line, no crash.
        let deep = folder.appendingPathComponent("deep.json")
        try Data(repeating: UInt8(ascii: "["), count: 10 << 20).write(to: deep)
        let nested = try await provision(["analyze", "--no-registry", deep.path])
        #expect(nested.status == 1)
        #expect(nested.output == "provision: The workflow \(deep.path) is not valid JSON: arrays and objects are nested more than 128 levels deep at line 1, column 129.\n")

        let missing = try await provision(["analyze", "--no-registry", folder.appendingPathComponent("nope.json").path])
        #expect(missing.status == 1 && missing.output.contains("cannot be read: No such file or directory."), "\(missing.output)")
        let directory = try await provision(["analyze", "--no-registry", folder.path])
        #expect(directory.status == 1 && directory.output.contains("is not a regular file."))
        let binary = folder.appendingPathComponent("binary.json")
        try Data([0xFF, 0xFE, 0x00, 0x01]).write(to: binary)
        let garbage = try await provision(["analyze", "--no-registry", binary.path])
        #expect(garbage.status == 1 && garbage.output.split(separator: "\n").count == 1, "\(garbage.output)")
        let broken = try write(#"{"1": {"class_type": "KSampler", "inputs": {"model": ["9", 0]}}}"#, to: "broken.json", in: folder)
        let link = try await provision(["analyze", "--no-registry", broken])
        #expect(link.status == 1 && link.output == "provision: The workflow \(broken) is malformed: input model of node 1 is linked to node 9, which does not exist.\n")
    }

    @Test func tooManyNodesAndValuesAreRefused() {
        var limits = WorkflowLimits()
        limits.maxNodesPerGraph = 100
        let nodes = (1...101).map { #"{"id": \#($0), "type": "A"}"# }.joined(separator: ",")
        #expect(throws: WorkflowError.tooMany(file: "w.json", count: 101, what: "nodes", limit: 100)) {
            _ = try Workflow.parse(Data(#"{"nodes": [\#(nodes)]}"#.utf8), name: "w.json", limits: limits)
        }
        var nesting = WorkflowLimits()
        nesting.maxNesting = 3
        let chain = (0..<6).map { i in #"{"id": "s\#(i)", "nodes": [{"id": 1, "type": "s\#(i + 1)"}]}"# }.joined(separator: ",")
        let text = #"{"nodes": [{"id": 1, "type": "s0"}], "definitions": {"subgraphs": [\#(chain)]}}"#
        #expect(throws: WorkflowError.nestedTooDeep(file: "w.json", limit: 3)) {
            _ = try WorkflowAnalyzer(registry: NodeRegistry(), limits: nesting).analyze([(try Workflow.parse(Data(text.utf8), name: "w.json", limits: nesting), nil)])
        }
    }

    @Test func aRegistryOfTheWrongShapeIsRefused() async {
        #expect(throws: RegistryError.notAMap(source: "r.json", kind: "an array")) {
            _ = try NodeRegistry(extensionMap: Data("[]".utf8), source: "r.json")
        }
        #expect(RegistryError.notAMap(source: "r.json", kind: "an array").description
            == "The node registry r.json is not an extension-node-map: it is an array, not an object of repositories.")
        #expect(throws: RegistryError.malformedEntry(source: "r.json", repository: "https://x/y")) {
            _ = try NodeRegistry(extensionMap: Data(#"{"https://x/y": {"a": 1}}"#.utf8), source: "r.json")
        }
        // A token in a repository URL does not reach the sentence.
        let secret = RegistryError.malformedEntry(source: "r.json", repository: "https://user:ghp_secret@github.com/o/r")
        #expect(secret.description == "The node registry r.json is not an extension-node-map: the entry for https://***@github.com/o/r is not [[names], {…}].")
        await #expect(throws: RegistryError.unreadable(path: "/nonexistent/r.json", reason: "cannot be read: No such file or directory")) {
            try await RegistryStore(cacheDirectory: NSTemporaryDirectory()).load(override: "/nonexistent/r.json")
        }
    }
}

/// Each WorkflowError case reads as the one sentence the CLI prints.
@Suite("Workflow errors are one sentence naming the file")
struct WorkflowErrorTests {
    @Test func casesReadAsSentences() {
        #expect(WorkflowError.tooMany(file: "w.json", count: 101, what: "nodes", limit: 100).description == "The workflow w.json has 101 nodes, more than the limit of 100.")
        #expect(WorkflowError.nestedTooDeep(file: "w.json", limit: 3).description == "The workflow w.json nests subgraphs more than 3 levels deep.")
        #expect(WorkflowError.recursiveSubgraph(file: "w.json", subgraph: "loop").description == "The workflow w.json is malformed: subgraph loop contains itself.")
        #expect(WorkflowError.tooManySubgraphs(file: "w.json", limit: 8).description == "The workflow w.json has more than 8 subgraph definitions.")
        // A quoted id of any length stays a readable sentence.
        let long = WorkflowError.malformed(file: "w.json", problem: "node \(String(repeating: "x", count: 5000)) has no type").description
        #expect(long.count < 200 && long.hasPrefix("The workflow w.json is malformed: node ") && long.hasSuffix(" has no type."))
    }
}

/// SpecError, DocumentError and PlanError carry the file and the field, and read as one sentence.
@Suite("Spec errors are one sentence naming the file and the field")
struct SpecErrorTests {
    @Test func aModelURLWithCredentialsIsShownWithoutThem() throws {
        let path = try makeTemporaryDirectory("spec-error").appendingPathComponent("spec.json").path
        let spec = #"{"models": [{"url": "ftp://user:secret@example.com/m.bin?token=abc", "directory": "vae", "filename": "m.bin"}]}"#
        try Data(spec.utf8).write(to: URL(fileURLWithPath: path))
        do throws(DocumentError) {
            _ = try SpecDocument.load(path: path)
            Issue.record("a model with an ftp URL was accepted")
        } catch {
            guard case .spec(.notDownloadable(let file, let model, let url)) = error else {
                Issue.record("unexpected error \(error)")
                return
            }
            #expect(file == path && model == "vae/m.bin")
            #expect(!url.contains("secret") && !url.contains("token"))
            #expect(!error.description.contains("secret") && error.description.hasSuffix("only http and https URLs can be downloaded."))
        }
    }

    @Test func lockfileChecksNameTheFileAndTheNode() throws {
        let lock = #"{"lock_version": 1, "custom_nodes": [{"name": "a", "url": "https://example.com/a", "commit": "abc"}], "models": []}"#
        #expect(throws: SpecError.notFullCommit(file: "l.lock", subject: "a", commit: "abc")) {
            _ = try Lockfile.parse(Data(lock.utf8), name: "l.lock")
        }
        #expect(SpecError.notFullCommit(file: "l.lock", subject: "a", commit: "abc").description
            == "The lockfile l.lock pins a to 'abc', which is not a full 40-digit commit.")
        #expect(LockError.publishedHashDiffers(model: "vae/a.bin", published: "ab", expected: "cd").description
            == "The model vae/a.bin is published with SHA-256 ab, not the cd the spec expects.")
        let ref = LockError.comfyUIRefNotFound(url: "https://user:tok3n@example.com/c.git", ref: "v1").description
        #expect(!ref.contains("tok3n") && ref.hasSuffix("has no tag or branch v1."))
        #expect(PlanError.unlockedWorkflow(file: "w.json").description
            == "w.json is a workflow: pin it first with `provision lock w.json --output provision.lock`, then plan the lock.")
    }
}

/// A spec accepts exactly the names and keys its jobs will: one set of checks (PayloadRules).
@Suite("Spec and payload checks agree")
struct SharedRulesTests {
    @Test func fullwidthHexDigitsAreNotAHashOrACommit() {
        // 61 ASCII digits and one fullwidth "ａ" (3 UTF-8 bytes) are 64 bytes.
        let sneaky = String(repeating: "a", count: 61) + "\u{FF41}"
        #expect(sneaky.utf8.count == 64)
        #expect(!PayloadRules.isSHA256(sneaky))
        #expect(!PayloadRules.isCommit("abc123\u{FF41}"))
        #expect(PayloadRules.isSHA256(String(repeating: "aB", count: 32)))
    }

    @Test func anEnvKeyTheNodeJobWouldRefuseIsRefusedInTheSpec() throws {
        let key = String(repeating: "K", count: 150)
        let spec = Spec(customNodes: [CustomNode(name: "a", url: "https://example.com/a", env: [key: "1"])])
        #expect(throws: SpecError.invalidEnvName(file: "s.json", document: .spec, node: "a", variable: key)) {
            try SpecRules.validate(spec, name: "s.json")
        }
        #expect(throws: JobFailure.self) { try NodePayload(name: "a", url: "https://example.com/a", env: [key: "1"]).validate() }
    }
}
