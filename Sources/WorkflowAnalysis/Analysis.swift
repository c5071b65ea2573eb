import ComponentSpec

/// The result of analysing workflows (protocols/schemas/analysis.schema.json): the node types they
/// use and what provides each, the model files they load, and what could not be resolved.
public struct Analysis: Sendable, Equatable, Codable {
    public var analysisVersion = 1
    public var workflows: [AnalyzedWorkflow]
    /// Node types provided by ComfyUI or by exactly one known package.
    public var nodes: [AnalyzedNode]
    /// Custom node packages needed, with the types each provides.
    public var packages: [AnalyzedPackage]
    public var models: [AnalyzedModel]
    /// Types nothing known provides.
    public var unresolved: [UnresolvedNode]
    /// Types several packages claim; the candidates are listed, none is chosen.
    public var ambiguous: [AmbiguousNode]
    public var registry: RegistryInfo

    enum CodingKeys: String, CodingKey {
        case analysisVersion = "analysis_version", workflows, nodes, packages, models, unresolved, ambiguous, registry
    }
}

public struct AnalyzedWorkflow: Sendable, Equatable, Codable {
    public var name: String
    public var format: WorkflowFormat
    public var sha256: String?
    /// Node occurrences, subgraph instances expanded (an instance used twice counts its nodes twice).
    public var nodeCount: Int
    public var subgraphInstances: Int
    public var nodeTypes: Int
    /// Problems that did not stop the analysis (links to nodes that are not there).
    public var warnings: [String]

    enum CodingKeys: String, CodingKey {
        case name, format, sha256, nodeCount = "node_count", subgraphInstances = "subgraph_instances", nodeTypes = "node_types", warnings
    }
}

/// How often a node type or model occurs, by mode.
public struct Occurrences: Sendable, Equatable, Codable {
    public var active = 0
    public var muted = 0
    public var bypassed = 0

    public var total: Int { active.addingReportingOverflow(muted).partialValue.addingReportingOverflow(bypassed).partialValue }

    mutating func add(_ mode: NodeMode, _ count: Int = 1) {
        switch mode {
        case .active: active = saturatingAdd(active, count)
        case .muted: muted = saturatingAdd(muted, count)
        case .bypassed: bypassed = saturatingAdd(bypassed, count)
        }
    }

    mutating func add(_ other: Occurrences) {
        active = saturatingAdd(active, other.active)
        muted = saturatingAdd(muted, other.muted)
        bypassed = saturatingAdd(bypassed, other.bypassed)
    }
}

func saturatingAdd(_ a: Int, _ b: Int) -> Int {
    let (sum, overflow) = a.addingReportingOverflow(b)
    return overflow ? Int.max : sum
}

public struct AnalyzedNode: Sendable, Equatable, Codable {
    public var classType: String
    public var package: String
    public var repository: String
    public var builtin: Bool
    /// How the package was found: builtin, registry, preemption, pattern, properties, preferred.
    public var resolvedBy: String
    public var count: Int
    public var occurrences: Occurrences
    /// Every occurrence is muted or bypassed: the workflow runs without it.
    public var inactive: Bool
    /// The pack version the workflow recorded (`properties.ver`), when it did.
    public var version: String?
    public var workflows: [String]

    enum CodingKeys: String, CodingKey {
        case classType = "class_type", package, repository, builtin, resolvedBy = "resolved_by", count, occurrences, inactive, version, workflows
    }
}

public struct AnalyzedPackage: Sendable, Equatable, Codable {
    public var package: String
    public var repository: String
    public var title: String?
    public var classTypes: [String]
    /// Every type it provides is used only by muted or bypassed nodes.
    public var inactive: Bool
    public var versions: [String]

    enum CodingKeys: String, CodingKey {
        case package, repository, title, classTypes = "class_types", inactive, versions
    }
}

public struct AnalyzedModel: Sendable, Equatable, Codable {
    public var filename: String
    public var directory: String?
    public var url: String?
    public var sha256: String?
    public var count: Int
    public var occurrences: Occurrences
    public var inactive: Bool
    /// `properties` (a models list) and/or `input` (a loader's value).
    public var sources: [String]
    public var nodeTypes: [String]
    public var workflows: [String]

    enum CodingKeys: String, CodingKey {
        case filename, directory, url, sha256, count, occurrences, inactive, sources, nodeTypes = "node_types", workflows
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(filename, forKey: .filename)
        try container.encode(directory, forKey: .directory)
        try container.encode(url, forKey: .url)
        try container.encode(sha256, forKey: .sha256)
        try container.encode(count, forKey: .count)
        try container.encode(occurrences, forKey: .occurrences)
        try container.encode(inactive, forKey: .inactive)
        try container.encode(sources, forKey: .sources)
        try container.encode(nodeTypes, forKey: .nodeTypes)
        try container.encode(workflows, forKey: .workflows)
    }
}

public struct UnresolvedNode: Sendable, Equatable, Codable {
    public var classType: String
    public var count: Int
    public var inactive: Bool
    public var cnrID: String?
    public var auxID: String?
    public var workflows: [String]

    enum CodingKeys: String, CodingKey {
        case classType = "class_type", count, inactive, cnrID = "cnr_id", auxID = "aux_id", workflows
    }
}

public struct AmbiguousNode: Sendable, Equatable, Codable {
    public var classType: String
    public var count: Int
    public var inactive: Bool
    public var candidates: [NodePackage]
    public var workflows: [String]

    enum CodingKeys: String, CodingKey {
        case classType = "class_type", count, inactive, candidates, workflows
    }
}

public struct RegistryInfo: Sendable, Equatable, Codable {
    public var source: String
    public var version: String?
    public var repositories: Int
    public var nodeTypes: Int

    enum CodingKeys: String, CodingKey {
        case source, version, repositories, nodeTypes = "node_types"
    }
}
