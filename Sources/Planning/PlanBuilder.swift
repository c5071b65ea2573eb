import ComponentSpec
import WorkflowAnalysis
import Downloader
import Foundation
import JobCore

/// Turns a lockfile or a manifest into a plan (protocols/schemas/plan.schema.json): `comfyui` →
/// one `node` job per custom node (parallel; nodes with an `install_order` one group after another)
/// → `python-deps` → `install-scripts` → `verify`, with `download` jobs that depend on nothing and a `verify` job that
/// depends on every other job. Payloads follow protocols/schemas/job-payloads/.
package struct PlanBuilder: Sendable {
    package var planID: String?
    package var machineID: String?
    /// Hash every model in the verify job.
    package var deepVerify = false
    package var source: String?
    /// Append a last `services` job (steps 19-21, protocols/schemas/job-payloads/services.schema.json)
    /// that depends on every other job and succeeds once ComfyUI serves every installed node.
    package var services: ServicesJob?

    /// What the `services` job asks for beyond the plan's nodes and workflows.
    package struct ServicesJob: Sendable {
        /// Seconds ComfyUI may take to answer; nil leaves the default (300).
        package var deadlineSeconds: Double?
        package init(deadlineSeconds: Double? = nil) { self.deadlineSeconds = deadlineSeconds }
    }

    package init(planID: String? = nil, machineID: String? = nil, deepVerify: Bool = false, source: String? = nil) {
        self.planID = planID
        self.machineID = machineID
        self.deepVerify = deepVerify
        self.source = source
    }

    struct NodeEntry {
        var payload: NodePayload
        /// The commit the verify job checks: the pin when it is a full commit.
        var commit: String?
        var allowOutside = false
        var gitPins: [String: String] = [:]
        var name: String { payload.name }
        var installOrder: Int? { payload.installOrder }
        var requirements: Bool { payload.requirements ?? true }

        /// The node job of `source` at `pin`; an empty `env` is left out of the payload.
        init(_ source: NodeSource, pin: String?, allowOutside: Bool?, gitPins: [String: String]? = nil) {
            var source = source
            if source.env?.isEmpty == true { source.env = nil }
            payload = NodePayload(source: source, commit: pin)
            commit = pin.flatMap { Git.isFullCommit($0.lowercased()) ? $0.lowercased() : nil }
            self.allowOutside = allowOutside ?? false
            self.gitPins = gitPins ?? [:]
        }
    }

    typealias ModelEntry = (path: String, payload: DownloadPayload)

    package func plan(for lock: Lockfile) -> JSONValue {
        let lock = lock.normalized()
        // The commit is the pin: the tag or branch it came from stays in the lock for people.
        let nodes = lock.customNodes.map { node in
            NodeEntry(node.source.withoutRefNames, pin: node.commit, allowOutside: node.allowOutside, gitPins: node.gitRequirements)
        }
        let comfyui = lock.comfyui.map { ComfyUIPayload(url: $0.url, commit: $0.commit) }
        let models = lock.models.map { model -> ModelEntry in
            (model.path, DownloadPayload(url: model.url, directory: model.directory, filename: model.filename, sha256: model.sha256, size: model.size))
        }
        var digest = SHA256Hasher()
        digest.update(lock.encoded())
        let classTypes = Set((lock.workflows ?? []).flatMap(\.nodes)).sorted()
        return build(comfyui: comfyui, comfyuiCommit: lock.comfyui?.commit, nodes: nodes, models: models, python: lock.python, fingerprint: digest.finalize(), classTypes: classTypes)
    }

    package func plan(for spec: Spec) -> JSONValue {
        let nodes = spec.customNodes.sorted { $0.name.lowercased() < $1.name.lowercased() }.map { node in
            NodeEntry(node.source, pin: node.commit, allowOutside: node.allowOutside)
        }
        let comfyui = spec.comfyui.map { source -> ComfyUIPayload in
            var payload = ComfyUIPayload(url: source.url, commit: source.commit, tag: source.tag, branch: source.branch)
            if let ref = source.ref {
                if Git.isCommitPrefix(ref) { payload.commit = ref } else { payload.branch = ref }
            }
            return payload
        }
        let models = spec.models.sorted { $0.path < $1.path }.map { model -> ModelEntry in
            (model.path, DownloadPayload(url: model.url, directory: model.directory, filename: model.filename, sha256: model.sha256?.lowercased(), size: model.size))
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var digest = SHA256Hasher()
        digest.update((try? encoder.encode(spec)) ?? Data())
        let commit = spec.comfyui?.commit.flatMap { Git.isFullCommit($0.lowercased()) ? $0.lowercased() : nil }
        return build(comfyui: comfyui, comfyuiCommit: commit, nodes: nodes, models: models, python: spec.python, fingerprint: digest.finalize())
    }

    func build(
        comfyui: ComfyUIPayload?, comfyuiCommit: String?, nodes: [NodeEntry], models: [ModelEntry], python: PythonRequirements?, fingerprint: String,
        classTypes: [String] = []
    ) -> JSONValue {
        var jobs: [JSONValue] = []
        var allIDs: [String] = []
        func job<P: JobPayload>(_ id: String, _ payload: P, dependsOn: [String] = [], label: String) {
            let encoded = (try? JSONValue.parse(payload.encoded())) ?? .object([:])
            var fields: [String: JSONValue] = ["id": .string(id), "kind": .string(P.kind), "payload": encoded, "label": .string(String(label.prefix(200)))]
            if !dependsOn.isEmpty { fields["depends_on"] = .array(dependsOn.map { .string($0) }) }
            jobs.append(.object(fields))
            allIDs.append(id)
        }
        if let comfyui { job("comfyui", comfyui, label: "ComfyUI") }
        var usedIDs = Set(allIDs)
        for model in models {
            job(Self.jobID("model:" + model.path, taken: &usedIDs), model.payload, label: "model \(model.path)")
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
        let ordered = nodes.sorted { NodeSource.installsBefore($0.payload.source, $1.payload.source) }
        for node in ordered {
            let id = "node:" + node.name
            usedIDs.insert(id)
            let dependencies = node.installOrder.flatMap { orderDependencies[$0] } ?? base
            job(id, node.payload, dependsOn: dependencies, label: "node \(node.name)")
            nodeIDs.append(id)
        }
        let requirementNodes = nodes.filter(\.requirements).map(\.name).sorted { $0.lowercased() < $1.lowercased() }
        let pins = (python?.constraints ?? []) + (python?.packages ?? []).filter { $0.contains("==") }
        if comfyui != nil || !requirementNodes.isEmpty || !pins.isEmpty {
            // Empty arrays are left out: Redis's cjson would store them as {}.
            let allowed = nodes.filter { $0.requirements && $0.allowOutside }.map(\.name).sorted()
            let gitPins = nodes.filter(\.requirements).reduce(into: [String: String]()) { $0.merge($1.gitPins) { first, _ in first } }
            let payload = PythonDepsPayload(
                nodes: requirementNodes.isEmpty ? nil : requirementNodes, constraints: pins.isEmpty ? nil : Array(Set(pins)).sorted(),
                allowOutsideNodes: allowed.isEmpty ? nil : allowed, gitPins: gitPins.isEmpty ? nil : gitPins)
            job("python-deps", payload, dependsOn: base + nodeIDs, label: "Python requirements")
        }
        if !nodes.isEmpty {
            // install.py imports what the requirements bring, so it runs after them, in install order.
            let scripts = InstallScriptsPayload(nodes: ordered.map { InstallScriptsPayload.Node(name: $0.name, env: $0.payload.env) })
            let after = allIDs.contains("python-deps") ? ["python-deps"] : base + nodeIDs
            job("install-scripts", scripts, dependsOn: after, label: "install.py of custom nodes")
        }
        var verify = VerifyPayload()
        let pinnedNodes = nodes.compactMap { node in node.commit.map { VerifyPayload.Node(name: node.name, commit: $0) } }
        if !pinnedNodes.isEmpty { verify.nodes = pinnedNodes }
        if !models.isEmpty {
            verify.models = models.map { VerifyPayload.Model(path: $0.path, size: $0.payload.size, sha256: $0.payload.sha256) }
        }
        if let comfyuiCommit { verify.comfyui = VerifyPayload.Checkout(commit: comfyuiCommit) }
        let packages = python?.packages ?? []
        if !packages.isEmpty { verify.pythonPackages = packages.sorted() }
        if deepVerify { verify.deep = true }
        job("verify", verify, dependsOn: allIDs, label: "verify")
        if let services {
            let payload = ServicesPayload(
                nodes: nodes.isEmpty ? nil : nodes.map(\.name).sorted(), classTypes: classTypes.isEmpty ? nil : classTypes,
                deadlineSeconds: services.deadlineSeconds)
            job("services", payload, dependsOn: allIDs, label: "ComfyUI serves every node")
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
    package static func encode(_ plan: JSONValue, pretty: Bool = true) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = pretty ? [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
        let data = (try? encoder.encode(plan)) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}

extension NodeSource {
    /// The source without its tag and branch, for a node whose commit is the pin (a locked node's
    /// tag or branch only says what the spec asked for).
    var withoutRefNames: NodeSource {
        var source = self
        source.tag = nil
        source.branch = nil
        return source
    }
}
