import Foundation

/// Where the node registry comes from: a file the user names, else ComfyUI-Manager's files taken from
/// the `comfyui-manager` wheel on PyPI (`pip download --no-deps`) and cached under
/// `~/.cache/provision/comfyui-manager/`.
public struct RegistryStore: Sendable {
    public var cacheDirectory: String
    /// The Python that runs pip and reads the wheel.
    public var python: String
    public var timeout: Duration

    /// The files kept from the wheel.
    public static let files = ["extension-node-map.json", "custom-node-list.json", "model-list.json"]

    public init(cacheDirectory: String? = nil, python: String? = nil, timeout: Duration = .seconds(300)) {
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
    public func load(override: String? = nil, refresh: Bool = false) async throws(ManifestError) -> NodeRegistry {
        if let override {
            let map = try readInput(path: override, what: "node registry", limit: 256 << 20)
            let sibling = ((override as NSString).deletingLastPathComponent as NSString).appendingPathComponent("custom-node-list.json")
            let list = sibling == override ? nil : FileManager.default.contents(atPath: sibling)
            return try NodeRegistry(extensionMap: map, nodeList: list, source: override)
        }
        let mapPath = cacheDirectory + "/extension-node-map.json"
        if refresh || !FileManager.default.fileExists(atPath: mapPath) { try await fetch() }
        let map = try readInput(path: mapPath, what: "cached node registry", limit: 256 << 20)
        let list = FileManager.default.contents(atPath: cacheDirectory + "/custom-node-list.json")
        let version = (try? String(contentsOfFile: cacheDirectory + "/VERSION", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        return try NodeRegistry(extensionMap: map, nodeList: list, source: "comfyui-manager \(version ?? "?") (PyPI wheel, cached in \(cacheDirectory))", version: version)
    }

    /// ComfyUI-Manager's `model-list.json` (file name → URL and folder, for models without a URL): beside
    /// the registry file given as `override`, else in the cache; empty when there is none.
    public func modelList(override: String? = nil) -> [String: (url: String, directory: String)] {
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

    /// Downloads the newest `comfyui-manager` wheel with pip and extracts the registry files into the cache.
    public func fetch() async throws(ManifestError) {
        let scratch = NSTemporaryDirectory() + "provision-wheel-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        do {
            try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: cacheDirectory, withIntermediateDirectories: true)
        } catch {
            throw ManifestError("The registry cache \(cacheDirectory) cannot be created: \(error.localizedDescription).")
        }
        var env = ProcessInfo.processInfo.environment
        env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        env["PIP_NO_INPUT"] = "1"
        let downloaded = try await runCommand(
            python, ["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", scratch, "comfyui-manager"],
            environment: env, timeout: timeout)
        guard downloaded.succeeded else {
            let why = downloaded.timedOut ? "pip took longer than \(timeout)" : downloaded.lastLine
            throw ManifestError("The node registry could not be fetched from PyPI (pip download comfyui-manager): \(why); pass --registry FILE with an extension-node-map.json.")
        }
        let wheels = ((try? FileManager.default.contentsOfDirectory(atPath: scratch)) ?? []).filter { $0.hasSuffix(".whl") }.sorted()
        guard let wheel = wheels.last else { throw ManifestError("pip download comfyui-manager produced no wheel in \(scratch).") }
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
        let extracted = try await runCommand(python, ["-c", script, scratch + "/" + wheel, cacheDirectory] + Self.files, environment: env, timeout: .seconds(60))
        guard extracted.succeeded else { throw ManifestError("The registry could not be read from \(wheel): \(extracted.lastLine).") }
        // comfyui_manager-4.3-py3-none-any.whl → 4.3
        let parts = wheel.split(separator: "-")
        let version = parts.count > 1 ? String(parts[1]) : wheel
        try? (version + "\n").write(toFile: cacheDirectory + "/VERSION", atomically: true, encoding: .utf8)
    }
}
