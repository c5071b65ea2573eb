/// `comfyui`: ComfyUI cloned at its pin into `<workspace>/ComfyUI`, its requirements installed.
package struct ComfyUIPayload: JobPayload, Equatable {
    package static let kind = "comfyui"
    package static let step = JobStep.customNodes

    package var url: String
    package var commit: String?
    package var tag: String?
    package var branch: String?
    package var requirements: Bool?
    package var force: Bool?

    package init(url: String, commit: String? = nil, tag: String? = nil, branch: String? = nil, requirements: Bool? = nil, force: Bool? = nil) {
        self.url = url
        self.commit = commit
        self.tag = tag
        self.branch = branch
        self.requirements = requirements
        self.force = force
    }

    package func validate() throws(JobFailure) {
        try PayloadRules.checkPin(commit: commit, tag: tag, branch: branch, owner: "comfyui")
    }
}

/// `node`: one custom node cloned at its pin into `custom_nodes/NAME`, with its `.env`. Field names
/// follow `config_nodes.json`.
package struct NodePayload: JobPayload, Equatable, NodeSourced {
    package static let kind = "node"
    package static let step = JobStep.customNodes

    package var source: NodeSource
    package var commit: String?
    package var force: Bool?

    enum CodingKeys: String, CodingKey {
        case commit, force
    }

    package init(
        name: String, url: String, commit: String? = nil, tag: String? = nil, branch: String? = nil, recursive: Bool? = nil,
        requirements: Bool? = nil, env: [String: String]? = nil, installOrder: Int? = nil, force: Bool? = nil
    ) {
        let source = NodeSource(
            name: name, url: url, tag: tag, branch: branch, recursive: recursive, requirements: requirements, env: env, installOrder: installOrder)
        self.init(source: source, commit: commit, force: force)
    }

    package init(source: NodeSource, commit: String? = nil, force: Bool? = nil) {
        self.source = source
        self.commit = commit
        self.force = force
    }

    package init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        (source, commit) = try NodeSource.decode(from: decoder) { try container.decodeIfPresent(String.self, forKey: .commit) }
        force = try container.decodeIfPresent(Bool.self, forKey: .force)
    }

    package func encode(to encoder: any Encoder) throws {
        try source.encode(to: encoder, with: [CodingKeys.commit: commit, .force: force])
    }

    package func validate() throws(JobFailure) {
        guard PayloadRules.isNodeName(source.name) else {
            throw .invalidPayload("the node name '\(source.name.prefix(60))' must be a plain folder name (letters, digits, '.', '_', '-')")
        }
        try PayloadRules.checkPin(commit: commit, tag: source.tag, branch: source.branch, owner: "node \(source.name)")
        try PayloadRules.checkEnvironmentKeys(source.env, owner: "node \(source.name)")
    }
}

/// `python-deps`: every node's requirements resolved together, then installed once.
package struct PythonDepsPayload: JobPayload, Equatable {
    package static let kind = "python-deps"
    package static let step = JobStep.customNodes

    /// Node folders whose requirements to include (default: every installed node with a requirements.txt).
    package var nodes: [String]?
    /// Allow requirement lines that reach outside the node (-e, index options, local paths).
    package var allowOutside: Bool?
    /// Extra constraint lines (pins).
    package var constraints: [String]?
    /// Nodes whose requirement lines may reach outside (the manifest's per-node `allow_outside`).
    package var allowOutsideNodes: [String]?
    /// Commits of the git repositories requirement lines name (`git+https://…`), by URL (lower
    /// case, no `.git`): the lock's pins, used in place of the lines' refs.
    package var gitPins: [String: String]?

    enum CodingKeys: String, CodingKey {
        case nodes, allowOutside = "allow_outside", constraints, allowOutsideNodes = "allow_outside_nodes", gitPins = "git_pins"
    }

    package init(nodes: [String]? = nil, allowOutside: Bool? = nil, constraints: [String]? = nil, allowOutsideNodes: [String]? = nil, gitPins: [String: String]? = nil) {
        self.nodes = nodes
        self.allowOutside = allowOutside
        self.constraints = constraints
        self.allowOutsideNodes = allowOutsideNodes
        self.gitPins = gitPins
    }

    package init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        nodes = try container.decodeListIfPresent([String].self, forKey: .nodes)
        allowOutside = try container.decodeIfPresent(Bool.self, forKey: .allowOutside)
        constraints = try container.decodeListIfPresent([String].self, forKey: .constraints)
        allowOutsideNodes = try container.decodeListIfPresent([String].self, forKey: .allowOutsideNodes)
        gitPins = try container.decodeIfPresent([String: String].self, forKey: .gitPins)
    }

    package func validate() throws(JobFailure) {
        for name in nodes ?? [] where !PayloadRules.isNodeName(name) {
            throw .invalidPayload("python-deps names the node '\(name.prefix(60))', which is not a plain folder name")
        }
        for line in constraints ?? [] where line.hasPrefix("-") || line.contains("://") || line.utf8.count > 500 {
            throw .invalidPayload("a python-deps constraint must be a plain requirement, not '\(line.prefix(60))'")
        }
        for name in allowOutsideNodes ?? [] where !PayloadRules.isNodeName(name) {
            throw .invalidPayload("python-deps allows the node '\(name.prefix(60))', which is not a plain folder name")
        }
        for (url, commit) in gitPins ?? [:] where !PayloadRules.isFullCommit(commit) || url.utf8.count > 2048 {
            throw .invalidPayload("the git pin of '\(url.prefix(60))' must be a 40-digit lowercase commit")
        }
    }
}

/// `install-scripts`: each listed node's `install.py`, after the plan's requirements, in the order given.
package struct InstallScriptsPayload: JobPayload, Equatable {
    package static let kind = "install-scripts"
    package static let step = JobStep.customNodes

    /// One node whose script to run, with its environment.
    package struct Node: Codable, Sendable, Equatable {
        package var name: String
        package var env: [String: String]?

        package init(name: String, env: [String: String]? = nil) {
            self.name = name
            self.env = env
        }
    }

    package var nodes: [Node]

    package init(nodes: [Node]) {
        self.nodes = nodes
    }

    package init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        nodes = try container.decodeListIfPresent([Node].self, forKey: .nodes) ?? []
    }

    package func validate() throws(JobFailure) {
        for node in nodes {
            guard PayloadRules.isNodeName(node.name) else {
                throw .invalidPayload("install-scripts names the node '\(node.name.prefix(60))', which is not a plain folder name")
            }
            try PayloadRules.checkEnvironmentKeys(node.env, owner: "node \(node.name)")
        }
    }
}
