import ArgumentParser
import Foundation
import WorkflowAnalysis

/// Options shared by commands that map node types to packages.
struct RegistryOptions: ParsableArguments {
    @Option(help: "ComfyUI-Manager's extension-node-map.json to use instead of the cached copy from the comfyui-manager wheel on PyPI.")
    var registry: String?

    @Flag(help: "Fetch the comfyui-manager wheel again (pip download) and refresh the cache.")
    var refreshRegistry = false

    @Flag(help: "Do not use a registry: only ComfyUI's built-in node types resolve.")
    var noRegistry = false

    var store: RegistryStore { RegistryStore() }

    /// The registry; without network or cache, a warning and built-in types only.
    func load() async -> NodeRegistry {
        if noRegistry { return NodeRegistry(source: "none (--no-registry)") }
        do {
            return try await store.load(override: registry, refresh: refreshRegistry)
        } catch {
            if registry != nil { return NodeRegistry(source: "unusable: \(error)") }
            FileHandle.standardError.write(Data("provision: warning: \(error) Only built-in node types resolve.\n".utf8))
            return NodeRegistry(source: "none (\(error))")
        }
    }

    func loadStrict() async throws -> NodeRegistry {
        if noRegistry { return NodeRegistry(source: "none (--no-registry)") }
        if let registry { return try await store.load(override: registry) }
        return await load()
    }
}

struct AnalyzeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "analyze",
        abstract: "List the custom nodes and model files ComfyUI workflows need (UI or API format, subgraphs expanded).")

    @Argument(help: "Workflow files (.json, UI or API format).")
    var workflows: [String]

    @Flag(help: "Print the analysis as JSON (protocols/schemas/analysis.schema.json).")
    var json = false

    @OptionGroup var registryOptions: RegistryOptions

    @Option(help: "A manifest or config_nodes.json whose repositories settle ambiguous node types.")
    var prefer: String?

    @Flag(help: "Refuse UI-format links to nodes that do not exist (by default a warning, as the editor loads such files); exit 2 when a node type is unresolved or ambiguous, or a model has no known folder.")
    var strict = false

    func validate() throws {
        guard !workflows.isEmpty else { throw ValidationError("Name at least one workflow file.") }
    }

    func run() async throws {
        let analysis: Analysis = try await reportingErrors {
            var limits = WorkflowLimits()
            limits.strictLinks = strict
            let loaded = try workflows.map { path throws -> (workflow: Workflow, sha256: String?) in
                let workflow = try Workflow.load(path: path, limits: limits)
                for warning in workflow.warnings {
                    FileHandle.standardError.write(Data("provision: warning: \(path): \(warning).\n".utf8))
                }
                return (workflow, workflow.sha256)
            }
            var preferred = Set<String>()
            if let prefer {
                switch try SpecDocument.load(path: prefer) {
                case .spec(let spec): preferred = Set(spec.customNodes.map(\.url))
                case .lockfile(let lock): preferred = Set(lock.customNodes.map(\.url))
                case .workflow: throw UserFacingError(message: "--prefer needs a manifest, config_nodes.json or lockfile; \(prefer) is a workflow.")
                }
            }
            let registry = try await registryOptions.loadStrict()
            return try WorkflowAnalyzer(registry: registry, preferred: preferred).analyze(loaded)
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
            say(String(decoding: try encoder.encode(analysis), as: UTF8.self))
        } else {
            printText(analysis)
        }
        if strict && (!analysis.unresolved.isEmpty || !analysis.ambiguous.isEmpty || analysis.models.contains { $0.directory == nil }) {
            throw ExitCode(2)
        }
    }

    func printText(_ analysis: Analysis) {
        for workflow in analysis.workflows {
            say("\(workflow.name) (\(workflow.format.rawValue) format): \(workflow.nodeCount) nodes of \(workflow.nodeTypes) types, \(workflow.subgraphInstances) subgraph instances")
        }
        let custom = analysis.nodes.filter { !$0.builtin }
        say("")
        say("custom node packages: \(analysis.packages.count) (\(custom.count) node types; \(analysis.nodes.count - custom.count) built-in types)")
        for package in analysis.packages {
            say("  \(package.package)  \(package.repository)\(package.inactive ? "  [only muted/bypassed]" : "")")
            say("      \(package.classTypes.joined(separator: ", "))")
        }
        say("")
        say("models: \(analysis.models.count)")
        for model in analysis.models {
            var line = "  \(model.directory ?? "(folder unknown)")/\(model.filename)"
            if model.inactive { line += "  [only muted/bypassed]" }
            if let url = model.url { line += "\n      \(url)" }
            if let sha = model.sha256 { line += "\n      sha256 \(sha)" }
            say(line)
        }
        if !analysis.ambiguous.isEmpty {
            say("")
            say("ambiguous node types: \(analysis.ambiguous.count) (several packages claim them; none chosen)")
            for entry in analysis.ambiguous {
                say("  \(entry.classType)\(entry.inactive ? "  [only muted/bypassed]" : ""): \(entry.candidates.map(\.repository).joined(separator: ", "))")
            }
        }
        if !analysis.unresolved.isEmpty {
            say("")
            say("unresolved node types: \(analysis.unresolved.count) (no known package provides them)")
            for entry in analysis.unresolved { say("  \(entry.classType)\(entry.inactive ? "  [only muted/bypassed]" : "")") }
        }
        say("")
        say("registry: \(analysis.registry.source) (\(analysis.registry.repositories) repositories, \(analysis.registry.nodeTypes) node types)")
    }
}
