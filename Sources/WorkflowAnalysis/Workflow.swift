import ComponentSpec
import Downloader
import Foundation
import JobCore

/// Whether a node runs: ComfyUI's `mode` 2 (muted, "never") and 4 (bypassed) do not.
package enum NodeMode: String, Sendable, Codable, Comparable {
    case active, bypassed, muted

    init(code: Int?) {
        switch code {
        case 2: self = .muted
        case 4: self = .bypassed
        default: self = .active
        }
    }

    /// The mode of a node inside a subgraph instance whose own mode is `outer`.
    func inside(_ outer: NodeMode) -> NodeMode { max(self, outer) }

    package static func < (a: NodeMode, b: NodeMode) -> Bool {
        let order: [NodeMode] = [.active, .bypassed, .muted]
        return (order.firstIndex(of: a) ?? 0) < (order.firstIndex(of: b) ?? 0)
    }
}

/// A model file a workflow refers to.
package struct ModelReference: Sendable, Equatable, Hashable {
    /// As ComfyUI lists it, sub-folders included (`SDXL/model.safetensors`), with `/` separators.
    package var filename: String
    /// The models sub-folder (`checkpoints`, `loras`, …), nil when it cannot be told.
    package var directory: String?
    package var url: String?
    package var sha256: String?
    /// Where it was found: `properties` (the node's or workflow's `models` list) or `input` (a loader's value).
    package var source: String
    /// The input or widget that named it.
    package var inputName: String?

    package init(filename: String, directory: String?, url: String? = nil, sha256: String? = nil, source: String, inputName: String? = nil) {
        self.filename = filename
        self.directory = directory
        self.url = url
        self.sha256 = sha256
        self.source = source
        self.inputName = inputName
    }
}

/// One node of a workflow graph, as much of it as the analysis needs.
struct WorkflowNode: Sendable {
    var id: String
    var type: String
    var mode: NodeMode
    var cnrID: String?
    var auxID: String?
    var version: String?
    /// `properties.models` of the node.
    var models: [ModelReference]
    /// Literal input values (API format) or widget values (UI format), with their names when known.
    var values: [(name: String?, value: JSONValue)]
}

/// The nodes of one graph level: the root, or one subgraph definition.
struct WorkflowGraph: Sendable {
    var nodes: [WorkflowNode]
}

/// Bounds on what a workflow may contain, so a hostile file costs little.
package struct WorkflowLimits: Sendable {
    package var json = JSONLimits(maxBytes: 64 << 20, maxDepth: 128, workflowQuirks: true)
    /// Nodes in one graph level.
    package var maxNodesPerGraph = 100_000
    /// Subgraph definitions in one workflow.
    package var maxSubgraphs = 10_000
    /// Subgraph instances nested inside each other.
    package var maxNesting = 32
    /// Widget values of one node.
    package var maxValuesPerNode = 10_000
    /// A UI-format link to a node that does not exist is an error (by default a warning: the editor
    /// loads such files, and official templates contain them). API-format links are always checked.
    package var strictLinks = false

    package init() {}
}

/// A parsed ComfyUI workflow.
package struct Workflow: Sendable {
    package var name: String
    package var format: WorkflowFormat
    /// SHA-256 of the file, when parsed from bytes.
    package var sha256: String?
    /// Problems that do not stop the analysis (UI-format links to nodes that are not there).
    package var warnings: [String]
    var root: WorkflowGraph
    /// Subgraph definitions by id (UI format); a node whose type is one of these ids is an instance.
    var subgraphs: [String: WorkflowGraph]
    /// The workflow-level `models` list (templates carry one).
    var models: [ModelReference]

    /// Reads and parses a workflow file.
    package static func load(path: String, limits: WorkflowLimits = WorkflowLimits()) throws(WorkflowError) -> Workflow {
        let data: Data
        do { data = try readInput(path: path, what: "workflow", limit: limits.json.maxBytes) } catch { throw .unreadable(error) }
        return try parse(data, name: path, limits: limits)
    }

    /// Parses a workflow in either format; `name` appears in error sentences.
    package static func parse(_ data: Data, name: String, limits: WorkflowLimits = WorkflowLimits()) throws(WorkflowError) -> Workflow {
        let document: JSONValue
        do {
            document = try JSONValue.parse(data, limits: limits.json)
        } catch {
            throw WorkflowError.notJSON(file: name, detail: "\(error)")
        }
        var workflow = try parse(document, name: name, limits: limits)
        var hasher = SHA256Hasher()
        hasher.update(data)
        workflow.sha256 = hasher.finalize()
        return workflow
    }

    static func parse(_ document: JSONValue, name: String, limits: WorkflowLimits, unwrapped: Int = 0) throws(WorkflowError) -> Workflow {
        guard let top = document.object else {
            throw WorkflowError.notAWorkflow(file: name, reason: "it is \(document.kindDescription), not an object")
        }
        if let nodes = top["nodes"], nodes.array != nil {
            return try UIFormat(name: name, limits: limits).parse(top)
        }
        // Wrappers: a /prompt request body, or a workflow inside an API request ({"input": {"workflow": …}}).
        if unwrapped < 3 {
            for key in ["prompt", "workflow", "input"] {
                if let inner = top[key], inner.object != nil, looksLikeWorkflow(inner) {
                    return try parse(inner, name: name, limits: limits, unwrapped: unwrapped + 1)
                }
            }
        }
        if let nodes = top["nodes"] {
            throw WorkflowError.notAWorkflow(file: name, reason: "its nodes field is \(nodes.kindDescription), not an array")
        }
        if top.values.contains(where: { $0["class_type"] != nil }) {
            return try APIFormat(name: name, limits: limits).parse(top)
        }
        throw WorkflowError.notAWorkflow(file: name, reason: "it has neither a nodes array (UI format) nor nodes with a class_type (API format)")
    }

    static func looksLikeWorkflow(_ value: JSONValue) -> Bool {
        guard let object = value.object else { return false }
        if object["nodes"]?.array != nil { return true }
        if object.values.contains(where: { $0["class_type"] != nil }) { return true }
        return ["prompt", "workflow", "input"].contains { object[$0].map(looksLikeWorkflow) ?? false }
    }
}

/// Reads `properties.models` (or a workflow's `models`) entries: `{name, url, directory, hash?, hash_type?}`.
func modelReferences(_ value: JSONValue?) -> [ModelReference] {
    guard let items = value?.array else { return [] }
    return items.compactMap { item -> ModelReference? in
        guard let name = item["name"]?.string, !name.isEmpty, name.utf8.count <= 1024 else { return nil }
        let hash = item["hash"]?.string?.lowercased()
        let hashType = item["hash_type"]?.string?.lowercased()
        let sha256 = hash.flatMap { h in (hashType == nil || hashType == "sha256") && PayloadRules.isSHA256(h) ? h : nil }
        let directory = item["directory"]?.string.flatMap { $0.isEmpty ? nil : normalizedPath($0) }
        let url = item["url"]?.string.flatMap { $0.isEmpty ? nil : $0 }
        return ModelReference(filename: normalizedPath(name), directory: directory, url: url, sha256: sha256, source: "properties")
    }
}

/// The UI (editor) format.
private final class UIFormat {
    let name: String
    let limits: WorkflowLimits
    /// Links to nodes that are not there: the editor loads such files (official templates have them),
    /// so they are reported, not fatal, unless `limits.strictLinks`.
    var warnings: [String] = []

    init(name: String, limits: WorkflowLimits) {
        self.name = name
        self.limits = limits
    }

    func parse(_ top: [String: JSONValue]) throws(WorkflowError) -> Workflow {
        let root = try graph(top, label: "")
        var subgraphs: [String: WorkflowGraph] = [:]
        // Subgraph definitions: usually all in the root's definitions, possibly nested in a subgraph's own.
        var pending: [(JSONValue, Int)] = [(JSONValue.object(top), 0)]
        while let (holder, level) = pending.popLast() {
            guard let definitions = holder["definitions"] else { continue }
            guard let list = definitions["subgraphs"] else { continue }
            guard let items = list.array else {
                throw WorkflowError.malformed(file: name, problem: "definitions.subgraphs is \(list.kindDescription), not an array")
            }
            for (index, item) in items.enumerated() {
                guard item.object != nil else {
                    throw WorkflowError.malformed(file: name, problem: "subgraph definition \(index) is \(item.kindDescription), not an object")
                }
                guard let id = item["id"]?.identifier, !id.isEmpty else {
                    throw WorkflowError.malformed(file: name, problem: "subgraph definition \(index) has no id")
                }
                guard subgraphs[id] == nil else { continue }
                guard subgraphs.count < limits.maxSubgraphs else {
                    throw WorkflowError.tooManySubgraphs(file: name, limit: limits.maxSubgraphs)
                }
                guard let object = item.object else { continue }
                subgraphs[id] = try graph(object, label: "subgraph \(id)", isSubgraph: true)
                if level < limits.maxNesting { pending.append((item, level + 1)) }
            }
        }
        // Legacy group nodes ("workflow>NAME") keep their inner nodes in extra.groupNodes.
        if let groups = top["extra"]?["groupNodes"]?.object {
            for (groupName, group) in groups.sorted(by: { $0.key < $1.key }) {
                guard let object = group.object, object["nodes"]?.array != nil else { continue }
                let inner = try graph(object, label: "group node \(groupName)", checkLinks: false)
                subgraphs["workflow>" + groupName] = inner
                subgraphs["workflow/" + groupName] = inner
            }
        }
        return Workflow(name: name, format: .ui, sha256: nil, warnings: warnings, root: root, subgraphs: subgraphs, models: modelReferences(top["models"]))
    }

    func graph(_ object: [String: JSONValue], label: String, isSubgraph: Bool = false, checkLinks: Bool = true) throws(WorkflowError) -> WorkflowGraph {
        let place = label.isEmpty ? "" : " in \(label)"
        guard let items = object["nodes"]?.array else {
            throw WorkflowError.malformed(file: name, problem: "\(label.isEmpty ? "it" : label) has no nodes array")
        }
        guard items.count <= limits.maxNodesPerGraph else {
            throw WorkflowError.tooMany(file: name, count: items.count, what: "nodes\(place)", limit: limits.maxNodesPerGraph)
        }
        var nodes: [WorkflowNode] = []
        nodes.reserveCapacity(items.count)
        var ids = Set<String>()
        for (index, item) in items.enumerated() {
            guard let fields = item.object else {
                throw WorkflowError.malformed(file: name, problem: "node \(index)\(place) is \(item.kindDescription), not an object")
            }
            let id = fields["id"]?.identifier ?? fields["index"]?.identifier ?? String(index)
            guard let type = fields["type"]?.string, !type.isEmpty else {
                throw WorkflowError.malformed(file: name, problem: "node \(id)\(place) has no type")
            }
            guard type.utf8.count <= 500 else { throw WorkflowError.malformed(file: name, problem: "node \(id)\(place) has a type longer than 500 bytes") }
            ids.insert(id)
            let properties = fields["properties"]?.object ?? [:]
            nodes.append(WorkflowNode(
                id: id, type: type, mode: NodeMode(code: fields["mode"]?.int),
                cnrID: properties["cnr_id"]?.string, auxID: properties["aux_id"]?.string,
                version: properties["ver"]?.string ?? properties["ver"]?.identifier,
                models: modelReferences(properties["models"]),
                values: try widgetValues(fields, nodeID: id, place: place)))
        }
        if checkLinks { try checkLinkEnds(object["links"], ids: ids, place: place, isSubgraph: isSubgraph) }
        return WorkflowGraph(nodes: nodes)
    }

    /// Widget values with names: from `widgets_values` as an object, or by position, aligned with the
    /// node's widget inputs (newer editors list every widget in `inputs` with `widget.name`).
    func widgetValues(_ fields: [String: JSONValue], nodeID: String, place: String) throws(WorkflowError) -> [(name: String?, value: JSONValue)] {
        guard let raw = fields["widgets_values"] else { return [] }
        if let named = raw.object {
            return named.sorted { $0.key < $1.key }.map { (name: $0.key, value: $0.value) }
        }
        guard let values = raw.array else { return [] }
        guard values.count <= limits.maxValuesPerNode else {
            throw WorkflowError.tooMany(file: name, count: values.count, what: "widget values on node \(nodeID)\(place)", limit: limits.maxValuesPerNode)
        }
        // Names by position: the loader table knows the full widget order of the loaders it lists; else
        // the node's widget inputs (newer editors list every widget there, older ones only those turned
        // into inputs: a partial list cannot be aligned, so it is used only when it accounts for every value).
        if let type = fields["type"]?.string, let known = ModelDirectories.loaders[type] {
            return align(values, names: known.map(\.name)) ?? values.map { (name: nil, value: $0) }
        }
        var names: [String] = []
        for input in fields["inputs"]?.array ?? [] {
            if let widget = input["widget"], let widgetName = widget["name"]?.string ?? input["name"]?.string { names.append(widgetName) }
        }
        if let aligned = align(values, names: names, complete: true) { return aligned }
        return values.map { (name: nil, value: $0) }
    }

    /// Pairs values with names in order, skipping the "control after generate" value that follows a seed
    /// widget. With `complete`, nil unless every name and every value is used.
    func align(_ values: [JSONValue], names: [String], complete: Bool = false) -> [(name: String?, value: JSONValue)]? {
        let controls: Set<String> = ["fixed", "increment", "decrement", "randomize"]
        var result: [(name: String?, value: JSONValue)] = []
        var nameIndex = 0
        var index = 0
        while index < values.count {
            let widgetName = nameIndex < names.count ? names[nameIndex] : nil
            result.append((name: widgetName, value: values[index]))
            nameIndex += 1
            index += 1
            if let widgetName, widgetName.lowercased().contains("seed"), index < values.count,
                let next = values[index].string, controls.contains(next)
            {
                index += 1
            }
        }
        if complete && (names.isEmpty || nameIndex != names.count) { return nil }
        return result
    }

    /// Links as arrays `[id, origin, slot, target, slot, type]` or objects `{origin_id, target_id, …}`;
    /// both ends must be nodes of the same graph (or, in a subgraph, its input/output stubs -10 and -20).
    func checkLinkEnds(_ value: JSONValue?, ids: Set<String>, place: String, isSubgraph: Bool) throws(WorkflowError) {
        guard let value else { return }
        guard let links = value.array else {
            if value.object != nil || value == .null { return }
            throw WorkflowError.malformed(file: name, problem: "links\(place) is \(value.kindDescription), not an array")
        }
        for link in links {
            let origin: String?
            let target: String?
            let linkID: String?
            if let parts = link.array {
                guard parts.count >= 4 else {
                    throw WorkflowError.malformed(file: name, problem: "a link\(place) has \(parts.count) fields where at least 4 were expected")
                }
                linkID = parts[0].identifier
                origin = parts[1].identifier
                target = parts[3].identifier
            } else if link.object != nil {
                linkID = link["id"]?.identifier
                origin = link["origin_id"]?.identifier
                target = link["target_id"]?.identifier
            } else if link == .null {
                continue
            } else {
                throw WorkflowError.malformed(file: name, problem: "a link\(place) is \(link.kindDescription)")
            }
            for (end, role) in [(origin, "from"), (target, "to")] {
                guard let end else {
                    throw WorkflowError.malformed(file: name, problem: "link \(linkID ?? "?")\(place) has no \(role == "from" ? "origin" : "target") node")
                }
                if ids.contains(end) { continue }
                if isSubgraph && (end == "-10" || end == "-20") { continue }
                let problem = "link \(linkID ?? "?")\(place) goes \(role) node \(end), which does not exist"
                if limits.strictLinks { throw WorkflowError.malformed(file: name, problem: problem) }
                if warnings.count < 100 { warnings.append(clippedSentence(problem)) }
            }
        }
    }
}

/// The API (execution) format.
private struct APIFormat {
    let name: String
    let limits: WorkflowLimits

    func parse(_ top: [String: JSONValue]) throws(WorkflowError) -> Workflow {
        guard top.count <= limits.maxNodesPerGraph else {
            throw WorkflowError.tooMany(file: name, count: top.count, what: "nodes", limit: limits.maxNodesPerGraph)
        }
        var nodes: [WorkflowNode] = []
        for (id, value) in top.sorted(by: { idOrder($0.key, $1.key) }) {
            guard let fields = value.object else {
                throw WorkflowError.malformed(file: name, problem: "node \(id) is \(value.kindDescription), not an object with a class_type")
            }
            guard let type = fields["class_type"]?.string, !type.isEmpty else {
                throw WorkflowError.malformed(file: name, problem: "node \(id) has no class_type")
            }
            guard type.utf8.count <= 500 else { throw WorkflowError.malformed(file: name, problem: "node \(id) has a class_type longer than 500 bytes") }
            var values: [(name: String?, value: JSONValue)] = []
            if let inputs = fields["inputs"] {
                guard let inputFields = inputs.object else {
                    throw WorkflowError.malformed(file: name, problem: "the inputs of node \(id) are \(inputs.kindDescription), not an object")
                }
                guard inputFields.count <= limits.maxValuesPerNode else {
                    throw WorkflowError.tooMany(file: name, count: inputFields.count, what: "inputs on node \(id)", limit: limits.maxValuesPerNode)
                }
                for (inputName, inputValue) in inputFields.sorted(by: { $0.key < $1.key }) {
                    // ComfyUI's rule: a two-element list [node id (string), output index (int)] is a link.
                    if let parts = inputValue.array, parts.count == 2, let source = parts[0].string, parts[1].int != nil {
                        guard top[source] != nil else {
                            throw WorkflowError.malformed(file: name, problem: "input \(inputName) of node \(id) is linked to node \(source), which does not exist")
                        }
                        continue
                    }
                    values.append((name: inputName, value: inputValue))
                }
            }
            let meta = fields["_meta"]
            nodes.append(WorkflowNode(
                id: id, type: type, mode: .active, cnrID: meta?["cnr_id"]?.string, auxID: meta?["aux_id"]?.string,
                version: meta?["ver"]?.string, models: modelReferences(meta?["models"]), values: values))
        }
        return Workflow(name: name, format: .api, sha256: nil, warnings: [], root: WorkflowGraph(nodes: nodes), subgraphs: [:], models: [])
    }

    /// Numeric ids in numeric order ("2" before "10"), then the rest.
    func idOrder(_ a: String, _ b: String) -> Bool {
        switch (Int(a), Int(b)) {
        case (let x?, let y?): return x < y
        case (.some, nil): return true
        case (nil, .some): return false
        default: return a < b
        }
    }
}
