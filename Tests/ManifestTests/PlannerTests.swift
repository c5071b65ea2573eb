import Foundation
import JobCore
import JobQueue
import ComponentSpec
import Planning
import RedisClient
import TestSupport
import Testing

/// `provision plan`, `enqueue --spec` and `up --spec` share one planner: the same inputs give the
/// same jobs wherever they are planned.
@Suite("One planner for plan, enqueue and up", .serialized)
struct PlannerTests {
    /// Every spec the project ships as an example, alone, and a manifest merged with defaults.
    func inputs(in folder: URL) throws -> [[String]] {
        let base = try write(#"{"comfyui": {"url": "https://github.com/comfyanonymous/ComfyUI", "tag": "v0.3.40"}, "python": {"packages": ["insightface==0.7.3"]}, "custom_nodes": [{"name": "extra", "url": "https://github.com/o/extra"}]}"#, to: "base.json", in: folder)
        let examples = packageRoot().appendingPathComponent("protocols/examples")
        let manifest = examples.appendingPathComponent("manifest-sample.json").path
        let lock = examples.appendingPathComponent("lockfile-sample.json").path
        return [[manifest], [lock], [fixture("config_nodes.json")], [fixture("config_nodes.json"), base]]
    }

    /// The jobs of a plan as comparable text: id, kind, dependencies and payload, in order.
    func jobs(_ plan: JSONValue) -> [String] {
        (plan["jobs"]?.array ?? []).map { job in
            let deps = (job["depends_on"]?.array ?? []).compactMap(\.string).sorted().joined(separator: ",")
            let payload = job["payload"].map { PlanBuilder.encode($0, pretty: false) } ?? "{}"
            return "\(job["id"]?.string ?? "?") \(job["kind"]?.string ?? "?") [\(deps)] \(payload)"
        }
    }

    @Test func aManifestWithNodesKeepsComfyUIAndPython() throws {
        let path = packageRoot().appendingPathComponent("protocols/examples/manifest-sample.json").path
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let spec = try Discovery.merge([(path, data)])
        #expect(spec.comfyui?.tag == "v0.3.40")
        #expect(spec.python?.packages == ["insightface==0.7.3"])
        let plan = try Planner.plan([(path, data)], builder: PlanBuilder(planID: "p"))
        let kinds = (plan["jobs"]?.array ?? []).compactMap { $0["kind"]?.string }
        #expect(kinds.filter { $0 == "comfyui" }.count == 1)
        let verify = try #require((plan["jobs"]?.array ?? []).first { $0["kind"]?.string == "verify" })
        #expect(verify["payload"]?["python_packages"]?.array?.compactMap(\.string) == ["insightface==0.7.3"])
    }

    @Test func twoManifestsThatDisagreeOnComfyUIAreRefused() throws {
        let a = Data(#"{"comfyui": {"url": "https://github.com/comfyanonymous/ComfyUI", "tag": "v1"}, "custom_nodes": []}"#.utf8)
        let b = Data(#"{"comfyui": {"url": "https://github.com/comfyanonymous/ComfyUI", "tag": "v2"}}"#.utf8)
        #expect(throws: SpecError.self) { try Discovery.merge([("a.json", a), ("b.json", b)]) }
        let plan = try Planner.plan([("a.json", a), ("a2.json", a)], builder: PlanBuilder(planID: "p"))
        #expect((plan["jobs"]?.array ?? []).contains { $0["kind"]?.string == "comfyui" })
    }

    @Test func planEnqueueAndUpGiveTheSameJobs() async throws {
        let folder = try makeTemporaryDirectory("planner")
        defer { try? FileManager.default.removeItem(at: folder) }
        let redis = try await TestRedis()
        defer { redis.stop() }
        let client = try redis.client()
        for (index, specs) in try inputs(in: folder).enumerated() {
            let printed = try await provision(["plan"] + specs + ["--machine", "m\(index)"])
            #expect(printed.status == 0, "\(printed.output)")
            let expected = jobs(try JSONValue.parse(printed.output))
            #expect(!expected.isEmpty)

            // enqueue --spec: the jobs as stored in Redis.
            let enqueued = try await provision(["enqueue"] + specs.flatMap { ["--spec", $0] }, environment: ["REDIS_URL": redis.url, "MACHINE_ID": "m\(index)"])
            #expect(enqueued.status == 0, "\(enqueued.output)")
            #expect(enqueued.output.contains("enqueued \(expected.count) jobs"), "\(specs): \(enqueued.output) vs \(expected.count) planned")
            let queue = try JobQueue(redis: client, machine: "m\(index)")
            let planID = try #require(try await queue.status().planID)
            let stored = try await queue.jobs(plan: planID).map { fields in
                let deps = (try? JSONValue.parse(fields["depends_on"] ?? "[]"))?.array?.compactMap(\.string).sorted().joined(separator: ",") ?? ""
                let payload = (try? JSONValue.parse(fields["payload"] ?? "{}")).map { PlanBuilder.encode($0, pretty: false) } ?? "{}"
                return "\(fields["id"] ?? "?") \(fields["kind"] ?? "?") [\(deps)] \(payload)"
            }
            #expect(stored.sorted() == expected.sorted(), "\(specs)")
        }
    }

    @Test func theInstallScriptsJobComesAfterPythonDeps() throws {
        let spec = Data(#"{"custom_nodes": [{"name": "b", "url": "https://github.com/o/b", "install_order": 1}, {"name": "a", "url": "https://github.com/o/a", "env": {"K": "${V}"}}]}"#.utf8)
        let plan = try Planner.plan([("spec.json", spec)], builder: PlanBuilder(planID: "p"))
        let scripts = try #require((plan["jobs"]?.array ?? []).first { $0["kind"]?.string == "install-scripts" })
        #expect(scripts["depends_on"]?.array?.compactMap(\.string) == ["python-deps"])
        #expect(scripts["payload"]?["nodes"]?.array?.compactMap { $0["name"]?.string } == ["b", "a"])
        #expect(scripts["payload"]?["nodes"]?.array?.last?["env"]?["K"]?.string == "${V}")
    }
}
