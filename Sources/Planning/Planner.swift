import ComponentSpec
import WorkflowAnalysis
import Foundation
import JobCore

/// The one way inputs become a plan: `provision plan`, `enqueue --spec` and `up --spec` all call it,
/// so the same documents give the same jobs wherever they are planned.
package enum Planner {
    /// A lockfile alone plans its exact pins; manifests, `config_nodes.json` and discovery
    /// responses are merged in the order given (defaults first). Workflows must be locked first.
    package static func plan(_ documents: [(name: String, data: Data)], builder: PlanBuilder) throws(PlanError) -> JSONValue {
        guard !documents.isEmpty else { throw .nothingToPlan }
        var lockfiles: [Lockfile] = []
        for (name, data) in documents {
            let value: JSONValue
            do {
                value = try JSONValue.parse(data, limits: JSONLimits(maxBytes: 64 << 20, maxDepth: 64))
            } catch {
                throw .notJSON(file: name, detail: "\(error)")
            }
            guard let top = value.object else { throw .notAnObject(file: name, found: value.kindDescription) }
            switch SpecDocument.Kind(top) {
            case .lockfile:
                do { lockfiles.append(try Lockfile.parse(data, name: name)) } catch { throw .spec(error) }
            case .workflow:
                throw .unlockedWorkflow(file: name)
            case .discovery, .manifest: break
            }
        }
        if let lock = lockfiles.first {
            guard documents.count == 1 else {
                throw .lockfileNotAlone(files: documents.map(\.name))
            }
            return builder.plan(for: lock)
        }
        do { return builder.plan(for: try Discovery.merge(documents)) } catch { throw .spec(error) }
    }
}

/// Why inputs cannot be planned, as one sentence naming the file.
package enum PlanError: Error, Sendable, Equatable, CustomStringConvertible {
    case nothingToPlan
    case notJSON(file: String, detail: String)
    /// JSON that is not an object; `found` says what it is instead.
    case notAnObject(file: String, found: String)
    /// A workflow given to `plan`: it names node types, not pinned packages.
    case unlockedWorkflow(file: String)
    case lockfileNotAlone(files: [String])
    case spec(SpecError)

    package var description: String {
        switch self {
        case .nothingToPlan: "Nothing to plan: name a manifest, lockfile or config_nodes.json."
        case .notJSON(let file, let detail): clippedSentence("The spec \(file) is not valid JSON: \(detail).")
        case .notAnObject(let file, let found): "The spec \(file) is \(found), not a JSON object."
        case .unlockedWorkflow(let file): "\(file) is a workflow: pin it first with `provision lock \(file) --output provision.lock`, then plan the lock."
        case .lockfileNotAlone(let files):
            "A lockfile is planned alone: it already holds everything the machine gets (\(files.joined(separator: ", ")))."
        case .spec(let error): error.description
        }
    }
}
