import Foundation

/// What must hold before an instance counts as ready (startup step 19): the custom node folders
/// the plan installed each show up as a `python_module` in `/object_info`, none of them failed to
/// import, and every node type the plan's workflows use is there.
package struct Readiness: Sendable, Equatable, Codable {
    /// Folder names under custom_nodes/; nil when the plan did not say (then any import failure counts).
    package var nodes: [String]?
    /// `class_type`s of the analysed workflows.
    package var classTypes: [String]
    /// How long an instance may take to answer before "never answered" becomes a failure.
    package var deadlineSeconds: Double

    package init(nodes: [String]? = nil, classTypes: [String] = [], deadlineSeconds: Double = 300) {
        self.nodes = nodes
        self.classTypes = classTypes
        self.deadlineSeconds = deadlineSeconds
    }

    enum CodingKeys: String, CodingKey {
        case nodes, classTypes = "class_types", deadlineSeconds = "deadline_s"
    }

    /// Judges one answer of `/object_info` with the log printed so far; nil when ready.
    package func judge(objectInfo: [String: String], log: String) -> InstanceFailure? {
        let failures = ComfyUILog.importFailures(in: log).filter { failure in
            nodes.map { $0.contains { Self.sameNode($0, failure.node) } } ?? true
        }
        if let first = failures.first {
            let others = failures.dropFirst().map { "\($0.node) (\($0.error))" }
            return InstanceFailure(
                type: "custom_node_import_failed", node: first.node, error: first.error,
                message: "Custom node \(first.node) failed to import in ComfyUI: \(first.error)"
                    + (others.isEmpty ? "" : "; also \(others.joined(separator: ", "))") + ".")
        }
        let modules = Set(objectInfo.values.compactMap { module -> String? in
            guard module.hasPrefix("custom_nodes.") else { return nil }
            return Self.folder(String(module.dropFirst("custom_nodes.".count)))
        })
        let missingNodes = (nodes ?? []).filter { !modules.contains(Self.folder($0)) }
        if let first = missingNodes.first {
            return InstanceFailure(
                type: "custom_node_not_loaded", node: first, error: nil,
                message: "ComfyUI loaded no node class from custom node\(missingNodes.count > 1 ? "s" : "") \(missingNodes.joined(separator: ", ")) (nothing from custom_nodes.\(first) in /object_info).")
        }
        let missingTypes = classTypes.filter { objectInfo[$0] == nil }
        if !missingTypes.isEmpty {
            return InstanceFailure(
                type: "node_type_missing", node: nil, error: nil,
                message: "The workflows use node type\(missingTypes.count > 1 ? "s" : "") that ComfyUI does not have: \(missingTypes.joined(separator: ", ")).")
        }
        return nil
    }

    /// A folder name as ComfyUI keys its module: `custom_nodes.` + the folder's base name (dots
    /// kept: nodes.py's get_module_name), a single-file node without `.py`.
    static func folder(_ name: String) -> String {
        (name.hasSuffix(".py") ? String(name.dropLast(3)) : name).lowercased()
    }

    static func sameNode(_ a: String, _ b: String) -> Bool { folder(a) == folder(b) }
}

/// Why an instance is not serving, as one sentence and its parts for events.
package struct InstanceFailure: Sendable, Equatable, Codable, Error, CustomStringConvertible {
    /// `custom_node_import_failed`, `custom_node_not_loaded`, `node_type_missing`, `no_answer`,
    /// `port_in_use`, `crash_loop`, `spawn_failed`.
    package var type: String
    package var node: String?
    package var error: String?
    package var message: String

    package init(type: String, node: String? = nil, error: String? = nil, message: String) {
        self.type = type
        self.node = node
        self.error = error
        self.message = message
    }

    package var description: String { message }
}

/// Parses `/object_info` into class name → `python_module`.
package func parseObjectInfo(_ body: [UInt8]) -> [String: String]? {
    guard let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else { return nil }
    var result: [String: String] = [:]
    for (name, value) in object {
        result[name] = (value as? [String: Any])?["python_module"] as? String ?? "nodes"
    }
    return result
}
