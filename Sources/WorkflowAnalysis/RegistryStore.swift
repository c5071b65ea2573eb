import ComponentSpec
import Downloader
import Foundation
import JobCore

/// How a registry load used its prepared index (RegistryIndex).
package enum RegistryIndexUse: Sendable, Equatable {
    /// The index was current and was read instead of the JSON.
    case read
    /// The JSON was parsed and the index written again, because of the reason given (none, stale, damaged).
    case rebuilt(String)
    /// The JSON was parsed; the index could not be written (the reason).
    case unsaved(String)
    /// The caller asked for the JSON alone.
    case notUsed
}

/// Where the node registry comes from: a file the user names, else ComfyUI-Manager's files taken from
/// the `comfyui-manager` wheel on PyPI (`pip download --no-deps`) and cached under
/// `~/.cache/provision/comfyui-manager/`.
package struct RegistryStore: Sendable {
    package var cacheDirectory: String
    /// The Python that runs pip and reads the wheel.
    package var python: String
    package var timeout: Duration

    /// The files kept from the comfyui-manager wheel.
    package static let files = ["extension-node-map.json", "custom-node-list.json", "model-list.json"]
    /// Node types of ComfyUI itself, one per line: the folders of the `comfyui-embedded-docs` wheel
    /// (ComfyUI's own node documentation, a requirement of ComfyUI), which knows newer core types
    /// (API nodes and the like) than our table and the map's ComfyUI entry.
    package static let coreTypesFile = "core-node-types.txt"

    package init(cacheDirectory: String? = nil, python: String? = nil, timeout: Duration = .seconds(300)) {
        let env = ProcessInfo.processInfo.environment
        if let cacheDirectory {
            self.cacheDirectory = cacheDirectory
        } else if let configured = env["PROVISION_CACHE_DIR"], !configured.isEmpty {
            self.cacheDirectory = configured + "/comfyui-manager"
        } else {
            let base = env["XDG_CACHE_HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? ((env["HOME"] ?? NSHomeDirectory()) + "/.cache")
            self.cacheDirectory = base + "/provision/comfyui-manager"
        }
        self.python = python ?? env["PROVISION_PYTHON"].flatMap { $0.isEmpty ? nil : $0 } ?? "python3"
        self.timeout = timeout
    }

    /// The registry from `override` (an extension-node-map.json; a custom-node-list.json beside it is
    /// used for package ids), else the cache, fetching the wheel when the cache is empty or `refresh`.
    package func load(override: String? = nil, refresh: Bool = false) async throws(RegistryError) -> NodeRegistry {
        try await loadReporting(override: override, refresh: refresh).registry
    }

    /// `load`, saying how the prepared index was used; `useIndex` false parses the JSON and leaves the index alone.
    package func loadReporting(override: String? = nil, refresh: Bool = false, useIndex: Bool = true) async throws(RegistryError)
        -> (registry: NodeRegistry, index: RegistryIndexUse)
    {
        if let override {
            try RegistryError.check(path: override, limit: Self.maxRegistryBytes)
            let folder = (override as NSString).deletingLastPathComponent
            let sibling = (folder as NSString).appendingPathComponent("custom-node-list.json")
            return try prepared(
                map: override, list: sibling == override ? nil : sibling, core: (folder as NSString).appendingPathComponent(Self.coreTypesFile),
                source: override, version: nil, useIndex: useIndex)
        }
        let mapPath = cacheDirectory + "/extension-node-map.json"
        if refresh || !FileManager.default.fileExists(atPath: mapPath) { try await fetch() }
        try RegistryError.check(path: mapPath, limit: Self.maxRegistryBytes)
        let version = (try? String(contentsOfFile: cacheDirectory + "/VERSION", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        let corePath = cacheDirectory + "/" + Self.coreTypesFile
        let hasCore = !Self.readCoreTypes(corePath).isEmpty
        let source = "comfyui-manager \(version ?? "?")" + (hasCore ? " and comfyui-embedded-docs" : "") + " (PyPI wheels, cached in \(cacheDirectory))"
        return try prepared(map: mapPath, list: cacheDirectory + "/custom-node-list.json", core: corePath, source: source, version: version, useIndex: useIndex)
    }

    static let maxRegistryBytes = 256 << 20

    /// Where the prepared index of the registry file `map` lives: beside the cached registry, or for a
    /// file the user names, under the cache's `indexes/` by a hash of its absolute path.
    package func indexPath(forRegistry map: String) -> String {
        if map == cacheDirectory + "/extension-node-map.json" { return cacheDirectory + "/registry.index" }
        let absolute = map.hasPrefix("/") ? map : FileManager.default.currentDirectoryPath + "/" + map
        var hasher = SHA256Hasher()
        hasher.update(Data((absolute as NSString).standardizingPath.utf8))
        return cacheDirectory + "/indexes/" + String(hasher.finalize().prefix(32)) + ".index"
    }

    /// The registry from its prepared index when that is current, else parsed from the JSON and indexed again.
    func prepared(map: String, list: String?, core: String, source: String, version: String?, useIndex: Bool) throws(RegistryError)
        -> (registry: NodeRegistry, index: RegistryIndexUse)
    {
        let mapFile = RegistryIndex.Input.read(role: "extension-node-map", path: map, limit: Self.maxRegistryBytes)
        guard let mapData = mapFile.data else { throw .unreadable(path: map, reason: "cannot be read") }
        let listFile = list.map { RegistryIndex.Input.read(role: "custom-node-list", path: $0, limit: Self.maxRegistryBytes) }
        let coreFile = RegistryIndex.Input.read(role: "core-node-types", path: core, limit: 16 << 20)
        let inputs = [mapFile.input, listFile?.input, coreFile.input].compactMap { $0 }
        let indexPath = indexPath(forRegistry: map)
        let why: RegistryIndex.Problem
        if !useIndex {
            why = .missing
        } else if let data = FileManager.default.contents(atPath: indexPath) {
            do {
                return (try RegistryIndex.decode(data, inputs: inputs, source: source, version: version), .read)
            } catch {
                why = error
            }
        } else {
            why = FileManager.default.fileExists(atPath: indexPath) ? .unreadable("permission or type") : .missing
        }
        let coreTypes = coreFile.data.map { Self.coreTypes(String(decoding: $0, as: UTF8.self)) } ?? []
        let registry = try NodeRegistry(extensionMap: mapData, nodeList: listFile?.data, coreTypes: coreTypes, source: source, version: version)
        guard useIndex else { return (registry, .notUsed) }
        // The index only saves time: a cache that cannot be written costs the parse next time, nothing else.
        do {
            let folder = (indexPath as NSString).deletingLastPathComponent
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            let scratch = folder + "/.index-\(UUID().uuidString).tmp"
            try RegistryIndex.encode(registry, inputs: inputs).write(to: URL(fileURLWithPath: scratch))
            guard rename(scratch, indexPath) == 0 else {
                let reason = String(cString: strerror(errno))
                try? FileManager.default.removeItem(atPath: scratch)
                return (registry, .unsaved(reason))
            }
        } catch {
            return (registry, .unsaved(error.localizedDescription))
        }
        return (registry, .rebuilt(why.description))
    }

    /// One node type per line; empty when the file is missing.
    static func readCoreTypes(_ path: String) -> [String] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
        return coreTypes(text)
    }

    static func coreTypes(_ text: String) -> [String] {
        text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty && $0.utf8.count <= 500 }
    }

    /// ComfyUI-Manager's `model-list.json` (file name → URL and folder, for models without a URL): beside
    /// the registry file given as `override`, else in the cache; empty when there is none.
    package func modelList(override: String? = nil) -> [String: (url: String, directory: String)] {
        let folder = override.map { ($0 as NSString).deletingLastPathComponent } ?? cacheDirectory
        guard let data = FileManager.default.contents(atPath: (folder as NSString).appendingPathComponent("model-list.json")),
            let document = try? JSONValue.parse(data, limits: JSONLimits(maxBytes: 64 << 20, maxDepth: 16)),
            let items = document["models"]?.array
        else { return [:] }
        var map: [String: (url: String, directory: String)] = [:]
        for item in items {
            guard let filename = item["filename"]?.string, let url = item["url"]?.string, let savePath = item["save_path"]?.string,
                savePath != "default", url.hasPrefix("https://")
            else { continue }
            map[filename] = (url, savePath)
        }
        return map
    }

    /// `runCommand`, its failure to start as this module's error.
    private func run(_ executable: String, _ arguments: [String], environment: [String: String], timeout: Duration) async throws(RegistryError) -> CommandResult {
        do {
            return try await runCommand(executable, arguments, environment: environment, timeout: timeout)
        } catch {
            throw .commandFailed(reason: "\(error)")
        }
    }

    /// Downloads the newest `comfyui-manager` wheel with pip and extracts the registry files into the cache.
    package func fetch() async throws(RegistryError) {
        let scratch = NSTemporaryDirectory() + "provision-wheel-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        do {
            try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: cacheDirectory, withIntermediateDirectories: true)
        } catch {
            throw .cacheUnwritable(directory: cacheDirectory, reason: error.localizedDescription)
        }
        var env = ProcessInfo.processInfo.environment
        env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        env["PIP_NO_INPUT"] = "1"
        let pip = ["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", scratch]
        var downloaded = try await run(python, pip + ["comfyui-manager", "comfyui-embedded-docs"], environment: env, timeout: timeout)
        if !downloaded.succeeded && !downloaded.timedOut {
            // The core node list is a bonus; the map is what is needed.
            downloaded = try await run(python, pip + ["comfyui-manager"], environment: env, timeout: timeout)
        }
        guard downloaded.succeeded else {
            let why = downloaded.timedOut ? "pip took longer than \(timeout)" : downloaded.lastLine
            throw .fetchFailed(reason: why)
        }
        let wheels = ((try? FileManager.default.contentsOfDirectory(atPath: scratch)) ?? []).filter { $0.hasSuffix(".whl") }.sorted()
        guard let wheel = wheels.last(where: { $0.hasPrefix("comfyui_manager-") }) else {
            throw .noWheel(directory: scratch)
        }
        let docs = wheels.last { $0.hasPrefix("comfyui_embedded_docs-") }
        // Extract the three files with Python's zipfile, each written beside its final name then renamed.
        let script = """
            import os, sys, zipfile
            wheel, target = sys.argv[1], sys.argv[2]
            names = sys.argv[3:]
            with zipfile.ZipFile(wheel) as z:
                members = {os.path.basename(n): n for n in z.namelist() if os.path.basename(n) in names and n.count('/') == 1}
                if 'extension-node-map.json' not in members:
                    sys.exit('the wheel has no extension-node-map.json')
                for name, member in members.items():
                    data = z.read(member)
                    if len(data) > 256 * 1024 * 1024:
                        sys.exit(name + ' is too large')
                    tmp = os.path.join(target, '.' + name + '.tmp')
                    with open(tmp, 'wb') as f:
                        f.write(data)
                    os.replace(tmp, os.path.join(target, name))
            """
        let extracted = try await run(python, ["-c", script, scratch + "/" + wheel, cacheDirectory] + Self.files, environment: env, timeout: .seconds(60))
        guard extracted.succeeded else { throw .wheelUnreadable(wheel: wheel, reason: extracted.lastLine) }
        if let docs {
            let listing = """
                import os, sys, zipfile
                wheel, target = sys.argv[1], sys.argv[2]
                with zipfile.ZipFile(wheel) as z:
                    names = sorted({n.split('/')[2] for n in z.namelist() if n.startswith('comfyui_embedded_docs/docs/') and n.count('/') >= 3})
                tmp = target + '.tmp'
                with open(tmp, 'w') as f:
                    f.write(''.join(name + '\\n' for name in names if name and '\\n' not in name))
                os.replace(tmp, target)
                """
            _ = try await run(python, ["-c", listing, scratch + "/" + docs, cacheDirectory + "/" + Self.coreTypesFile], environment: env, timeout: .seconds(60))
        }
        // comfyui_manager-4.3-py3-none-any.whl → 4.3
        let parts = wheel.split(separator: "-")
        let version = parts.count > 1 ? String(parts[1]) : wheel
        try? (version + "\n").write(toFile: cacheDirectory + "/VERSION", atomically: true, encoding: .utf8)
        // Prepared now, so the first analysis after a fetch is as quick as the ones after it.
        _ = try? prepared(
            map: cacheDirectory + "/extension-node-map.json", list: cacheDirectory + "/custom-node-list.json",
            core: cacheDirectory + "/" + Self.coreTypesFile, source: "comfyui-manager \(version)", version: version, useIndex: true)
    }
}
