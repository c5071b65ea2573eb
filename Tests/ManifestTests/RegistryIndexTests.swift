import Foundation
import WorkflowAnalysis
import TestSupport
import Testing

/// The prepared registry index (RegistryIndex): read instead of the JSON only while it is current and intact.
@Suite("Registry index")
struct RegistryIndexTests {
    /// A registry folder (the test registry's files, plus names that need escaping in the index) and a cache.
    func makeRegistry() throws -> (folder: URL, store: RegistryStore, map: String) {
        let folder = try makeTemporaryDirectory("registry-index")
        let map = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: fixture("registry/extension-node-map.json"))))
        var entries = try #require(map as? [String: Any])
        // Tabs, newlines, backslashes, a title that starts with '=', non-ASCII: the index's escaping.
        entries["https://github.com/carol/odd-names"] = [["Tab\tNode", "Line\nBreak", "Back\\slash\\t", "Ünïcode ノード", ""], ["title_aux": "=odd\ttitle"]]
        entries["https://github.com/dave/no-title"] = [["Untitled Node"], [String: Any]()]
        try JSONSerialization.data(withJSONObject: entries, options: [.prettyPrinted, .sortedKeys])
            .write(to: folder.appendingPathComponent("extension-node-map.json"))
        try FileManager.default.copyItem(atPath: fixture("registry/custom-node-list.json"), toPath: folder.appendingPathComponent("custom-node-list.json").path)
        try "CoreTypeFromDocs\nKSampler\n".write(to: folder.appendingPathComponent("core-node-types.txt"), atomically: true, encoding: .utf8)
        let store = RegistryStore(cacheDirectory: folder.appendingPathComponent("cache").path)
        return (folder, store, folder.appendingPathComponent("extension-node-map.json").path)
    }

    /// The analysis of both fixture workflows, as the CLI's JSON (sorted keys).
    func analysisJSON(_ registry: NodeRegistry) throws -> String {
        let workflows = try ["workflow-ui.json", "workflow-api.json"].map { name -> (workflow: Workflow, sha256: String?) in
            (try Workflow.load(path: fixture(name)), nil)
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: try encoder.encode(try WorkflowAnalyzer(registry: registry).analyze(workflows)), as: UTF8.self)
    }

    /// How every type the map names (and a few it does not) resolves, with and without stated packages.
    func resolutions(_ registry: NodeRegistry) -> [String] {
        let types = ["GetNode", "SetNode", "ImageResizeKJ", "UnetLoaderGGUF", "CLIPLoaderGGUF", "ImageCaptioner", "BobNode", "DF_Integer",
                     "Power Lora Loader (rgthree)", "LayerStyle: DropShadow", "KSampler", "BrandNewCoreNode", "CoreTypeFromDocs",
                     "Tab\tNode", "Line\nBreak", "Back\\slash\\t", "Ünïcode ノード", "", "Untitled Node", "Nobody's Node"]
        var out: [String] = []
        for type in types {
            for (cnr, aux) in [(nil, nil), ("layerstyle", nil), ("comfyui-layerstyle", nil), (nil, "kijai/ComfyUI-KJNodes"), ("odd-names", nil)] as [(String?, String?)] {
                out.append("\(type) \(cnr ?? "-") \(aux ?? "-") → \(registry.resolve(type, cnrID: cnr, auxID: aux, preferred: ["https://github.com/bob/captioner-nodes"]))")
            }
        }
        return out + ["\(registry.repositoryCount) \(registry.typeCount)", "\(registry.package(forRepository: "https://github.com/carol/odd-names") as Any)"]
    }

    @Test func anIndexedRegistryAnalysesAndResolvesExactlyAsTheJSONDoes() async throws {
        let (folder, store, map) = try makeRegistry()
        defer { try? FileManager.default.removeItem(at: folder) }
        let parsed = try await store.loadReporting(override: map, useIndex: false)
        #expect(parsed.index == .notUsed)
        #expect(!FileManager.default.fileExists(atPath: store.indexPath(forRegistry: map)))

        let first = try await store.loadReporting(override: map)
        #expect(first.index == .rebuilt("there was none"))
        #expect(FileManager.default.fileExists(atPath: store.indexPath(forRegistry: map)))
        let indexed = try await store.loadReporting(override: map)
        #expect(indexed.index == .read)

        #expect(try analysisJSON(indexed.registry) == analysisJSON(parsed.registry))
        #expect(resolutions(indexed.registry) == resolutions(parsed.registry))
        #expect(resolutions(first.registry) == resolutions(parsed.registry))
        // The escaping round-trips and the odd names are really in there.
        if case .package(let package, _) = indexed.registry.resolve("Tab\tNode") {
            #expect(package.repository == "https://github.com/carol/odd-names" && package.title == "=odd\ttitle")
        } else {
            Issue.record("Tab\\tNode did not resolve from the index")
        }
        #expect(indexed.registry.isBuiltin("CoreTypeFromDocs"))
    }

    @Test func aDamagedIndexIsRebuiltAndTheResultIsStillRight() async throws {
        let (folder, store, map) = try makeRegistry()
        defer { try? FileManager.default.removeItem(at: folder) }
        let expected = resolutions(try await store.loadReporting(override: map, useIndex: false).registry)
        let indexPath = store.indexPath(forRegistry: map)
        _ = try await store.loadReporting(override: map)
        let good = try Data(contentsOf: URL(fileURLWithPath: indexPath))

        var flipped = good
        flipped[flipped.count - 5] ^= 0x01
        var otherVersion = String(decoding: good, as: UTF8.self)
        otherVersion = otherVersion.replacingOccurrences(of: "provision-registry-index\t1\t", with: "provision-registry-index\t2\t")
        let damages: [(String, Data, String)] = [
            ("truncated", good.prefix(good.count / 2), "checksum"),
            ("one bit flipped", flipped, "checksum"),
            ("another version", Data(otherVersion.utf8), "another format"),
            ("empty", Data(), "another format"),
            ("not an index", Data("{\"hello\": 1}\n".utf8), "another format"),
        ]
        for (what, bytes, reason) in damages {
            try bytes.write(to: URL(fileURLWithPath: indexPath))
            let loaded = try await store.loadReporting(override: map)
            guard case .rebuilt(let why) = loaded.index else {
                Issue.record("\(what): the index was \(loaded.index), not rebuilt")
                continue
            }
            #expect(why.contains(reason), "\(what): \(why)")
            #expect(resolutions(loaded.registry) == expected, "\(what)")
            // Rebuilt, it is whole again and read next time.
            #expect(try Data(contentsOf: URL(fileURLWithPath: indexPath)) == good, "\(what)")
            #expect(try await store.loadReporting(override: map).index == .read, "\(what)")
        }
    }

    @Test func aRegistryChangedAfterIndexingIsIndexedAgain() async throws {
        let (folder, store, map) = try makeRegistry()
        defer { try? FileManager.default.removeItem(at: folder) }
        _ = try await store.loadReporting(override: map)
        #expect(try await store.loadReporting(override: map).index == .read)

        // A new type (the file grows).
        let text = try String(contentsOfFile: map, encoding: .utf8)
        try text.replacingOccurrences(of: "\"BobNode\"", with: "\"BobNode\",\n\"FreshlyAddedNode\"").write(toFile: map, atomically: true, encoding: .utf8)
        let grown = try await store.loadReporting(override: map)
        #expect(grown.index == .rebuilt("the registry's extension-node-map file changed since it was built"))
        guard case .package(let package, _) = grown.registry.resolve("FreshlyAddedNode") else {
            Issue.record("the added type did not resolve after the registry changed")
            return
        }
        #expect(package.repository == "https://github.com/bob/captioner-nodes")
        #expect(try await store.loadReporting(override: map).registry.resolve("FreshlyAddedNode") == .package(package, via: "registry"))

        // Same size and the old modification time: only the content hash can tell.
        var info = stat()
        #expect(stat(map, &info) == 0)
        let before = try String(contentsOfFile: map, encoding: .utf8)
        try before.replacingOccurrences(of: "\"FreshlyAddedNode\"", with: "\"FreshlyRenamedNo\"").write(toFile: map, atomically: false, encoding: .utf8)
        var times = [info.st_atim, info.st_mtim]
        #expect(utimensat(AT_FDCWD, map, &times, 0) == 0)
        var after = stat()
        #expect(stat(map, &after) == 0 && after.st_size == info.st_size && after.st_mtim.tv_sec == info.st_mtim.tv_sec && after.st_mtim.tv_nsec == info.st_mtim.tv_nsec)
        let renamed = try await store.loadReporting(override: map)
        #expect(renamed.index == .rebuilt("the registry's extension-node-map file changed since it was built"))
        #expect(renamed.registry.resolve("FreshlyAddedNode") == .unresolved)
        #expect(renamed.registry.resolve("FreshlyRenamedNo") == .package(package, via: "registry"))

        // The package list beside it counts too: a new id for a repository.
        let list = folder.appendingPathComponent("custom-node-list.json").path
        let listText = try String(contentsOfFile: list, encoding: .utf8)
        try listText.replacingOccurrences(of: "\"layerstyle\"", with: "\"layerstyle-renamed\"").write(toFile: list, atomically: true, encoding: .utf8)
        let relisted = try await store.loadReporting(override: map)
        #expect(relisted.index == .rebuilt("the registry's custom-node-list file changed since it was built"))
        if case .package(let layer, _) = relisted.registry.resolve("LayerStyle: DropShadow") {
            #expect(layer.package == "layerstyle-renamed")
        } else {
            Issue.record("LayerStyle: DropShadow did not resolve")
        }
    }

    @Test func theCLIIndexesOnceAndAnswersTheSameFromTheIndex() async throws {
        let (folder, _, map) = try makeRegistry()
        defer { try? FileManager.default.removeItem(at: folder) }
        let cache = folder.appendingPathComponent("cli-cache")
        let environment = ["PROVISION_CACHE_DIR": cache.path]
        let arguments = ["analyze", "--json", "--registry", map, fixture("workflow-ui.json"), fixture("workflow-api.json")]
        let parsed = try await provision(arguments, environment: environment)
        #expect(parsed.status == 0, "\(parsed.output)")
        let indexes = cache.appendingPathComponent("comfyui-manager/indexes")
        let files = try FileManager.default.contentsOfDirectory(atPath: indexes.path)
        #expect(files.count == 1 && files.allSatisfy { $0.hasSuffix(".index") }, "\(files)")
        let fromIndex = try await provision(arguments, environment: environment)
        #expect(fromIndex.status == 0 && fromIndex.output == parsed.output)
        // A damaged index is not trusted: the answer is the same, and the index whole again.
        let index = indexes.appendingPathComponent(try #require(files.first))
        let good = try Data(contentsOf: index)
        try good.prefix(good.count - 100).write(to: index)
        let rebuilt = try await provision(arguments, environment: environment)
        #expect(rebuilt.status == 0 && rebuilt.output == parsed.output)
        #expect(try Data(contentsOf: index) == good)
    }
}
