import ComponentSpec

/// The result of analysing workflows (protocols/schemas/analysis.schema.json): the node types they
/// use and what provides each, the model files they load, and what could not be resolved.
package struct Analysis: Sendable, Equatable, Codable {
    package var analysisVersion = 1
    package var workflows: [AnalyzedWorkflow]
    /// Node types provided by ComfyUI or by exactly one known package.
    package var nodes: [AnalyzedNode]
    /// Custom node packages needed, with the types each provides.
    package var packages: [AnalyzedPackage]
    package var models: [AnalyzedModel]
    /// Types nothing known provides.
    package var unresolved: [UnresolvedNode]
    /// Types several packages claim; the candidates are listed, none is chosen.
    package var ambiguous: [AmbiguousNode]
    package var registry: RegistryInfo

    enum CodingKeys: String, CodingKey {
        case analysisVersion = "analysis_version", workflows, nodes, packages, models, unresolved, ambiguous, registry
    }
}

package struct AnalyzedWorkflow: Sendable, Equatable, Codable {
    package var name: String
    package var format: WorkflowFormat
    package var sha256: String?
    /// Node occurrences, subgraph instances expanded (an instance used twice counts its nodes twice).
    package var nodeCount: Int
    package var subgraphInstances: Int
    package var nodeTypes: Int
    /// Problems that did not stop the analysis (links to nodes that are not there).
    package var warnings: [String]

    enum CodingKeys: String, CodingKey {
        case name, format, sha256, nodeCount = "node_count", subgraphInstances = "subgraph_instances", nodeTypes = "node_types", warnings
    }
}

/// How often a node type or model occurs, by mode.
package struct Occurrences: Sendable, Equatable, Codable {
    package var active = 0
    package var muted = 0
    package var bypassed = 0

    package var total: Int { active.addingReportingOverflow(muted).partialValue.addingReportingOverflow(bypassed).partialValue }

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

package struct AnalyzedNode: Sendable, Equatable, Codable {
    package var classType: String
    package var package: String
    package var repository: String
    package var builtin: Bool
    /// How the package was found: builtin, registry, preemption, pattern, properties, preferred.
    package var resolvedBy: String
    package var count: Int
    package var occurrences: Occurrences
    /// Every occurrence is muted or bypassed: the workflow runs without it.
    package var inactive: Bool
    /// The pack version the workflow recorded (`properties.ver`), when it did.
    package var version: String?
    package var workflows: [String]

    enum CodingKeys: String, CodingKey {
        case classType = "class_type", package, repository, builtin, resolvedBy = "resolved_by", count, occurrences, inactive, version, workflows
    }
}

package struct AnalyzedPackage: Sendable, Equatable, Codable {
    package var package: String
    package var repository: String
    package var title: String?
    package var classTypes: [String]
    /// Every type it provides is used only by muted or bypassed nodes.
    package var inactive: Bool
    package var versions: [String]

    enum CodingKeys: String, CodingKey {
        case package, repository, title, classTypes = "class_types", inactive, versions
    }
}

package struct AnalyzedModel: Sendable, Equatable, Codable {
    package var filename: String
    package var directory: String?
    package var url: String?
    package var sha256: String?
    package var count: Int
    package var occurrences: Occurrences
    package var inactive: Bool
    /// `properties` (a models list) and/or `input` (a loader's value).
    package var sources: [String]
    package var nodeTypes: [String]
    package var workflows: [String]

    enum CodingKeys: String, CodingKey {
        case filename, directory, url, sha256, count, occurrences, inactive, sources, nodeTypes = "node_types", workflows
    }

    package func encode(to encoder: any Encoder) throws {
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

package struct UnresolvedNode: Sendable, Equatable, Codable {
    package var classType: String
    package var count: Int
    package var inactive: Bool
    package var cnrID: String?
    package var auxID: String?
    package var workflows: [String]

    enum CodingKeys: String, CodingKey {
        case classType = "class_type", count, inactive, cnrID = "cnr_id", auxID = "aux_id", workflows
    }
}

package struct AmbiguousNode: Sendable, Equatable, Codable {
    package var classType: String
    package var count: Int
    package var inactive: Bool
    package var candidates: [NodePackage]
    package var workflows: [String]

    enum CodingKeys: String, CodingKey {
        case classType = "class_type", count, inactive, candidates, workflows
    }
}

package struct RegistryInfo: Sendable, Equatable, Codable {
    package var source: String
    package var version: String?
    package var repositories: Int
    package var nodeTypes: Int

    enum CodingKeys: String, CodingKey {
        case source, version, repositories, nodeTypes = "node_types"
    }
}
