import ComponentSpec
import Downloader
import Foundation
import JobCore

/// An input given to `lock`, `plan` or `export`, told apart by its content.
public enum SpecDocument: Sendable {
    case lockfile(Lockfile)
    case spec(Spec)
    case workflow(Workflow, sha256: String)

    /// What a JSON object is, by the keys only each kind has.
    package enum Kind {
        case lockfile, discovery, manifest, workflow

        package init(_ top: [String: JSONValue]) {
            if top["lock_version"] != nil {
                self = .lockfile
            } else if Discovery.isResponse(top) {
                self = .discovery
            } else if top["custom_nodes"] != nil || top["comfyui"] != nil || (top["models"] != nil && top["nodes"] == nil) || top["python"] != nil {
                self = .manifest
            } else {
                self = .workflow
            }
        }
    }

    /// Reads a file and decides what it is: a lockfile (`lock_version`), a workflow (UI or API
    /// format), else a manifest or `config_nodes.json`.
    public static func load(path: String, workflowLimits: WorkflowLimits = WorkflowLimits()) throws(ManifestError) -> SpecDocument {
        let data = try readInput(path: path, what: "input", limit: workflowLimits.json.maxBytes)
        let document: JSONValue
        do {
            document = try JSONValue.parse(data, limits: workflowLimits.json)
        } catch {
            throw ManifestError("The file \(path) is not valid JSON: \(error).")
        }
        guard let top = document.object else {
            throw ManifestError("The file \(path) is \(document.kindDescription), not a manifest, lockfile or workflow object.")
        }
        switch Kind(top) {
        case .lockfile: return .lockfile(try Lockfile.parse(data, name: path))
        case .discovery: return .spec(try Discovery.merge([(path, data)]))
        case .manifest:
            let spec = try decodeDocument(Spec.self, from: data, name: path, what: "manifest")
            try SpecRules.validate(spec, name: path)
            return .spec(spec)
        case .workflow: break
        }
        var hasher = SHA256Hasher()
        hasher.update(data)
        do {
            return .workflow(try Workflow.parse(document, name: path, limits: workflowLimits), sha256: hasher.finalize())
        } catch {
            // ManifestError's callers get the sentence until lock and plan have their own error type.
            throw ManifestError(error.description)
        }
    }
}
