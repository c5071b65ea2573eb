import ComponentSpec
import Foundation
import JobCore
import Planning
import TestSupport
import Testing

/// A manifest's node, a lockfile's node and a `node` job share their source fields (`NodeSource`)
/// but keep their own JSON: flat objects, the same keys, each with its own rules for `name` and
/// `commit`.
@Suite("Node fields shared by manifests, lockfiles and node jobs")
struct NodeFieldsTests {
    static let commit = String(repeating: "a", count: 40)

    static func sorted<T: Encodable>(_ value: T) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }

    @Test func theSampleLockfileIsWrittenBackToTheSameBytes() throws {
        let url = packageRoot().appendingPathComponent("protocols/examples/lockfile-sample.json")
        let bytes = try Data(contentsOf: url)
        let lock = try Lockfile.parse(bytes, name: url.path)
        #expect(lock.customNodes.count == 4 && lock.customNodes[0].provides == ["FaceDetailer", "SAMLoader"])
        #expect(String(decoding: lock.encoded(), as: UTF8.self) == String(decoding: bytes, as: UTF8.self))
    }

    @Test func everyFieldStaysFlatWithItsKey() throws {
        let env = ["K": "${V}"]
        let custom = CustomNode(
            name: "n", url: "https://github.com/o/n", commit: "abcdef1", tag: "v1", branch: "main", recursive: true, requirements: false, env: env,
            installOrder: 2, allowOutside: true)
        #expect(try Self.sorted(custom) == #"{"allow_outside":true,"branch":"main","commit":"abcdef1","env":{"K":"${V}"},"install_order":2,"name":"n","recursive":true,"requirements":false,"tag":"v1","url":"https://github.com/o/n"}"#)
        let locked = LockedNode(
            name: "n", url: "https://github.com/o/n", commit: Self.commit, tag: "v1", recursive: true, requirements: true, env: env, installOrder: 1,
            provides: ["T"], allowOutside: false, gitRequirements: ["https://github.com/o/r": Self.commit])
        #expect(try Self.sorted(locked) == #"{"allow_outside":false,"commit":"\#(Self.commit)","env":{"K":"${V}"},"git_requirements":{"https://github.com/o/r":"\#(Self.commit)"},"install_order":1,"name":"n","provides":["T"],"recursive":true,"requirements":true,"tag":"v1","url":"https://github.com/o/n"}"#)
        let payload = NodePayload(name: "n", url: "https://github.com/o/n", branch: "main", force: true)
        #expect(payload.encoded() == #"{"branch":"main","force":true,"name":"n","url":"https://github.com/o/n"}"#)
        // Absent fields are left out, and what was written reads back the same.
        #expect(try Self.sorted(CustomNode(name: "n", url: "https://h/n")) == #"{"name":"n","url":"https://h/n"}"#)
        #expect(try JSONDecoder().decode(CustomNode.self, from: JSONEncoder().encode(custom)) == custom)
        #expect(try JSONDecoder().decode(LockedNode.self, from: JSONEncoder().encode(locked)) == locked)
        #expect(try NodePayload.decode(payload.encoded()) == payload)
    }

    @Test func eachDocumentKeepsItsRulesForNameAndCommit() throws {
        // A manifest may leave the name out (the repository's), and reads url first.
        let spec = try Discovery.merge([("m.json", Data(#"{"custom_nodes": [{"url": "https://github.com/o/ComfyUI-Thing.git"}]}"#.utf8))])
        #expect(spec.customNodes.map(\.name) == ["ComfyUI-Thing"] && spec.customNodes[0].commit == nil)
        #expect(throws: SpecError.malformed(file: "m.json", what: "spec or discovery response", detail: "custom_nodes[0] has no url")) {
            try Discovery.merge([("m.json", Data(#"{"custom_nodes": [{"commit": 7}]}"#.utf8))])
        }
        // A lockfile needs a name and a commit.
        let unnamed = #"{"lock_version": 1, "custom_nodes": [{"url": "https://h/n", "commit": "\#(Self.commit)"}]}"#
        #expect(throws: SpecError.malformed(file: "l.json", what: "lockfile", detail: "custom_nodes[0] has no name")) {
            try Lockfile.parse(Data(unnamed.utf8), name: "l.json")
        }
        let unpinned = #"{"lock_version": 1, "custom_nodes": [{"name": "n", "url": "https://h/n", "tag": 7}]}"#
        #expect(throws: SpecError.malformed(file: "l.json", what: "lockfile", detail: "custom_nodes[0] has no commit")) {
            try Lockfile.parse(Data(unpinned.utf8), name: "l.json")
        }
        // A node job needs a name, read before url; its commit is optional.
        do throws(JobFailure) {
            _ = try NodePayload.decode(#"{"commit": 7}"#)
            Issue.record("a node job without a name was accepted")
        } catch {
            #expect(error.message == "the node payload is malformed: it has no name", "\(error.message)")
        }
        #expect(try NodePayload.decode(#"{"name": "n", "url": "https://h/n"}"#) == NodePayload(name: "n", url: "https://h/n"))
    }

    @Test func aLockedNodeBecomesAJobPinnedToItsCommitAlone() throws {
        let lock = Lockfile(customNodes: [
            LockedNode(name: "n", url: "https://github.com/o/n", commit: Self.commit, tag: "v1", recursive: true, env: [:], installOrder: 3)
        ])
        let plan = PlanBuilder().plan(for: lock)
        guard case .object(let top) = plan, case .array(let jobs) = top["jobs"],
            let node = jobs.first(where: { if case .object(let job) = $0 { return job["id"] == .string("node:n") } else { return false } }),
            case .object(let job) = node, case .object(let payload) = job["payload"]
        else {
            Issue.record("no node job in \(PlanBuilder.encode(plan))")
            return
        }
        // The tag stays in the lock for people; the job is pinned by the commit, and an empty env is left out.
        #expect(Set(payload.keys) == ["name", "url", "commit", "recursive", "install_order"], "\(payload.keys.sorted())")
        #expect(payload["commit"] == .string(Self.commit))
    }
}
