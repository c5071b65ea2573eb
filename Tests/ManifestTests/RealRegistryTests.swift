import Foundation
import WorkflowAnalysis
import TestSupport
import Testing

/// True when PyPI answers from this machine (CI's and developers' machines reach it; a closed one does not).
func pypiReachable() -> Bool {
    let probe = Process()
    probe.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    probe.arguments = ["python3", "-c", "import urllib.request; urllib.request.urlopen('https://pypi.org/simple/comfyui-manager/', timeout=15)"]
    probe.standardOutput = FileHandle.nullDevice
    probe.standardError = FileHandle.nullDevice
    guard (try? probe.run()) != nil else { return false }
    probe.waitUntilExit()
    return probe.terminationStatus == 0
}

@Suite("The real registry from the comfyui-manager wheel on PyPI", .enabled(if: pypiReachable(), "PyPI is unreachable from this machine"))
struct RealRegistryTests {
    @Test func theWheelsExtensionNodeMapParsesAndResolves() async throws {
        let cache = try makeTemporaryDirectory("registry-cache")
        defer { try? FileManager.default.removeItem(at: cache) }
        let store = RegistryStore(cacheDirectory: cache.path, python: ProcessInfo.processInfo.environment["PROVISION_PYTHON"])
        let registry = try await store.load()
        print("real registry: \(registry.source): \(registry.repositoryCount) repositories, \(registry.typeCount) node types")
        #expect(registry.repositoryCount > 1000 && registry.typeCount > 10_000)
        #expect(registry.isBuiltin("KSampler") && registry.isBuiltin("CheckpointLoaderSimple"))
        if case .package(let package, let via) = registry.resolve("UnetLoaderGGUF") {
            #expect(package.repository.lowercased().hasSuffix("city96/comfyui-gguf") && via == "preemption")
        } else {
            Issue.record("UnetLoaderGGUF did not resolve to one package")
        }
        if case .package(let package, _) = registry.resolve("GetNode") {
            #expect(package.repository.lowercased().contains("comfyui-kjnodes"))
        }
        // Some types are claimed by several repositories: never guessed.
        let ambiguous = ["ImageCaptioner", "PromptBuilder", "ColorPalette"].filter { if case .ambiguous = registry.resolve($0) { return true } else { return false } }
        #expect(!ambiguous.isEmpty)
        #expect(!store.modelList().isEmpty)
        // The cache is used the second time (no pip run).
        let started = ContinuousClock.now
        _ = try await store.load()
        print("cached registry load: \(ContinuousClock.now - started)")
    }
}
