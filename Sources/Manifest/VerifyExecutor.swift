import Foundation
import JobQueue
import Scheduler

/// The `verify` job kind: checks the workspace against what the plan installed, at the end of a plan
/// (protocols/schemas/job-payloads/verify.schema.json). Fails, not retried, naming every mismatch.
public struct VerifyExecutor: JobExecutor {
    public let kind = "verify"
    /// The folder that holds `ComfyUI/` (and `venv/`).
    public var workspace: String
    public var python: String?

    public init(workspace: String, python: String? = nil) {
        self.workspace = workspace
        self.python = python
    }

    public func validate(payload: String) throws(JobFailure) {
        _ = try decode(payload)
    }

    public func run(_ job: ClaimedJob, context: JobContext) async throws -> String {
        let (target, deep) = try decode(job.payload)
        let report = await Verifier(workspace: workspace, deep: deep, python: python).verify(target)
        if !report.ok {
            let problems = report.problems
            let shown = problems.prefix(10).joined(separator: "; ") + (problems.count > 10 ? "; and \(problems.count - 10) more" : "")
            throw JobFailure(type: "verify_mismatch", message: "\(problems.count) of \(report.checks.count) checks failed: \(shown)", retryable: false)
        }
        let summary: [String: Any] = [
            "checks": report.checks.count, "nodes": target.nodes.count, "models": target.models.count, "deep": deep,
            "python_packages": target.pythonPackages.count, "comfyui": target.comfyuiCommit != nil,
        ]
        let data = try JSONSerialization.data(withJSONObject: summary, options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }

    /// Reads the payload leniently about empty lists (Redis's cjson stores `[]` as `{}`), strictly about the rest.
    func decode(_ text: String) throws(JobFailure) -> (VerificationTarget, Bool) {
        let document: JSONValue
        do {
            document = try JSONValue.parse(text, limits: JSONLimits(maxBytes: 1 << 20, maxDepth: 16))
        } catch {
            throw .invalidPayload("a verify job needs a JSON object payload")
        }
        guard let fields = document.object else { throw .invalidPayload("a verify job needs a JSON object payload") }
        func list(_ key: String) throws(JobFailure) -> [JSONValue] {
            guard let value = fields[key] else { return [] }
            if let items = value.array { return items }
            if let object = value.object, object.isEmpty { return [] }
            throw .invalidPayload("\(key) must be an array")
        }
        var target = VerificationTarget()
        for item in try list("nodes") {
            guard let name = item["name"]?.string, SpecRules.isNodeName(name) else {
                throw .invalidPayload("each node needs a name that is a valid folder name")
            }
            guard let commit = item["commit"]?.string, Git.isFullCommit(commit) else {
                throw .invalidPayload("node \(name) needs a 40-digit lowercase commit")
            }
            target.nodes.append(.init(name: name, commit: commit))
        }
        for item in try list("models") {
            guard let path = item["path"]?.string else { throw .invalidPayload("each model needs a path") }
            do {
                try SpecRules.checkModelPath(path, what: "model path")
            } catch {
                throw .invalidPayload(error.description)
            }
            let size = item["size"]?.int
            if item["size"] != nil, size == nil || (size ?? 0) < 0 { throw .invalidPayload("the size of \(path) must be a non-negative integer") }
            let sha256 = item["sha256"]?.string
            if let sha256, !isSHA256(sha256) { throw .invalidPayload("the sha256 of \(path) must be 64 hexadecimal digits") }
            target.models.append(.init(path: path, size: size.map(Int64.init), sha256: sha256?.lowercased()))
        }
        if let comfyui = fields["comfyui"] {
            guard let commit = comfyui["commit"]?.string, Git.isFullCommit(commit) else { throw .invalidPayload("comfyui.commit must be a 40-digit lowercase commit") }
            target.comfyuiCommit = commit
        }
        for item in try list("python_packages") {
            guard let line = item.string, !line.isEmpty, line.utf8.count <= 500 else { throw .invalidPayload("python_packages must be requirement strings") }
            target.pythonPackages.append(line)
        }
        let deep = fields["deep"]?.bool ?? false
        return (target, deep)
    }
}
