import ComponentSpec
import WorkflowAnalysis
import Foundation
import JobCore

/// The one way inputs become a plan: `provision plan`, `enqueue --spec` and `up --spec` all call it,
/// so the same documents give the same jobs wherever they are planned.
public enum Planner {
    /// A lockfile alone plans its exact pins; manifests, `config_nodes.json` and discovery
    /// responses are merged in the order given (defaults first). Workflows must be locked first.
    public static func plan(_ documents: [(name: String, data: Data)], builder: PlanBuilder) throws(ManifestError) -> JSONValue {
        guard !documents.isEmpty else { throw ManifestError("Nothing to plan: name a manifest, lockfile or config_nodes.json.") }
        var lockfiles: [Lockfile] = []
        for (name, data) in documents {
            let value: JSONValue
            do {
                value = try JSONValue.parse(data, limits: JSONLimits(maxBytes: 64 << 20, maxDepth: 64))
            } catch {
                throw ManifestError("The spec \(name) is not valid JSON: \(error).")
            }
            guard let top = value.object else { throw ManifestError("The spec \(name) is \(value.kindDescription), not a JSON object.") }
            switch SpecDocument.Kind(top) {
            case .lockfile: lockfiles.append(try Lockfile.parse(data, name: name))
            case .workflow:
                throw ManifestError("\(name) is a workflow: pin it first with `provision lock \(name) --output provision.lock`, then plan the lock.")
            case .discovery, .manifest: break
            }
        }
        if let lock = lockfiles.first {
            guard documents.count == 1 else {
                throw ManifestError("A lockfile is planned alone: it already holds everything the machine gets (\(documents.map(\.name).joined(separator: ", "))).")
            }
            return builder.plan(for: lock)
        }
        return builder.plan(for: try Discovery.merge(documents))
    }
}
