import ComponentSpec
import Foundation
import JobCore

/// The `verify` job kind: checks the workspace against what the plan installed, at the end of a plan
/// (protocols/schemas/job-payloads/verify.schema.json). Fails, not retried, naming every mismatch.
package struct VerifyExecutor: JobExecutor {
    /// The folder that holds `ComfyUI/` (and `venv/`).
    package var workspace: String
    package var python: String?
    /// Where the plan's downloads went (the worker's `--models-root`); default `<workspace>/ComfyUI/models`.
    package var modelsRoot: String?

    package init(workspace: String, python: String? = nil, modelsRoot: String? = nil) {
        self.workspace = workspace
        self.python = python
        self.modelsRoot = modelsRoot
    }

    package func run(_ attempt: JobAttempt<VerifyPayload>, context: JobContext) async throws -> String {
        let (target, deep) = Self.target(attempt.payload)
        let report = await Verifier(workspace: workspace, deep: deep, python: python, modelsRoot: modelsRoot).verify(target)
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

    /// What the payload asks to check (its rules were checked when it was decoded).
    static func target(_ payload: VerifyPayload) -> (VerificationTarget, Bool) {
        var target = VerificationTarget()
        target.nodes = payload.nodes ?? []
        target.models = (payload.models ?? []).map { model in
            var model = model
            model.sha256 = model.sha256?.lowercased()
            return model
        }
        target.comfyuiCommit = payload.comfyui?.commit
        target.pythonPackages = payload.pythonPackages ?? []
        return (target, payload.deep ?? false)
    }
}
