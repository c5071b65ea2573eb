import Downloader
import Foundation
import JobCore

/// Everything a machine needs, pinned: ComfyUI and every custom node at a commit, every model with
/// its size and SHA-256 (protocols/schemas/lockfile.schema.json). Written deterministically: the same
/// inputs give the same bytes.
package struct Lockfile: Sendable, Equatable, Codable {
    package static let currentVersion = 1

    package var lockVersion: Int
    package var comfyui: LockedRepository?
    package var customNodes: [LockedNode]
    package var models: [LockedModel]
    package var python: PythonRequirements?
    /// The workflows the lock was made from, and what each needs (for reports).
    package var workflows: [LockedWorkflow]?

    package init(comfyui: LockedRepository? = nil, customNodes: [LockedNode] = [], models: [LockedModel] = [], python: PythonRequirements? = nil, workflows: [LockedWorkflow]? = nil) {
        self.lockVersion = Self.currentVersion
        self.comfyui = comfyui
        self.customNodes = customNodes
        self.models = models
        self.python = python
        self.workflows = workflows
    }

    enum CodingKeys: String, CodingKey {
        case lockVersion = "lock_version", comfyui, customNodes = "custom_nodes", models, python, workflows
    }

    package init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        lockVersion = try container.decode(Int.self, forKey: .lockVersion)
        comfyui = try container.decodeIfPresent(LockedRepository.self, forKey: .comfyui)
        customNodes = try container.decodeIfPresent([LockedNode].self, forKey: .customNodes) ?? []
        models = try container.decodeIfPresent([LockedModel].self, forKey: .models) ?? []
        python = try container.decodeIfPresent(PythonRequirements.self, forKey: .python)
        workflows = try container.decodeIfPresent([LockedWorkflow].self, forKey: .workflows)
    }

    /// Sorted lists, so that encoding is stable.
    package func normalized() -> Lockfile {
        var copy = self
        copy.customNodes.sort { $0.name.lowercased() == $1.name.lowercased() ? $0.name < $1.name : $0.name.lowercased() < $1.name.lowercased() }
        copy.models.sort { $0.path < $1.path }
        copy.workflows?.sort { $0.name < $1.name }
        if var python = copy.python {
            python.packages = python.packages.map { Array(Set($0)).sorted() }
            python.constraints = python.constraints.map { Array(Set($0)).sorted() }
            copy.python = python
        }
        return copy
    }

    /// The canonical bytes: sorted keys and lists, two-space indentation, a final newline.
    package func encoded() -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        // Encoding plain structs of strings and numbers cannot fail.
        let data = (try? encoder.encode(normalized())) ?? Data("{}".utf8)
        return data + Data("\n".utf8)
    }

    package static func load(path: String) throws(SpecError) -> Lockfile {
        let data = try readInput(path: path, what: "lockfile", limit: 64 << 20)
        return try parse(data, name: path)
    }

    package static func parse(_ data: Data, name: String) throws(SpecError) -> Lockfile {
        let lock = try decodeDocument(Lockfile.self, from: data, name: name, what: "lockfile")
        guard lock.lockVersion == currentVersion else {
            throw .unsupportedLockVersion(file: name, version: lock.lockVersion, supported: currentVersion)
        }
        try lock.validate(name: name)
        return lock
    }

    package func validate(name: String) throws(SpecError) {
        if let comfyui, !Git.isFullCommit(comfyui.commit) {
            throw .notFullCommit(file: name, subject: "ComfyUI", commit: comfyui.commit)
        }
        try SpecRules.checkNodes(customNodes, file: name, document: .lockfile) { node throws(SpecError) in
            guard Git.isFullCommit(node.commit) else { throw .notFullCommit(file: name, subject: node.name, commit: node.commit) }
        }
        var paths = Set<String>()
        for model in models {
            try SpecRules.checkModelPath(model.directory, what: "directory of model \(model.filename)")
            try SpecRules.checkModelPath(model.filename, what: "file name of model \(model.filename)")
            guard PayloadRules.isSHA256(model.sha256) else { throw .invalidSHA256(file: name, document: .lockfile, model: model.path) }
            guard model.size >= 0 else { throw .negativeSize(file: name, document: .lockfile, model: model.path) }
            guard paths.insert(model.path).inserted else { throw .duplicateModel(file: name, document: .lockfile, model: model.path) }
        }
    }
}

/// A repository pinned to a commit (ComfyUI itself).
package struct LockedRepository: Sendable, Equatable, Codable {
    package var url: String
    package var commit: String
    /// What the spec asked for (a tag or branch name), kept for people reading the lock.
    package var tag: String?
    package var branch: String?

    package init(url: String, commit: String, tag: String? = nil, branch: String? = nil) {
        self.url = url
        self.commit = commit
        self.tag = tag
        self.branch = branch
    }
}

/// A custom node pinned to a commit.
package struct LockedNode: Sendable, Equatable, Codable, NodeSourced {
    /// Where it comes from; its tag or branch is what the spec asked for, kept for people reading the lock.
    package var source: NodeSource
    package var commit: String
    /// The node types of the analysed workflows it provides.
    package var provides: [String]?
    /// The operator lets this node's requirement lines reach outside it.
    package var allowOutside: Bool?
    /// Commits of the git repositories its requirements name (`git+https://…`), by URL (lower
    /// case, no `.git`): what the lock pinned their refs to.
    package var gitRequirements: [String: String]?

    package init(name: String, url: String, commit: String, tag: String? = nil, branch: String? = nil, recursive: Bool? = nil, requirements: Bool? = nil, env: [String: String]? = nil, installOrder: Int? = nil, provides: [String]? = nil, allowOutside: Bool? = nil, gitRequirements: [String: String]? = nil) {
        let source = NodeSource(name: name, url: url, tag: tag, branch: branch, recursive: recursive, requirements: requirements, env: env, installOrder: installOrder)
        self.init(source: source, commit: commit, provides: provides, allowOutside: allowOutside, gitRequirements: gitRequirements)
    }

    package init(source: NodeSource, commit: String, provides: [String]? = nil, allowOutside: Bool? = nil, gitRequirements: [String: String]? = nil) {
        self.source = source
        self.commit = commit
        self.provides = provides
        self.allowOutside = allowOutside
        self.gitRequirements = gitRequirements
    }

    enum CodingKeys: String, CodingKey {
        case commit, provides, allowOutside = "allow_outside", gitRequirements = "git_requirements"
    }

    package init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        (source, commit) = try NodeSource.decode(from: decoder) { try container.decode(String.self, forKey: .commit) }
        provides = try container.decodeIfPresent([String].self, forKey: .provides)
        allowOutside = try container.decodeIfPresent(Bool.self, forKey: .allowOutside)
        gitRequirements = try container.decodeIfPresent([String: String].self, forKey: .gitRequirements)
    }

    package func encode(to encoder: any Encoder) throws {
        try source.encode(to: encoder, with: [CodingKeys.commit: commit, .provides: provides, .allowOutside: allowOutside, .gitRequirements: gitRequirements])
    }
}

/// A model file with the size and SHA-256 it must have.
package struct LockedModel: Sendable, Equatable, Codable {
    package var url: String
    package var directory: String
    package var filename: String
    package var sha256: String
    package var size: Int64
    /// The URL the spec gave when the lock pinned it to a revision (Hugging Face `/resolve/main/` → `/resolve/<commit>/`).
    package var sourceURL: String?

    package init(url: String, directory: String, filename: String, sha256: String, size: Int64, sourceURL: String? = nil) {
        self.url = url
        self.directory = directory
        self.filename = filename
        self.sha256 = sha256
        self.size = size
        self.sourceURL = sourceURL
    }

    enum CodingKeys: String, CodingKey {
        case url, directory, filename, sha256, size, sourceURL = "source_url"
    }

    package var path: String { directory + "/" + filename }
}

/// What one analysed workflow needs.
package struct LockedWorkflow: Sendable, Equatable, Codable {
    package var name: String
    package var sha256: String
    package var format: WorkflowFormat
    /// Custom node types (built-in types left out).
    package var nodes: [String]
    /// `directory/filename` of every model.
    package var models: [String]
    package var unresolved: [String]?
    package var ambiguous: [String]?

    package init(name: String, sha256: String, format: WorkflowFormat, nodes: [String], models: [String], unresolved: [String]? = nil, ambiguous: [String]? = nil) {
        self.name = name
        self.sha256 = sha256
        self.format = format
        self.nodes = nodes
        self.models = models
        self.unresolved = unresolved
        self.ambiguous = ambiguous
    }
}
