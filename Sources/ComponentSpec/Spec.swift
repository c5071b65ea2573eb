import Foundation
import JobCore

/// Our manifest (protocols/schemas/manifest.schema.json). `config_nodes.json` of the system this
/// replaces is a manifest with only `custom_nodes`, and reads the same way.
package struct Spec: Sendable, Equatable, Codable {
    package var comfyui: ComfyUISource?
    package var customNodes: [CustomNode]
    package var models: [ModelFile]
    package var python: PythonRequirements?

    package init(comfyui: ComfyUISource? = nil, customNodes: [CustomNode] = [], models: [ModelFile] = [], python: PythonRequirements? = nil) {
        self.comfyui = comfyui
        self.customNodes = customNodes
        self.models = models
        self.python = python
    }

    enum CodingKeys: String, CodingKey {
        case comfyui, customNodes = "custom_nodes", models, python
    }

    package init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        comfyui = try container.decodeIfPresent(ComfyUISource.self, forKey: .comfyui)
        customNodes = try container.decodeIfPresent([CustomNode].self, forKey: .customNodes) ?? []
        models = try container.decodeIfPresent([ModelFile].self, forKey: .models) ?? []
        python = try container.decodeIfPresent(PythonRequirements.self, forKey: .python)
    }
}

/// Where ComfyUI itself comes from: a repository and one of commit, tag, branch or `ref` (any of them).
package struct ComfyUISource: Sendable, Equatable, Codable {
    package var url: String
    package var commit: String?
    package var tag: String?
    package var branch: String?
    /// A commit, tag or branch: resolved in that order.
    package var ref: String?

    package init(url: String, commit: String? = nil, tag: String? = nil, branch: String? = nil, ref: String? = nil) {
        self.url = url
        self.commit = commit
        self.tag = tag
        self.branch = branch
        self.ref = ref
    }
}

/// One custom node, with `config_nodes.json`'s field names; `name` defaults to the repository's.
package struct CustomNode: Sendable, Equatable, Codable, NodeSourced {
    package var source: NodeSource
    package var commit: String?
    /// The operator lets this node's requirement lines reach outside it (-e, index options, local paths).
    package var allowOutside: Bool?

    package init(name: String, url: String, commit: String? = nil, tag: String? = nil, branch: String? = nil, recursive: Bool? = nil, requirements: Bool? = nil, env: [String: String]? = nil, installOrder: Int? = nil, allowOutside: Bool? = nil) {
        source = NodeSource(name: name, url: url, tag: tag, branch: branch, recursive: recursive, requirements: requirements, env: env, installOrder: installOrder)
        self.commit = commit
        self.allowOutside = allowOutside
    }

    enum CodingKeys: String, CodingKey {
        case commit, allowOutside = "allow_outside"
    }

    package init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        (source, commit) = try NodeSource.decode(from: decoder, nameFromURL: RepositoryURL.repositoryName) {
            try container.decodeIfPresent(String.self, forKey: .commit)
        }
        allowOutside = try container.decodeIfPresent(Bool.self, forKey: .allowOutside)
    }

    package func encode(to encoder: any Encoder) throws {
        try source.encode(to: encoder, with: [CodingKeys.commit: commit, .allowOutside: allowOutside])
    }

    /// The ref the spec pins, or the default branch.
    package var ref: GitRef {
        if let commit { return .commit(commit) }
        if let tag = source.tag { return .tag(tag) }
        if let branch = source.branch { return .branch(branch) }
        return .head
    }
}

/// One model file to place under `models/<directory>/<filename>`.
package struct ModelFile: Sendable, Equatable, Codable {
    package var url: String
    package var directory: String
    package var filename: String
    package var sha256: String?
    package var size: Int64?

    package init(url: String, directory: String, filename: String, sha256: String? = nil, size: Int64? = nil) {
        self.url = url
        self.directory = directory
        self.filename = filename
        self.sha256 = sha256
        self.size = size
    }

    /// `directory/filename`, relative to the models folder.
    package var path: String { directory + "/" + filename }
}

/// Python packages the machine must have (exact pins such as `insightface==0.7.3` are verified).
package struct PythonRequirements: Sendable, Equatable, Codable {
    package var packages: [String]?
    package var constraints: [String]?

    package init(packages: [String]? = nil, constraints: [String]? = nil) {
        self.packages = packages
        self.constraints = constraints
    }
}

/// Rules shared by specs and lockfiles; names and keys are checked by the payload rules (JobCore),
/// so a spec accepts exactly what its jobs will.
package enum SpecRules {
    /// A relative path inside the models folder: no `..`, no absolute path, no control characters.
    package static func checkModelPath(_ path: String, what: String) throws(SpecError) {
        guard !path.isEmpty, path.utf8.count <= 1024, !path.hasPrefix("/") else {
            throw .invalidModelPath(field: what, path: path, problem: .length)
        }
        for part in path.split(separator: "/", omittingEmptySubsequences: false) {
            if part.isEmpty || part == "." || part == ".." || part.hasSuffix(".partial") || part.hasSuffix(".partial.state") || part.hasSuffix(".partial.lock") {
                throw .invalidModelPath(field: what, path: path, problem: .components)
            }
            if part.unicodeScalars.contains(where: { $0.value < 32 || $0.value == 127 || $0 == "\\" }) {
                throw .invalidModelPath(field: what, path: path, problem: .characters)
            }
        }
    }

    /// The checks a spec and a lockfile make of every node alike: a plain folder name, listed once
    /// (case aside), what the document pins (`pins`), then `env` keys that are identifiers.
    package static func checkNodes<Node: NodeSourced>(
        _ nodes: [Node], file: String, document: SpecError.Document, pins: (Node) throws(SpecError) -> Void
    ) throws(SpecError) {
        var seen = Set<String>()
        for node in nodes {
            guard PayloadRules.isNodeName(node.name) else { throw .invalidNodeName(file: file, document: document, name: node.name) }
            guard seen.insert(node.name.lowercased()).inserted else { throw .duplicateNode(file: file, document: document, node: node.name) }
            try pins(node)
            for key in (node.env ?? [:]).keys where !EnvironmentTemplate.isIdentifier(key) {
                throw .invalidEnvName(file: file, document: document, node: node.name, variable: key)
            }
        }
    }

    package static func validate(_ spec: Spec, name: String) throws(SpecError) {
        try checkNodes(spec.customNodes, file: name, document: .spec) { node throws(SpecError) in
            let pins = [node.commit, node.tag, node.branch].compactMap { $0 }
            guard pins.count <= 1 else { throw .conflictingPins(file: name, node: node.name) }
            if let commit = node.commit, !Git.isCommitPrefix(commit) {
                throw .invalidCommitPrefix(file: name, node: node.name, commit: commit)
            }
            if let tag = node.tag { try Git.checkRefName(tag, kind: "tag of \(node.name)") }
            if let branch = node.branch { try Git.checkRefName(branch, kind: "branch of \(node.name)") }
            guard node.url.utf8.count <= 2048, !node.url.isEmpty else { throw .invalidNodeURL(file: name, node: node.name) }
        }
        var paths = Set<String>()
        for model in spec.models {
            try checkModelPath(model.directory, what: "directory of model \(model.filename)")
            try checkModelPath(model.filename, what: "file name of model \(model.filename)")
            guard model.url.lowercased().hasPrefix("https://") || model.url.lowercased().hasPrefix("http://") else {
                throw .notDownloadable(file: name, model: model.path, url: Git.shown(model.url))
            }
            if let sha = model.sha256, !PayloadRules.isSHA256(sha) { throw .invalidSHA256(file: name, document: .spec, model: model.path) }
            if let size = model.size, size < 0 { throw .negativeSize(file: name, document: .spec, model: model.path) }
            guard paths.insert(model.path).inserted else { throw .duplicateModel(file: name, document: .spec, model: model.path) }
        }
        if let comfyui = spec.comfyui {
            let pins = [comfyui.commit, comfyui.tag, comfyui.branch, comfyui.ref].compactMap { $0 }
            guard pins.count <= 1 else { throw .conflictingPins(file: name, node: nil) }
            if let commit = comfyui.commit, !Git.isCommitPrefix(commit) { throw .invalidCommitPrefix(file: name, node: nil, commit: commit) }
            if let tag = comfyui.tag { try Git.checkRefName(tag, kind: "tag of ComfyUI") }
            if let branch = comfyui.branch { try Git.checkRefName(branch, kind: "branch of ComfyUI") }
            if let ref = comfyui.ref, !Git.isCommitPrefix(ref) { try Git.checkRefName(ref, kind: "ref of ComfyUI") }
        }
        for line in (spec.python?.packages ?? []) + (spec.python?.constraints ?? []) {
            guard !line.isEmpty, line.utf8.count <= 500, !line.contains("\n"), !line.hasPrefix("-") else {
                throw .invalidRequirement(file: name, line: line)
            }
        }
    }
}

/// Decodes a Codable document from JSON that was first checked for size and depth, turning
/// decoding errors into one sentence naming the field.
package func decodeDocument<T: Decodable>(_ type: T.Type, from data: Data, name: String, what: String) throws(SpecError) -> T {
    do {
        _ = try JSONValue.parse(data, limits: JSONLimits(maxBytes: 64 << 20, maxDepth: 64))
    } catch {
        throw .notJSON(file: name, what: what, detail: "\(error)")
    }
    do {
        return try JSONDecoder().decode(T.self, from: data)
    } catch let error as DecodingError {
        throw .malformed(file: name, what: what, detail: describe(error))
    } catch {
        throw .malformed(file: name, what: what, detail: "\(error)")
    }
}

package func describe(_ error: DecodingError) -> String {
    func path(_ keys: [any CodingKey]) -> String {
        var text = ""
        for key in keys {
            if let index = key.intValue { text += "[\(index)]" } else { text += (text.isEmpty ? "" : ".") + key.stringValue }
        }
        return text.isEmpty ? "the document" : text
    }
    switch error {
    case .keyNotFound(let key, let context):
        return "\(path(context.codingPath)) has no \(key.stringValue)"
    case .typeMismatch(let type, let context):
        return "\(path(context.codingPath)) must be \(describe(type))"
    case .valueNotFound(let type, let context):
        return "\(path(context.codingPath)) must be \(describe(type)), not null"
    case .dataCorrupted(let context):
        return "\(path(context.codingPath)) is unusable"
    @unknown default:
        return "it does not have the expected shape"
    }
}

private func describe(_ type: Any.Type) -> String {
    switch type {
    case is String.Type: return "a string"
    case is Bool.Type: return "true or false"
    case is Int.Type, is Int64.Type: return "an integer"
    case is Double.Type: return "a number"
    default:
        let name = "\(type)"
        if name.hasPrefix("Array") { return "an array" }
        if name.hasPrefix("Dictionary") { return "an object" }
        return "an object"
    }
}
