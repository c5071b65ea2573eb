import ComponentSpec

/// Finds what workflows need: node types (subgraphs expanded, muted and bypassed nodes marked) mapped
/// to packages through the registry, and model files from `models` lists and loader inputs.
package struct WorkflowAnalyzer: Sendable {
    package var registry: NodeRegistry
    /// Repository URLs the user's spec installs: used to choose among candidates of an ambiguous type.
    package var preferred: Set<String>
    package var limits: WorkflowLimits

    package init(registry: NodeRegistry, preferred: Set<String> = [], limits: WorkflowLimits = WorkflowLimits()) {
        self.registry = registry
        self.preferred = preferred
        self.limits = limits
    }

    /// What one instance of a graph contains (subgraph instances inside it expanded).
    struct Summary {
        var types: [String: Occurrences] = [:]
        /// The first cnr_id / aux_id / ver recorded for a type.
        var properties: [String: (cnr: String?, aux: String?, version: String?)] = [:]
        var models: [ModelReference: (occurrences: Occurrences, nodeTypes: Set<String>)] = [:]
        var nodeCount = 0
        var instances = 0

        mutating func merge(_ other: Summary) {
            for (type, count) in other.types { types[type, default: Occurrences()].add(count) }
            for (type, props) in other.properties where properties[type] == nil { properties[type] = props }
            for (model, entry) in other.models {
                var current = models[model] ?? (Occurrences(), [])
                current.occurrences.add(entry.occurrences)
                current.nodeTypes.formUnion(entry.nodeTypes)
                models[model] = current
            }
            nodeCount = saturatingAdd(nodeCount, other.nodeCount)
            instances = saturatingAdd(instances, other.instances)
        }
    }

    /// Memoised summaries of subgraph definitions, per inherited mode, with cycle detection.
    struct Expander {
        let workflow: Workflow
        let limits: WorkflowLimits
        var done: [String: Summary] = [:]
        var visiting: Set<String> = []

        mutating func summary(of graph: WorkflowGraph, mode outer: NodeMode, depth: Int, label: String) throws(WorkflowError) -> Summary {
            var summary = Summary()
            for node in graph.nodes {
                let mode = node.mode.inside(outer)
                if let inner = workflow.subgraphs[node.type] {
                    guard depth < limits.maxNesting else {
                        throw WorkflowError.nestedTooDeep(file: workflow.name, limit: limits.maxNesting)
                    }
                    let key = "\(mode.rawValue)|\(node.type)"
                    if let known = done[key] {
                        summary.merge(known)
                    } else {
                        guard !visiting.contains(node.type) else {
                            throw WorkflowError.recursiveSubgraph(file: workflow.name, subgraph: node.type)
                        }
                        visiting.insert(node.type)
                        let child = try self.summary(of: inner, mode: mode, depth: depth + 1, label: node.type)
                        visiting.remove(node.type)
                        done[key] = child
                        summary.merge(child)
                    }
                    summary.instances = saturatingAdd(summary.instances, 1)
                    continue
                }
                summary.nodeCount = saturatingAdd(summary.nodeCount, 1)
                summary.types[node.type, default: Occurrences()].add(mode)
                if summary.properties[node.type] == nil, node.cnrID != nil || node.auxID != nil || node.version != nil {
                    summary.properties[node.type] = (node.cnrID, node.auxID, node.version)
                }
                if node.type == "Note" || node.type == "MarkdownNote" { continue }
                for model in Self.models(of: node) {
                    var entry = summary.models[model] ?? (Occurrences(), [])
                    entry.occurrences.add(mode)
                    entry.nodeTypes.insert(node.type)
                    summary.models[model] = entry
                }
            }
            return summary
        }

        /// Model files a node names: its `properties.models`, and input or widget values that are model files.
        static func models(of node: WorkflowNode) -> [ModelReference] {
            var found = node.models
            let listed = Set(node.models.map(\.filename))
            func add(_ text: String, name: String?) {
                guard ModelDirectories.looksLikeModelFile(text) else { return }
                // The node's own models list already names it, with its folder.
                guard !listed.contains(normalizedPath(text)) else { return }
                found.append(ModelReference(
                    filename: normalizedPath(text), directory: ModelDirectories.directory(classType: node.type, inputName: name),
                    source: "input", inputName: nil))
            }
            for (name, value) in node.values {
                switch value {
                case .string(let text):
                    add(text, name: name)
                case .object(let fields):
                    // Widgets holding several values (rgthree's Power Lora Loader: {"on", "lora", "strength"}).
                    for (key, inner) in fields.sorted(by: { $0.key < $1.key }) {
                        if let text = inner.string { add(text, name: key) }
                    }
                case .array(let items):
                    for item in items.prefix(1000) {
                        if let text = item.string { add(text, name: name) }
                        if let fields = item.object {
                            for (key, inner) in fields.sorted(by: { $0.key < $1.key }) { if let text = inner.string { add(text, name: key) } }
                        }
                    }
                default:
                    continue
                }
            }
            return found
        }
    }

    /// Analyses workflows together; `sha256` of each file is recorded when given.
    package func analyze(_ inputs: [(workflow: Workflow, sha256: String?)]) throws(WorkflowError) -> Analysis {
        var workflows: [AnalyzedWorkflow] = []
        var typeTotals: [String: Occurrences] = [:]
        var typeWorkflows: [String: Set<String>] = [:]
        var typeProperties: [String: (cnr: String?, aux: String?, version: String?)] = [:]
        var references: [(reference: ModelReference, occurrences: Occurrences, nodeTypes: Set<String>, workflow: String)] = []

        for (workflow, sha256) in inputs {
            var expander = Expander(workflow: workflow, limits: limits)
            let summary = try expander.summary(of: workflow.root, mode: .active, depth: 0, label: "")
            workflows.append(AnalyzedWorkflow(
                name: workflow.name, format: workflow.format, sha256: sha256, nodeCount: summary.nodeCount,
                subgraphInstances: summary.instances, nodeTypes: summary.types.count, warnings: workflow.warnings))
            for (type, count) in summary.types {
                typeTotals[type, default: Occurrences()].add(count)
                typeWorkflows[type, default: []].insert(workflow.name)
            }
            for (type, props) in summary.properties where typeProperties[type] == nil { typeProperties[type] = props }
            for (reference, entry) in summary.models {
                references.append((reference, entry.occurrences, entry.nodeTypes, workflow.name))
            }
            // The workflow-level list declares files; the nodes that load them are what counts.
            for reference in workflow.models {
                references.append((reference, Occurrences(), [], workflow.name))
            }
        }

        var nodes: [AnalyzedNode] = []
        var unresolved: [UnresolvedNode] = []
        var ambiguous: [AmbiguousNode] = []
        var packages: [String: AnalyzedPackage] = [:]
        var packageActive: [String: Bool] = [:]
        for (type, occurrences) in typeTotals.sorted(by: { $0.key < $1.key }) {
            let props = typeProperties[type]
            let inactive = occurrences.active == 0
            let names = (typeWorkflows[type] ?? []).sorted()
            switch registry.resolve(type, cnrID: props?.cnr, auxID: props?.aux, preferred: preferred) {
            case .builtin:
                nodes.append(AnalyzedNode(
                    classType: type, package: BuiltinNodes.package, repository: BuiltinNodes.repository, builtin: true,
                    resolvedBy: "builtin", count: occurrences.total, occurrences: occurrences, inactive: inactive,
                    version: nil, workflows: names))
            case .package(let package, let via):
                nodes.append(AnalyzedNode(
                    classType: type, package: package.package, repository: package.repository, builtin: false, resolvedBy: via,
                    count: occurrences.total, occurrences: occurrences, inactive: inactive, version: props?.version, workflows: names))
                let key = RepositoryURL.key(package.repository) ?? package.repository
                var entry = packages[key] ?? AnalyzedPackage(
                    package: package.package, repository: package.repository, title: package.title, classTypes: [], inactive: true, versions: [])
                entry.classTypes.append(type)
                if let version = props?.version, !entry.versions.contains(version) { entry.versions.append(version) }
                packages[key] = entry
                packageActive[key] = (packageActive[key] ?? false) || !inactive
            case .ambiguous(let candidates):
                ambiguous.append(AmbiguousNode(classType: type, count: occurrences.total, inactive: inactive, candidates: candidates, workflows: names))
            case .unresolved:
                unresolved.append(UnresolvedNode(
                    classType: type, count: occurrences.total, inactive: inactive, cnrID: props?.cnr, auxID: props?.aux, workflows: names))
            }
        }
        let packageList = packages.map { key, value -> AnalyzedPackage in
            var entry = value
            entry.inactive = !(packageActive[key] ?? false)
            entry.classTypes.sort()
            entry.versions.sort()
            return entry
        }.sorted { ($0.repository.lowercased(), $0.package) < ($1.repository.lowercased(), $1.package) }

        return Analysis(
            workflows: workflows, nodes: nodes, packages: packageList, models: Self.mergeModels(references),
            unresolved: unresolved, ambiguous: ambiguous,
            registry: RegistryInfo(source: registry.source, version: registry.version, repositories: registry.repositoryCount, nodeTypes: registry.typeCount))
    }

    /// One entry per (directory, file name). A file found in a loader's input joins the `models`-list
    /// entry of the same name (that list says the folder); one with no known folder joins the entry of
    /// the same name that has one.
    static func mergeModels(_ references: [(reference: ModelReference, occurrences: Occurrences, nodeTypes: Set<String>, workflow: String)]) -> [AnalyzedModel] {
        struct Entry {
            var filename: String
            var directory: String?
            var url: String?
            var sha256: String?
            var occurrences = Occurrences()
            var sources: Set<String> = []
            var nodeTypes: Set<String> = []
            var workflows: Set<String> = []
        }
        var entries: [String: Entry] = [:]
        func key(_ filename: String, _ directory: String?) -> String { (directory ?? "") + "\u{0}" + filename }
        // Folders the models lists give each file name.
        var listed: [String: Set<String>] = [:]
        var anyFolder: [String: Set<String>] = [:]
        for item in references {
            if let directory = item.reference.directory {
                anyFolder[item.reference.filename, default: []].insert(directory)
                if item.reference.source == "properties" { listed[item.reference.filename, default: []].insert(directory) }
            }
        }
        // Properties first, so their URL and hash win.
        let ordered = references.sorted { ($0.reference.source == "properties" ? 0 : 1) < ($1.reference.source == "properties" ? 0 : 1) }
        for item in ordered {
            let reference = item.reference
            var directory = reference.directory
            if reference.source != "properties", let folders = listed[reference.filename] {
                if let current = directory, folders.contains(current) {
                    // The list agrees with the loader.
                } else if folders.count == 1 {
                    directory = folders.first
                }
            }
            if directory == nil, let folders = anyFolder[reference.filename], folders.count == 1 { directory = folders.first }
            let k = key(reference.filename, directory)
            var entry = entries[k] ?? Entry(filename: reference.filename, directory: directory)
            if entry.url == nil { entry.url = reference.url }
            if entry.sha256 == nil { entry.sha256 = reference.sha256?.lowercased() }
            entry.occurrences.add(item.occurrences)
            entry.sources.insert(reference.source)
            entry.nodeTypes.formUnion(item.nodeTypes)
            entry.workflows.insert(item.workflow)
            entries[k] = entry
        }
        return entries.values.map { entry in
            AnalyzedModel(
                filename: entry.filename, directory: entry.directory, url: entry.url, sha256: entry.sha256,
                count: entry.occurrences.total, occurrences: entry.occurrences,
                inactive: entry.occurrences.total > 0 && entry.occurrences.active == 0,
                sources: entry.sources.sorted(), nodeTypes: entry.nodeTypes.sorted(), workflows: entry.workflows.sorted())
        }.sorted { (($0.directory ?? "~"), $0.filename) < (($1.directory ?? "~"), $1.filename) }
    }
}
