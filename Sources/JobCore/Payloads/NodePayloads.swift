/// `comfyui`: ComfyUI cloned at its pin into `<workspace>/ComfyUI`, its requirements installed.
public struct ComfyUIPayload: JobPayload, Equatable {
    public static let kind = "comfyui"
    public static let step = JobStep.customNodes

    public var url: String
    public var commit: String?
    public var tag: String?
    public var branch: String?
    public var requirements: Bool?
    public var force: Bool?

    public init(url: String, commit: String? = nil, tag: String? = nil, branch: String? = nil, requirements: Bool? = nil, force: Bool? = nil) {
        self.url = url
        self.commit = commit
        self.tag = tag
        self.branch = branch
        self.requirements = requirements
        self.force = force
    }

    public func validate() throws(JobFailure) {
        try PayloadRules.checkPin(commit: commit, tag: tag, branch: branch, owner: "comfyui")
    }
}

/// `node`: one custom node cloned at its pin into `custom_nodes/NAME`, with its `.env`. Field names
/// follow `config_nodes.json`.
public struct NodePayload: JobPayload, Equatable {
    public static let kind = "node"
    public static let step = JobStep.customNodes

    public var name: String
    public var url: String
    public var commit: String?
    public var tag: String?
    public var branch: String?
    public var recursive: Bool?
    public var requirements: Bool?
    public var env: [String: String]?
    public var installOrder: Int?
    public var force: Bool?

    enum CodingKeys: String, CodingKey {
        case name, url, commit, tag, branch, recursive, requirements, env, installOrder = "install_order", force
    }

    public init(
        name: String, url: String, commit: String? = nil, tag: String? = nil, branch: String? = nil, recursive: Bool? = nil,
        requirements: Bool? = nil, env: [String: String]? = nil, installOrder: Int? = nil, force: Bool? = nil
    ) {
        self.name = name
        self.url = url
        self.commit = commit
        self.tag = tag
        self.branch = branch
        self.recursive = recursive
        self.requirements = requirements
        self.env = env
        self.installOrder = installOrder
        self.force = force
    }

    public func validate() throws(JobFailure) {
        guard PayloadRules.isNodeName(name) else {
            throw .invalidPayload("the node name '\(name.prefix(60))' must be a plain folder name (letters, digits, '.', '_', '-')")
        }
        try PayloadRules.checkPin(commit: commit, tag: tag, branch: branch, owner: "node \(name)")
        try PayloadRules.checkEnvironmentKeys(env, owner: "node \(name)")
    }
}

/// `python-deps`: every node's requirements resolved together, then installed once.
public struct PythonDepsPayload: JobPayload, Equatable {
    public static let kind = "python-deps"
    public static let step = JobStep.customNodes

    /// Node folders whose requirements to include (default: every installed node with a requirements.txt).
    public var nodes: [String]?
    /// Allow requirement lines that reach outside the node (-e, index options, local paths).
    public var allowOutside: Bool?
    /// Extra constraint lines (pins).
    public var constraints: [String]?
    /// Nodes whose requirement lines may reach outside (the manifest's per-node `allow_outside`).
    public var allowOutsideNodes: [String]?
    /// Commits of the git repositories requirement lines name (`git+https://…`), by URL (lower
    /// case, no `.git`): the lock's pins, used in place of the lines' refs.
    public var gitPins: [String: String]?

    enum CodingKeys: String, CodingKey {
        case nodes, allowOutside = "allow_outside", constraints, allowOutsideNodes = "allow_outside_nodes", gitPins = "git_pins"
    }

    public init(nodes: [String]? = nil, allowOutside: Bool? = nil, constraints: [String]? = nil, allowOutsideNodes: [String]? = nil, gitPins: [String: String]? = nil) {
        self.nodes = nodes
        self.allowOutside = allowOutside
        self.constraints = constraints
        self.allowOutsideNodes = allowOutsideNodes
        self.gitPins = gitPins
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        nodes = try container.decodeListIfPresent([String].self, forKey: .nodes)
        allowOutside = try container.decodeIfPresent(Bool.self, forKey: .allowOutside)
        constraints = try container.decodeListIfPresent([String].self, forKey: .constraints)
        allowOutsideNodes = try container.decodeListIfPresent([String].self, forKey: .allowOutsideNodes)
        gitPins = try container.decodeIfPresent([String: String].self, forKey: .gitPins)
    }

    public func validate() throws(JobFailure) {
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
public struct InstallScriptsPayload: JobPayload, Equatable {
    public static let kind = "install-scripts"
    public static let step = JobStep.customNodes

    /// One node whose script to run, with its environment.
    public struct Node: Codable, Sendable, Equatable {
        public var name: String
        public var env: [String: String]?

        public init(name: String, env: [String: String]? = nil) {
            self.name = name
            self.env = env
        }
    }

    public var nodes: [Node]

    public init(nodes: [Node]) {
        self.nodes = nodes
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        nodes = try container.decodeListIfPresent([Node].self, forKey: .nodes) ?? []
    }

    public func validate() throws(JobFailure) {
        for node in nodes {
            guard PayloadRules.isNodeName(node.name) else {
                throw .invalidPayload("install-scripts names the node '\(node.name.prefix(60))', which is not a plain folder name")
            }
            try PayloadRules.checkEnvironmentKeys(node.env, owner: "node \(node.name)")
        }
    }
}
