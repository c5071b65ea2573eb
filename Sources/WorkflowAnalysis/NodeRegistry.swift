import ComponentSpec
import Foundation
import JobCore

/// A custom node package: a git repository that provides node types.
package struct NodePackage: Sendable, Hashable, Codable, Comparable {
    /// ComfyUI-Manager's id for it when known (its registry id), else the repository's name.
    package var package: String
    package var repository: String
    package var title: String?

    package init(package: String, repository: String, title: String? = nil) {
        self.package = package
        self.repository = repository
        self.title = title
    }

    package static func < (a: NodePackage, b: NodePackage) -> Bool {
        (a.repository.lowercased(), a.package) < (b.repository.lowercased(), b.package)
    }
}

/// How a node type was mapped to what provides it.
package enum NodeResolution: Sendable, Equatable {
    /// ComfyUI itself.
    case builtin
    /// One package, and how it was found: `registry` (exact name), `preemption`, `pattern`, `properties`
    /// (the node's own cnr_id/aux_id), `preferred` (the one of several candidates the user's spec lists).
    case package(NodePackage, via: String)
    /// Several packages claim the type; the workflow does not say which. Never guessed.
    case ambiguous([NodePackage])
    /// Nothing known provides it.
    case unresolved
}

/// ComfyUI-Manager's map of custom node types to repositories (`extension-node-map.json`,
/// `{repo_url: [[class names], {title_aux, nodename_pattern?, preemptions?}]}`), with its
/// `custom-node-list.json` for package ids when available.
package struct NodeRegistry: Sendable {
    /// Normalised repository key → package.
    var packages: [String: NodePackage] = [:]
    /// Node type → keys of the repositories that list it.
    var claims: [String: [String]] = [:]
    /// Node type → keys of the repositories that preempt it.
    var preemptions: [String: [String]] = [:]
    /// (key, pattern) for repositories with a `nodename_pattern`.
    var patterns: [(key: String, regex: NSRegularExpression)] = []
    /// Lower-cased package id (cnr_id) → key.
    var ids: [String: String] = [:]
    /// Folded repository name (`ComfyUI_LayerStyle` → `comfyuilayerstyle`) → keys: the registry's
    /// ids (cnr_id) are often the repository's name, where Manager's id is another.
    var repositoryNames: [String: [String]] = [:]
    /// Types the map attributes to ComfyUI itself.
    var coreTypes: Set<String> = []
    /// Where the map came from, for reports.
    package var source: String
    package var version: String?

    package var repositoryCount: Int { packages.count }
    package var typeCount: Int { claims.count }

    /// An empty registry: only built-in types resolve.
    package init(source: String = "none") {
        self.source = source
    }

    /// Parses the map (and optionally the node list), refusing files of the wrong shape with one sentence.
    package init(extensionMap: Data, nodeList: Data? = nil, coreTypes: [String] = [], source: String, version: String? = nil) throws(RegistryError) {
        self.source = source
        self.version = version
        self.coreTypes = Set(coreTypes)
        let limits = JSONLimits(maxBytes: 256 << 20, maxDepth: 32)
        let document: JSONValue
        do {
            document = try JSONValue.parse(extensionMap, limits: limits)
        } catch {
            throw .notJSON(source: source, problem: error)
        }
        guard let entries = document.object else {
            throw .notAMap(source: source, kind: document.kindDescription)
        }
        var idsByKey: [String: String] = [:]
        if let nodeList {
            if let list = try? JSONValue.parse(nodeList, limits: limits), let items = list["custom_nodes"]?.array {
                for item in items {
                    guard let id = item["id"]?.string, !id.isEmpty else { continue }
                    for url in [item["reference"]?.string] + (item["files"]?.array ?? []).map(\.string) {
                        if let url, let key = RepositoryURL.key(url) { idsByKey[key] = id }
                    }
                }
            }
        }
        // In sorted order of URLs, so that where two entries collide (one id, two spellings of a
        // repository) the same one wins in every process and the prepared index equals a fresh parse.
        for (url, value) in entries.sorted(by: { $0.key < $1.key }) {
            guard let key = RepositoryURL.key(url) else { continue }
            guard let pair = value.array, pair.count >= 1, let names = pair[0].array else {
                throw .malformedEntry(source: source, repository: url)
            }
            let meta = pair.count > 1 ? pair[1].object ?? [:] : [:]
            let repository = RepositoryURL.displayURL(url)
            if Self.isCore(key) {
                for name in names { if let name = name.string { self.coreTypes.insert(name) } }
                continue
            }
            let id = idsByKey[key] ?? RepositoryURL.repositoryName(repository)
            packages[key] = NodePackage(package: id, repository: repository, title: meta["title_aux"]?.string)
            ids[id.lowercased()] = key
            repositoryNames[Self.folded(RepositoryURL.repositoryName(repository)), default: []].append(key)
            for name in names {
                guard let name = name.string else { continue }
                claims[name, default: []].append(key)
            }
            for name in meta["preemptions"]?.array ?? [] {
                if let name = name.string { preemptions[name, default: []].append(key) }
            }
            if let pattern = meta["nodename_pattern"]?.string, pattern.utf8.count <= 1000,
                let regex = try? NSRegularExpression(pattern: pattern)
            {
                patterns.append((key, regex))
            }
        }
        patterns.sort { $0.key < $1.key }
        for name in claims.keys { claims[name] = Array(Set(claims[name] ?? [])).sorted() }
    }

    /// Whether ComfyUI itself provides `type` (our table, or the map's entry for the ComfyUI repository).
    package func isBuiltin(_ type: String) -> Bool {
        BuiltinNodes.contains(type) || coreTypes.contains(type)
    }

    /// Maps a node type to what provides it. `cnrID`/`auxID` are the node's own properties (the
    /// workflow's statement of which pack it came from); `preferred` are repository URLs the user's
    /// spec already installs, used only to choose among candidates.
    package func resolve(_ type: String, cnrID: String? = nil, auxID: String? = nil, preferred: Set<String> = []) -> NodeResolution {
        if isBuiltin(type) || cnrID == BuiltinNodes.package { return .builtin }
        // The node says where it came from.
        if let stated = statedPackage(cnrID: cnrID, auxID: auxID) { return .package(stated, via: "properties") }
        if let preempting = preemptions[type], !preempting.isEmpty {
            let found = preempting.compactMap { packages[$0] }
            if found.count == 1, let only = found.first { return .package(only, via: "preemption") }
        }
        var candidates = (claims[type] ?? []).compactMap { packages[$0] }
        var via = "registry"
        if candidates.isEmpty {
            let range = NSRange(type.startIndex..., in: type)
            candidates = patterns.filter { $0.regex.firstMatch(in: type, range: range) != nil }.compactMap { packages[$0.key] }
            via = "pattern"
        }
        candidates = Array(Set(candidates)).sorted()
        switch candidates.count {
        case 0: return .unresolved
        case 1: return .package(candidates[0], via: via)
        default:
            let preferredKeys = Set(preferred.compactMap(RepositoryURL.key))
            let chosen = candidates.filter { RepositoryURL.key($0.repository).map(preferredKeys.contains) ?? false }
            if chosen.count == 1 { return .package(chosen[0], via: "preferred") }
            return .ambiguous(candidates)
        }
    }

    /// The package a node's `aux_id` ("owner/repo") or `cnr_id` names, if any.
    func statedPackage(cnrID: String?, auxID: String?) -> NodePackage? {
        if let auxID, let repository = Self.repositoryURL(auxID: auxID) {
            if let key = RepositoryURL.key(repository), let known = packages[key] { return known }
            return NodePackage(package: cnrID ?? RepositoryURL.repositoryName(repository), repository: repository)
        }
        guard let cnrID, !cnrID.isEmpty else { return nil }
        if let key = ids[cnrID.lowercased()], let known = packages[key] { return known }
        // The registry id is often the repository's name; one repository of that name settles it.
        if let keys = repositoryNames[Self.folded(cnrID)], Set(keys).count == 1, let known = packages[keys[0]] { return known }
        return nil
    }

    /// A name with case, '-', '_' and '.' folded away, so `comfyui-layerstyle` meets `ComfyUI_LayerStyle`.
    static func folded(_ name: String) -> String {
        String(name.lowercased().filter { $0 != "-" && $0 != "_" && $0 != "." })
    }

    /// The package for a repository URL, from the registry when it lists it.
    package func package(forRepository url: String) -> NodePackage? {
        guard let key = RepositoryURL.key(url) else { return nil }
        return packages[key]
    }

    /// `https://github.com/OWNER/REPO` from an `aux_id` of `OWNER/REPO`.
    static func repositoryURL(auxID: String) -> String? {
        let parts = auxID.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, parts.allSatisfy({ part in
            !part.isEmpty && part.count <= 100 && !part.hasPrefix(".") && part.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }
        }) else { return nil }
        return "https://github.com/\(auxID)"
    }

    static func isCore(_ key: String) -> Bool {
        key == "github.com/comfyanonymous/comfyui" || key == "github.com/comfy-org/comfyui"
    }
}
