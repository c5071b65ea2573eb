import ComponentSpec
import Downloader
import Foundation
import JobCore

/// An input given to `lock`, `plan` or `export`, told apart by its content.
package enum SpecDocument: Sendable {
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
    package static func load(path: String, workflowLimits: WorkflowLimits = WorkflowLimits()) throws(DocumentError) -> SpecDocument {
        let data: Data
        do { data = try readInput(path: path, what: "input", limit: workflowLimits.json.maxBytes) } catch { throw .spec(error) }
        let document: JSONValue
        do {
            document = try JSONValue.parse(data, limits: workflowLimits.json)
        } catch {
            throw .notJSON(file: path, detail: "\(error)")
        }
        guard let top = document.object else { throw .notADocument(file: path, found: document.kindDescription) }
        do throws(SpecError) {
            switch Kind(top) {
            case .lockfile: return .lockfile(try Lockfile.parse(data, name: path))
            case .discovery: return .spec(try Discovery.merge([(path, data)]))
            case .manifest:
                let spec = try decodeDocument(Spec.self, from: data, name: path, what: "manifest")
                try SpecRules.validate(spec, name: path)
                return .spec(spec)
            case .workflow: break
            }
        } catch {
            throw .spec(error)
        }
        var hasher = SHA256Hasher()
        hasher.update(data)
        do {
            return .workflow(try Workflow.parse(document, name: path, limits: workflowLimits), sha256: hasher.finalize())
        } catch {
            throw .workflow(error)
        }
    }
}

/// Why an input of `lock`, `plan` or `analyze --prefer` cannot be used, as one sentence.
package enum DocumentError: Error, Sendable, Equatable, CustomStringConvertible {
    case notJSON(file: String, detail: String)
    /// JSON that is not an object; `found` says what it is instead.
    case notADocument(file: String, found: String)
    case spec(SpecError)
    case workflow(WorkflowError)

    package var description: String {
        switch self {
        case .notJSON(let file, let detail): clippedSentence("The file \(file) is not valid JSON: \(detail).")
        case .notADocument(let file, let found): "The file \(file) is \(found), not a manifest, lockfile or workflow object."
        case .spec(let error): error.description
        case .workflow(let error): error.description
        }
    }
}
