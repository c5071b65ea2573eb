import Downloader
import Foundation

/// Turns a lockfile or a manifest into a plan (protocols/schemas/plan.schema.json): `comfyui` →
/// one `node` job per custom node (parallel; nodes with an `install_order` one group after another)
/// → `python-deps` → `verify`, with `download` jobs that depend on nothing and a `verify` job that
/// depends on every other job. Payloads follow protocols/schemas/job-payloads/.
public struct PlanBuilder: Sendable {
    public var planID: String?
    public var machineID: String?
    /// Hash every model in the verify job.
    public var deepVerify = false
    public var source: String?
    /// Append a last `services` job (steps 19-21, protocols/schemas/job-payloads/services.schema.json)
    /// that depends on every other job and succeeds once ComfyUI serves every installed node.
    public var services: ServicesJob?

    /// What the `services` job asks for beyond the plan's nodes and workflows.
    public struct ServicesJob: Sendable {
        /// Seconds ComfyUI may take to answer; nil leaves the default (300).
        public var deadlineSeconds: Double?
        public init(deadlineSeconds: Double? = nil) { self.deadlineSeconds = deadlineSeconds }
    }

    public init(planID: String? = nil, machineID: String? = nil, deepVerify: Bool = false, source: String? = nil) {
        self.planID = planID
        self.machineID = machineID
        self.deepVerify = deepVerify
        self.source = source
    }

    struct NodeEntry {
        var name: String
        var payload: [String: JSONValue]
        var installOrder: Int?
        var commit: String?
        var requirements: Bool
    }

    public func plan(for lock: Lockfile) -> JSONValue {
        let lock = lock.normalized()
        let nodes = lock.customNodes.map { node -> NodeEntry in
            var payload: [String: JSONValue] = ["name": .string(node.name), "url": .string(node.url), "commit": .string(node.commit)]
            if let recursive = node.recursive { payload["recursive"] = .bool(recursive) }
            if let requirements = node.requirements { payload["requirements"] = .bool(requirements) }
            if let env = node.env, !env.isEmpty { payload["env"] = .object(env.mapValues { .string($0) }) }
            if let order = node.installOrder { payload["install_order"] = .number(Double(order)) }
            return NodeEntry(name: node.name, payload: payload, installOrder: node.installOrder, commit: node.commit, requirements: node.requirements ?? true)
        }
        let comfyui = lock.comfyui.map { repository -> [String: JSONValue] in ["url": .string(repository.url), "commit": .string(repository.commit)] }
        let models = lock.models.map { model -> (path: String, payload: [String: JSONValue], size: Int64?, sha256: String?) in
            (model.path, [
                "url": .string(model.url), "directory": .string(model.directory), "filename": .string(model.filename),
                "sha256": .string(model.sha256), "size": .number(Double(model.size)),
            ], model.size, model.sha256)
        }
        var digest = SHA256Hasher()
        digest.update(lock.encoded())
        let classTypes = Set((lock.workflows ?? []).flatMap(\.nodes)).sorted()
        return build(comfyui: comfyui, comfyuiCommit: lock.comfyui?.commit, nodes: nodes, models: models, python: lock.python, fingerprint: digest.finalize(), classTypes: classTypes)
    }

    public func plan(for spec: Spec) -> JSONValue {
        let nodes = spec.customNodes.sorted { $0.name.lowercased() < $1.name.lowercased() }.map { node -> NodeEntry in
            var payload: [String: JSONValue] = ["name": .string(node.name), "url": .string(node.url)]
            if let commit = node.commit { payload["commit"] = .string(commit) }
            if let tag = node.tag { payload["tag"] = .string(tag) }
            if let branch = node.branch { payload["branch"] = .string(branch) }
            if let recursive = node.recursive { payload["recursive"] = .bool(recursive) }
            if let requirements = node.requirements { payload["requirements"] = .bool(requirements) }
            if let env = node.env, !env.isEmpty { payload["env"] = .object(env.mapValues { .string($0) }) }
            if let order = node.installOrder { payload["install_order"] = .number(Double(order)) }
            let full = node.commit.flatMap { Git.isFullCommit($0.lowercased()) ? $0.lowercased() : nil }
            return NodeEntry(name: node.name, payload: payload, installOrder: node.installOrder, commit: full, requirements: node.requirements ?? true)
        }
        let comfyui = spec.comfyui.map { source -> [String: JSONValue] in
            var payload: [String: JSONValue] = ["url": .string(source.url)]
            if let commit = source.commit { payload["commit"] = .string(commit) }
            if let tag = source.tag { payload["tag"] = .string(tag) }
            if let branch = source.branch { payload["branch"] = .string(branch) }
            if let ref = source.ref { payload[Git.isCommitPrefix(ref) ? "commit" : "branch"] = .string(ref) }
            return payload
        }
        let models = spec.models.sorted { $0.path < $1.path }.map { model -> (path: String, payload: [String: JSONValue], size: Int64?, sha256: String?) in
            var payload: [String: JSONValue] = ["url": .string(model.url), "directory": .string(model.directory), "filename": .string(model.filename)]
            if let sha256 = model.sha256 { payload["sha256"] = .string(sha256.lowercased()) }
            if let size = model.size { payload["size"] = .number(Double(size)) }
            return (model.path, payload, model.size, model.sha256?.lowercased())
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var digest = SHA256Hasher()
        digest.update((try? encoder.encode(spec)) ?? Data())
        let commit = spec.comfyui?.commit.flatMap { Git.isFullCommit($0.lowercased()) ? $0.lowercased() : nil }
        return build(comfyui: comfyui, comfyuiCommit: commit, nodes: nodes, models: models, python: spec.python, fingerprint: digest.finalize())
    }

    func build(
        comfyui: [String: JSONValue]?, comfyuiCommit: String?, nodes: [NodeEntry],
        models: [(path: String, payload: [String: JSONValue], size: Int64?, sha256: String?)], python: PythonRequirements?, fingerprint: String,
        classTypes: [String] = []
    ) -> JSONValue {
        var jobs: [JSONValue] = []
        var allIDs: [String] = []
        func job(_ id: String, _ kind: String, _ payload: [String: JSONValue], dependsOn: [String] = [], label: String) {
            var fields: [String: JSONValue] = ["id": .string(id), "kind": .string(kind), "payload": .object(payload), "label": .string(String(label.prefix(200)))]
            if !dependsOn.isEmpty { fields["depends_on"] = .array(dependsOn.map { .string($0) }) }
            jobs.append(.object(fields))
            allIDs.append(id)
        }
        if let comfyui { job("comfyui", "comfyui", comfyui, label: "ComfyUI") }
        var usedIDs = Set(allIDs)
        for model in models {
            job(Self.jobID("model:" + model.path, taken: &usedIDs), "download", model.payload, label: "model \(model.path)")
        }
        // Nodes: unordered ones in parallel after ComfyUI; ordered ones group by group.
        let base = comfyui == nil ? [] : ["comfyui"]
        let orders = Array(Set(nodes.compactMap(\.installOrder))).sorted()
        var previousGroup = base
        var orderDependencies: [Int: [String]] = [:]
        for order in orders {
            orderDependencies[order] = previousGroup
            previousGroup = nodes.filter { $0.installOrder == order }.map { "node:" + $0.name }
        }
        var nodeIDs: [String] = []
        for node in nodes.sorted(by: { ($0.installOrder ?? Int.max, $0.name.lowercased()) < ($1.installOrder ?? Int.max, $1.name.lowercased()) }) {
            let id = "node:" + node.name
            usedIDs.insert(id)
            let dependencies = node.installOrder.flatMap { orderDependencies[$0] } ?? base
            job(id, "node", node.payload, dependsOn: dependencies, label: "node \(node.name)")
            nodeIDs.append(id)
        }
        let requirementNodes = nodes.filter(\.requirements).map(\.name).sorted { $0.lowercased() < $1.lowercased() }
        let pins = (python?.constraints ?? []) + (python?.packages ?? []).filter { $0.contains("==") }
        if comfyui != nil || !requirementNodes.isEmpty || !pins.isEmpty {
            // Empty arrays are left out: Redis's cjson would store them as {}.
            var payload: [String: JSONValue] = [:]
            if !requirementNodes.isEmpty { payload["nodes"] = .array(requirementNodes.map { .string($0) }) }
            if !pins.isEmpty { payload["constraints"] = .array(Array(Set(pins)).sorted().map { .string($0) }) }
            job("python-deps", "python-deps", payload, dependsOn: base + nodeIDs, label: "Python requirements")
        }
        var verify: [String: JSONValue] = [:]
        let pinnedNodes = nodes.compactMap { node in node.commit.map { JSONValue.object(["name": .string(node.name), "commit": .string($0)]) } }
        if !pinnedNodes.isEmpty { verify["nodes"] = .array(pinnedNodes) }
        if !models.isEmpty {
            verify["models"] = .array(models.map { model in
                var entry: [String: JSONValue] = ["path": .string(model.path)]
                if let size = model.size { entry["size"] = .number(Double(size)) }
                if let sha256 = model.sha256 { entry["sha256"] = .string(sha256) }
                return .object(entry)
            })
        }
        if let comfyuiCommit { verify["comfyui"] = .object(["commit": .string(comfyuiCommit)]) }
        let packages = python?.packages ?? []
        if !packages.isEmpty { verify["python_packages"] = .array(packages.sorted().map { .string($0) }) }
        if deepVerify { verify["deep"] = .bool(true) }
        job("verify", "verify", verify, dependsOn: allIDs, label: "verify")
        if let services {
            var payload: [String: JSONValue] = [:]
            if !nodes.isEmpty { payload["nodes"] = .array(nodes.map(\.name).sorted().map { .string($0) }) }
            if !classTypes.isEmpty { payload["class_types"] = .array(classTypes.map { .string($0) }) }
            if let deadline = services.deadlineSeconds { payload["deadline_s"] = .number(deadline) }
            job("services", "services", payload, dependsOn: allIDs, label: "ComfyUI serves every node")
        }

        var plan: [String: JSONValue] = [
            "version": .number(1),
            "plan_id": .string(planID ?? "lock-" + String(fingerprint.prefix(16))),
            "jobs": .array(jobs),
        ]
        if let machineID { plan["machine_id"] = .string(machineID) }
        var meta: [String: JSONValue] = ["fingerprint": .string(fingerprint), "generated_by": .string("provision plan")]
        if let source { meta["source"] = .string(source) }
        plan["meta"] = .object(meta)
        return .object(plan)
    }

    /// A plan job id from free text: allowed characters kept, others replaced, at most 200 bytes, unique.
    static func jobID(_ text: String, taken: inout Set<String>) -> String {
        var id = String(text.unicodeScalars.map { scalar -> Character in
            scalar.isASCII && (CharacterSet.alphanumerics.contains(scalar) || "._:@+-".unicodeScalars.contains(scalar)) ? Character(scalar) : "_"
        })
        if id.utf8.count > 180 {
            var digest = SHA256Hasher()
            digest.update(Data(text.utf8))
            id = String(id.prefix(160)) + "+" + String(digest.finalize().prefix(16))
        }
        var candidate = id
        var n = 2
        while taken.contains(candidate) {
            candidate = id + "+\(n)"
            n += 1
        }
        taken.insert(candidate)
        return candidate
    }

    /// The plan as JSON text: keys sorted, job order kept.
    public static func encode(_ plan: JSONValue, pretty: Bool = true) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = pretty ? [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
        let data = (try? encoder.encode(plan)) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}
