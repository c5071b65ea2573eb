import Foundation
import ComponentSpec
import WorkflowAnalysis
import TestSupport
import Testing

@Suite("Workflow analysis")
struct WorkflowAnalysisTests {
    func analyze(_ names: [String]) throws -> Analysis {
        let workflows = try names.map { name -> (workflow: Workflow, sha256: String?) in
            (try Workflow.load(path: fixture(name)), nil)
        }
        return try WorkflowAnalyzer(registry: try testRegistry()).analyze(workflows)
    }

    @Test func uiFormatWithNestedSubgraphsUsedTwiceMutedAndBypassedNodes() throws {
        let analysis = try analyze(["workflow-ui.json"])
        let workflow = try #require(analysis.workflows.first)
        #expect(workflow.format == .ui)
        // Two instances of the outer subgraph, each with one instance of the inner one.
        #expect(workflow.subgraphInstances == 4)
        #expect(workflow.nodeCount == 10 + 2 * (2 + 4))
        func node(_ type: String) -> AnalyzedNode? { analysis.nodes.first { $0.classType == type } }

        // Nodes inside the subgraph used twice count twice; nested two deep too.
        #expect(node("VAELoader")?.count == 2 && node("VAELoader")?.builtin == true)
        #expect(node("UnetLoaderGGUF")?.count == 2)
        #expect(node("DualCLIPLoader")?.occurrences.active == 2)
        // Muted and bypassed nodes are reported and marked.
        #expect(node("LoraLoader")?.occurrences.muted == 1 && node("LoraLoader")?.inactive == true)
        #expect(node("LoraLoaderModelOnly")?.occurrences.bypassed == 2 && node("LoraLoaderModelOnly")?.inactive == true)
        #expect(node("ImageResizeKJ")?.inactive == true && node("ImageResizeKJ")?.occurrences.bypassed == 1)
        #expect(node("KSampler")?.inactive == false)

        // Resolution: the node's own cnr_id, a preemption over a fork, a nodename_pattern, aux_id, the
        // registry's entry for ComfyUI itself.
        #expect(node("ImageResizeKJ")?.package == "comfyui-kjnodes" && node("ImageResizeKJ")?.resolvedBy == "properties")
        #expect(node("ImageResizeKJ")?.version == "1.1.0")
        #expect(node("GetNode")?.repository == "https://github.com/kijai/ComfyUI-KJNodes" && node("GetNode")?.resolvedBy == "registry")
        #expect(node("UnetLoaderGGUF")?.repository == "https://github.com/city96/ComfyUI-GGUF" && node("UnetLoaderGGUF")?.resolvedBy == "preemption")
        #expect(node("DF_Integer")?.repository == "https://github.com/Derfuu/Derfuu_ComfyUI_ModdedNodes" && node("DF_Integer")?.resolvedBy == "pattern")
        #expect(node("Power Lora Loader (rgthree)")?.package == "rgthree-comfy")
        #expect(node("BrandNewCoreNode")?.builtin == true)
        #expect(node("Note")?.builtin == true)

        // The ambiguous type lists its candidates and is not guessed; the unknown one is unresolved.
        #expect(node("ImageCaptioner") == nil)
        let ambiguous = try #require(analysis.ambiguous.first)
        #expect(analysis.ambiguous.count == 1 && ambiguous.classType == "ImageCaptioner")
        #expect(ambiguous.candidates.map(\.repository) == ["https://github.com/alice/captioner", "https://github.com/bob/captioner-nodes"])
        #expect(analysis.unresolved.map(\.classType) == ["Mystery Node"])

        let kj = try #require(analysis.packages.first { $0.package == "comfyui-kjnodes" })
        #expect(kj.classTypes == ["GetNode", "ImageResizeKJ"] && kj.inactive == false)
    }

    @Test func uiFormatModelsFromPropertiesAndWidgets() throws {
        let analysis = try analyze(["workflow-ui.json"])
        let models = Dictionary(uniqueKeysWithValues: analysis.models.map { (($0.directory ?? "?") + "/" + $0.filename, $0) })
        #expect(Set(models.keys) == [
            "checkpoints/SDXL/base.safetensors", "vae/ae.safetensors", "diffusion_models/flux1-dev-Q4_K_S.gguf",
            "text_encoders/t5/t5xxl_fp8.safetensors", "text_encoders/clip_l.safetensors", "loras/style/ink.safetensors",
            "loras/inner-lora.safetensors", "upscale_models/4x-UltraSharp.pth", "loras/flux/detail.safetensors",
        ])
        // properties.models with a hash (upper case in the file), and without one.
        let checkpoint = try #require(models["checkpoints/SDXL/base.safetensors"])
        #expect(checkpoint.sha256 == "31e35c80fc4829d14f90153f4c74cd59c90b779f6afe05a74cd6145a2e6ef5d6")
        #expect(checkpoint.url == "https://huggingface.co/org/sdxl/resolve/main/base.safetensors?download=true")
        #expect(checkpoint.count == 1)
        let vae = try #require(models["vae/ae.safetensors"])
        #expect(vae.sha256 == nil && vae.url == "https://huggingface.co/org/flux/resolve/main/ae.safetensors" && vae.count == 2)
        // Muted / bypassed loaders: their models are still listed, marked.
        #expect(models["loras/style/ink.safetensors"]?.inactive == true)
        #expect(models["loras/inner-lora.safetensors"]?.inactive == true)
        #expect(models["diffusion_models/flux1-dev-Q4_K_S.gguf"]?.inactive == false)
        // The Note's text is not a model.
        #expect(!analysis.models.contains { $0.filename.contains("notes") })
    }

    @Test func apiFormatLoaderInputsWithSubfolders() throws {
        let analysis = try analyze(["workflow-api.json"])
        #expect(analysis.workflows.first?.format == .api)
        let models = Set(analysis.models.map { ($0.directory ?? "?") + "/" + $0.filename })
        #expect(models == [
            "checkpoints/SDXL/base.safetensors", "clip_vision/clip_vision_h.safetensors", "text_encoders/t5/t5xxl_fp8.safetensors",
            "text_encoders/clip_l.safetensors", "controlnet/SDXL/canny.safetensors", "loras/detail.safetensors",
            "diffusion_models/wan2.1_t2v_14B_fp8.safetensors", "?/mystery.bin", "diffusion_models/flux/flux1-dev.safetensors",
            "diffusion_models/flux1-dev-Q4_K_S.gguf", "vae/ae.safetensors",
        ])
        #expect(analysis.models.first { $0.filename == "mystery.bin" }?.directory == nil)
        #expect(analysis.ambiguous.map(\.classType) == ["ImageCaptioner"])
        #expect(Set(analysis.unresolved.map(\.classType)) == ["SomeCustomLoader", "WanVideoModelLoader"])
    }

    @Test func bothFormatsTogetherMergeModelsAndCountWorkflows() throws {
        let analysis = try analyze(["workflow-ui.json", "workflow-api.json"])
        let checkpoint = try #require(analysis.models.first { $0.filename == "SDXL/base.safetensors" })
        // The API workflow names it too: one entry, the UI's URL and hash kept, both workflows listed.
        #expect(checkpoint.directory == "checkpoints" && checkpoint.sha256 != nil && checkpoint.workflows.count == 2)
        #expect(checkpoint.sources == ["input", "properties"] && checkpoint.count == 2)
        #expect(analysis.nodes.first { $0.classType == "UnetLoaderGGUF" }?.count == 3)
    }

    @Test func jsonOutputOfTheCLIHasTheDocumentedShape() async throws {
        let result = try await provision(["analyze", "--json", "--registry", fixture("registry/extension-node-map.json"), fixture("workflow-ui.json")])
        #expect(result.status == 0, "\(result.output)")
        let document = try #require(try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any])
        for key in ["nodes", "models", "unresolved", "ambiguous", "packages", "workflows", "registry"] { #expect(document[key] != nil, "\(key)") }
        let nodes = try #require(document["nodes"] as? [[String: Any]])
        #expect(nodes.allSatisfy { $0["class_type"] is String && $0["package"] is String && $0["repository"] is String })
        let models = try #require(document["models"] as? [[String: Any]])
        // Every model carries filename, directory, url and sha256, null when unknown.
        #expect(models.allSatisfy { model in ["filename", "directory", "url", "sha256"].allSatisfy { model.keys.contains($0) } })
        #expect(models.contains { $0["sha256"] is NSNull })
        // Validated against protocols/schemas/analysis.schema.json.
        try await validateAgainstSchema(result.output, schema: "analysis.schema.json")

        let strict = try await provision(["analyze", "--strict", "--registry", fixture("registry/extension-node-map.json"), fixture("workflow-ui.json")])
        #expect(strict.status == 2 && strict.output.contains("Mystery Node"))
    }

    @Test func aSubgraphThatContainsItselfIsRefused() throws {
        let text = """
            {"nodes": [{"id": 1, "type": "loop"}], "links": [],
             "definitions": {"subgraphs": [{"id": "loop", "nodes": [{"id": 1, "type": "loop"}], "links": []}]}}
            """
        #expect(throws: WorkflowError.recursiveSubgraph(file: "w.json", subgraph: "loop")) {
            _ = try WorkflowAnalyzer(registry: NodeRegistry()).analyze([(try Workflow.parse(Data(text.utf8), name: "w.json"), nil)])
        }
    }

    @Test func largeSyntheticWorkflowIsAnalysedQuickly() throws {
        // 20,000 nodes in the root, plus a subgraph of 500 nodes used 40 times.
        var nodes: [String] = []
        for i in 1...20_000 {
            let type = ["KSampler", "CheckpointLoaderSimple", "GetNode", "LoraLoader", "ImageResizeKJ"][i % 5]
            let value = type == "CheckpointLoaderSimple" ? "ckpt_\(i / 5 % 150).safetensors" : type == "LoraLoader" ? "lora_\(i / 5 % 150).safetensors" : "text"
            nodes.append(#"{"id": \#(i), "type": "\#(type)", "mode": \#(i % 7 == 0 ? 4 : 0), "widgets_values": ["\#(value)", 1.0, 1.0]}"#)
        }
        for i in 1...40 { nodes.append(#"{"id": \#(100_000 + i), "type": "big"}"#) }
        let inner = (1...500).map { #"{"id": \#($0), "type": "VAELoader", "widgets_values": ["vae_\#($0 % 10).safetensors"]}"# }
        let links = (1..<20_000).map { "[\($0), \($0), 0, \($0 + 1), 0, \"MODEL\"]" }
        let text = #"{"nodes": [\#(nodes.joined(separator: ","))], "links": [\#(links.joined(separator: ","))], "definitions": {"subgraphs": [{"id": "big", "nodes": [\#(inner.joined(separator: ","))], "links": []}]}}"#
        let start = ContinuousClock.now
        let workflow = try Workflow.parse(Data(text.utf8), name: "large.json")
        let parsed = ContinuousClock.now
        let analysis = try WorkflowAnalyzer(registry: try testRegistry()).analyze([(workflow, nil)])
        let done = ContinuousClock.now
        print("large workflow: \(text.utf8.count) bytes, 20,000 nodes + 40 × 500 in a subgraph: parse \(parsed - start), analysis \(done - parsed)")
        #expect(analysis.workflows.first?.nodeCount == 20_000 + 40 * 500)
        #expect(analysis.nodes.first { $0.classType == "VAELoader" }?.count == 20_000)
        #expect(analysis.models.count == 300 + 10)
        print("analysed the large workflow in \(done - start)")
    }
}

/// Validates JSON text against protocols/schemas/NAME with the test venv's jsonschema.
func validateAgainstSchema(_ text: String, schema: String, payloads: Bool = false) async throws {
    let folder = try makeTemporaryDirectory("schema")
    defer { try? FileManager.default.removeItem(at: folder) }
    let instance = try write(text, to: "instance.json", in: folder)
    let script = """
        import json, sys, pathlib
        from jsonschema import Draft202012Validator
        schemas = pathlib.Path(sys.argv[1])
        instance = json.load(open(sys.argv[3]))
        problems = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in Draft202012Validator(json.load(open(schemas / sys.argv[2]))).iter_errors(instance)]
        if sys.argv[4] == "1":
            for job in instance.get("jobs", []):
                path = schemas / "job-payloads" / f"{job['kind']}.schema.json"
                if path.exists():
                    problems += [f"job {job['id']}: {e.message}" for e in Draft202012Validator(json.load(open(path))).iter_errors(job.get("payload", {}))]
        print("\\n".join(problems) if problems else "valid")
        sys.exit(1 if problems else 0)
        """
    let python = ProcessInfo.processInfo.environment["PROVISION_PYTHON"] ?? "python3"
    let result = try await run(python, ["-c", script, packageRoot().appendingPathComponent("protocols/schemas").path, schema, instance, payloads ? "1" : "0"])
    #expect(result.status == 0, "\(schema): \(result.output)")
}
