import Foundation
import JobCore

/// The component lists the existing API serves at machine start-up (seed 002, step 16), read as
/// one spec: `/custom-nodes/defaults` (nodes with `install_order`), `/workflows/dependencies` for
/// `COMPONENTS` and `/collections/dependencies` for `COLLECTIONS` (shapes in protocols/discovery.md).
package enum Discovery {
    struct Model: Decodable {
        var url: String
        var directory: String?
        var save_path: String?
        var filename: String?
        var sha256: String?
        var size: Int64?

        func model(source: String) throws(SpecError) -> ModelFile {
            guard let directory = directory ?? save_path, !directory.isEmpty else {
                throw .modelWithoutDirectory(file: source)
            }
            let name = filename ?? URL(string: url)?.lastPathComponent ?? ""
            guard !name.isEmpty, name != "/" else { throw .modelWithoutFilename(file: source) }
            return ModelFile(url: url, directory: directory.trimmingCharacters(in: CharacterSet(charactersIn: "/")), filename: name, sha256: sha256, size: size)
        }
    }

    struct Group: Decodable {
        var name: String?
        var custom_nodes: [CustomNode]?
        var models: [Model]?
    }

    struct Response: Decodable {
        var custom_nodes: [CustomNode]?
        var models: [Model]?
        var workflows: [Group]?
        var collections: [Group]?
    }

    /// True when a JSON object looks like a discovery response rather than a manifest.
    package static func isResponse(_ top: [String: JSONValue]) -> Bool {
        top["workflows"] != nil || top["collections"] != nil
    }

    /// The parts of a manifest a discovery response never carries.
    struct ManifestExtras: Decodable {
        var comfyui: ComfyUISource?
        var python: PythonRequirements?
    }

    /// Merges documents (manifests, config_nodes.json, discovery responses) into one spec, in the
    /// order given: defaults first. A node or model named twice with the same source counts once;
    /// with different sources or pins it is an error naming both documents. ComfyUI and the Python
    /// requirements come from every manifest, whatever else it lists.
    package static func merge(_ documents: [(name: String, data: Data)]) throws(SpecError) -> Spec {
        var merged = Spec()
        var nodeSource: [String: String] = [:]
        var modelSource: [String: String] = [:]
        var comfyuiSource: String?
        for (name, data) in documents {
            let response = try decodeDocument(Response.self, from: data, name: name, what: "spec or discovery response")
            var groups = [Group(name: nil, custom_nodes: response.custom_nodes, models: response.models)]
            groups += (response.workflows ?? []) + (response.collections ?? [])
            if response.workflows == nil, response.collections == nil {
                let extras = try decodeDocument(ManifestExtras.self, from: data, name: name, what: "manifest")
                if let comfyui = extras.comfyui {
                    if let known = merged.comfyui, known != comfyui {
                        throw .conflictingComfyUI(first: comfyuiSource ?? "?", second: name)
                    }
                    merged.comfyui = comfyui
                    comfyuiSource = comfyuiSource ?? name
                }
                if let python = extras.python {
                    var combined = merged.python ?? PythonRequirements()
                    combined.packages = Self.union(combined.packages, python.packages)
                    combined.constraints = Self.union(combined.constraints, python.constraints)
                    merged.python = combined
                }
            }
            for group in groups {
                let source = group.name.map { "\(name) (\($0))" } ?? name
                for node in group.custom_nodes ?? [] {
                    let key = node.name.lowercased()
                    if let index = merged.customNodes.firstIndex(where: { $0.name.lowercased() == key }) {
                        let known = merged.customNodes[index]
                        guard known.url == node.url, known.ref == node.ref else {
                            throw .conflictingNode(node: node.name, first: nodeSource[key] ?? "?", second: source)
                        }
                        if known.installOrder == nil, let order = node.installOrder { merged.customNodes[index].installOrder = order }
                        continue
                    }
                    merged.customNodes.append(node)
                    nodeSource[key] = source
                }
                for raw in group.models ?? [] {
                    let model = try raw.model(source: source)
                    if let known = merged.models.first(where: { $0.path == model.path }) {
                        guard known.url == model.url else {
                            throw .conflictingModelURL(model: model.path, first: modelSource[model.path] ?? "?", second: source)
                        }
                        continue
                    }
                    merged.models.append(model)
                    modelSource[model.path] = source
                }
            }
        }
        try SpecRules.validate(merged, name: documents.map(\.name).joined(separator: " + "))
        return merged
    }

    /// Lines of both lists, first occurrence kept; nil when both are nil.
    private static func union(_ a: [String]?, _ b: [String]?) -> [String]? {
        guard a != nil || b != nil else { return nil }
        var seen = Set<String>()
        return ((a ?? []) + (b ?? [])).filter { seen.insert($0).inserted }
    }
}
