import Foundation
import JobCore
import TestSupport
import Testing

/// One contract per job kind: the Swift payload types the planner encodes and the worker decodes
/// are the published JSON Schemas (`protocols/schemas/job-payloads/KIND.schema.json`), field for field.
@Suite("Job payload types match their published schemas", .serialized)
struct PayloadContractTests {
    /// Samples that together set every field a kind has (some fields exclude each other).
    static let samples: [(kind: String, texts: [String])] = [
        (ComfyUIPayload.kind, [
            ComfyUIPayload(url: "https://github.com/comfyanonymous/ComfyUI", tag: "v0.3.40", requirements: true, force: false).encoded(),
            ComfyUIPayload(url: "https://github.com/comfyanonymous/ComfyUI", commit: String(repeating: "a", count: 40)).encoded(),
            ComfyUIPayload(url: "https://github.com/comfyanonymous/ComfyUI", branch: "master").encoded(),
        ]),
        (NodePayload.kind, [
            NodePayload(name: "n", url: "https://github.com/o/n", commit: "abcdef1", recursive: true, requirements: false, env: ["K": "${V}"], installOrder: 2, force: true).encoded(),
            NodePayload(name: "n", url: "https://github.com/o/n", tag: "v1").encoded(),
            NodePayload(name: "n", url: "https://github.com/o/n", branch: "main").encoded(),
        ]),
        (PythonDepsPayload.kind, [PythonDepsPayload(
            nodes: ["a"], allowOutside: true, constraints: ["torch==2.5.0"], allowOutsideNodes: ["a"],
            gitPins: ["https://github.com/o/r": String(repeating: "e", count: 40)]).encoded()]),
        (InstallScriptsPayload.kind, [InstallScriptsPayload(nodes: [.init(name: "a", env: ["K": "v"]), .init(name: "b")]).encoded()]),
        (DownloadPayload.kind, [
            DownloadPayload(url: "https://h/f", directory: "vae", filename: "f.safetensors", sha256: String(repeating: "0", count: 64), size: 1, connections: 8, headers: ["X-A": "b"]).encoded(),
            DownloadPayload(url: "https://h/f", path: "vae/f.safetensors").encoded(),
        ]),
        (VerifyPayload.kind, [
            VerifyPayload(
                nodes: [.init(name: "a", commit: String(repeating: "b", count: 40))], models: [.init(path: "vae/f", size: 3, sha256: String(repeating: "c", count: 64))],
                deep: true, comfyui: .init(commit: String(repeating: "d", count: 40)), pythonPackages: ["x==1"]).encoded(),
        ]),
        (SleepPayload.kind, [SleepPayload(ms: 5, fail: .init(message: "m", untilAttempt: 1, retryable: false), progressBytes: 10, progressEveryMs: 20).encoded()]),
        (NoopPayload.kind, [NoopPayload().encoded()]),
        (ServicesPayload.kind, [ServicesPayload(nodes: ["a"], classTypes: ["KSampler"], deadlineSeconds: 30).encoded()]),
    ]

    @Test func everyKindHasASchemaWithTheSameFields() async throws {
        #expect(Set(Self.samples.map(\.kind)) == Set(JobKinds.all.map { $0.kind }), "a kind without samples here")
        for (kind, texts) in Self.samples {
            let schemaURL = packageRoot().appendingPathComponent("protocols/schemas/job-payloads/\(kind).schema.json")
            let schema = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: schemaURL)) as? [String: Any], "\(kind)")
            let published = Set((schema["properties"] as? [String: Any] ?? [:]).keys)
            var carried = Set<String>()
            for text in texts {
                let object = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
                carried.formUnion(object.keys)
                try await validateAgainstSchema(text, schema: "job-payloads/\(kind).schema.json")
            }
            #expect(carried == published, "\(kind): Swift carries \(carried.sorted()), the schema publishes \(published.sorted())")
        }
    }

    @Test func payloadsAreDecodedOnceWithTheirRules() throws {
        // The queue's cjson stores an empty list as {}: read as empty.
        let verify = try VerifyPayload.decode(#"{"nodes": {}, "models": [], "python_packages": {}}"#)
        #expect(verify.nodes == [] && verify.pythonPackages == [])
        let broken = #"{"name": "n", "url": 7}"#
        do throws(JobFailure) {
            _ = try NodePayload.decode(broken)
            Issue.record("a number as url was accepted")
        } catch {
            #expect(error.type == "invalid_payload" && error.message.contains("url"), "\(error.message)")
        }
        #expect(throws: JobFailure.self) { try NodePayload(name: "../x", url: "https://h/x").validate() }
        #expect(throws: JobFailure.self) { try NodePayload(name: "x", url: "https://h/x", commit: "abcdef1", tag: "v1").validate() }
        #expect(throws: JobFailure.self) { try DownloadPayload(url: "https://h/f").validate() }
    }
}
