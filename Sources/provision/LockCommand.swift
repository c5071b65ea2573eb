import ArgumentParser
import Downloader
import Foundation
import ComponentSpec
import Planning
import WorkflowAnalysis

/// How commands reach git repositories.
struct SourceOptions: ParsableArguments {
    @Flag(help: "Allow file:// repositories (tests, local mirrors; env PROVISION_ALLOW_LOCAL_SOURCES=1).")
    var allowLocalSources = false

    @Option(name: .customLong("mirror"), help: "Contact repositories through a mirror: FROM=TO rewrites URLs starting with FROM (repeatable; the lock keeps the original URL).")
    var mirrors: [String] = []

    @Option(help: "Seconds each git command may take.")
    var gitTimeout = 120

    func git() throws -> Git {
        let allow = allowLocalSources || ProcessInfo.processInfo.environment["PROVISION_ALLOW_LOCAL_SOURCES"] == "1"
        let rewrites = try mirrors.map { text -> (from: String, to: String) in
            guard let equals = text.firstIndex(of: "="), equals != text.startIndex else {
                throw ValidationError("--mirror must look like FROM=TO.")
            }
            return (String(text[..<equals]), String(text[text.index(after: equals)...]))
        }
        return Git(allowLocal: allow, timeout: .seconds(gitTimeout), mirrors: rewrites)
    }
}

struct LockCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lock",
        abstract: "Pin everything a manifest, config_nodes.json or workflows need: commits for repositories, size and SHA-256 for models.")

    @Argument(help: "Manifests, config_nodes.json files, lockfiles or workflows (combined).")
    var inputs: [String]

    @Option(name: [.short, .long], help: "The lockfile to write (- for standard output).")
    var output = "provision.lock"

    @OptionGroup var registryOptions: RegistryOptions
    @OptionGroup var sources: SourceOptions

    @Flag(help: "Let model URLs point to loopback and private addresses (tests, local mirrors).")
    var allowLoopback = false

    @Flag(help: "Write the lock even when node types or models cannot be pinned; they are reported and left out.")
    var allowUnresolved = false

    @Flag(help: "Leave out packages and models used only by muted or bypassed nodes.")
    var skipInactive = false

    @Option(help: "Repositories and models resolved at once.")
    var concurrency = 4

    @Option(help: "Where models without a published hash are downloaded once to be hashed (default: the temporary folder).")
    var scratch: String?

    func validate() throws {
        guard !inputs.isEmpty else { throw ValidationError("Name at least one manifest, config_nodes.json or workflow.") }
        guard (1...32).contains(concurrency) else { throw ValidationError("--concurrency must be between 1 and 32.") }
    }

    func run() async throws {
        try await reportingErrors {
            let documents = try inputs.map { try SpecDocument.load(path: $0) }
            let hasWorkflows = documents.contains { if case .workflow = $0 { return true } else { return false } }
            let registry = hasWorkflows ? try await registryOptions.loadStrict() : NodeRegistry()
            var options = LockOptions()
            options.git = try sources.git()
            options.policy = URLPolicy(allowLoopback: allowLoopback || ProcessInfo.processInfo.environment["PROVISION_ALLOW_LOOPBACK"] == "1")
            options.allowUnresolved = allowUnresolved
            options.includeInactive = !skipInactive
            options.concurrency = concurrency
            if let scratch { options.scratchDirectory = scratch }
            if hasWorkflows && !registryOptions.noRegistry { options.modelList = registryOptions.store.modelList(override: registryOptions.registry) }
            let toStandardOutput = output == "-"
            options.progress = { line in
                if toStandardOutput { FileHandle.standardError.write(Data((line + "\n").utf8)) } else { say(line) }
            }
            let (lock, warnings) = try await Locker(options: options, analyzer: WorkflowAnalyzer(registry: registry)).lock(documents)
            for entry in warnings.nodeTypes { FileHandle.standardError.write(Data("provision: warning: not pinned: node type \(entry)\n".utf8)) }
            for entry in warnings.models { FileHandle.standardError.write(Data("provision: warning: not pinned: model \(entry)\n".utf8)) }
            let data = lock.encoded()
            if toStandardOutput {
                FileHandle.standardOutput.write(data)
            } else {
                let temporary = output + ".tmp-\(getpid())"
                do {
                    try data.write(to: URL(fileURLWithPath: temporary))
                    if rename(temporary, output) != 0 { throw UserFacingError(message: "Could not write \(output): \(String(cString: strerror(errno))).") }
                } catch let error as UserFacingError {
                    throw error
                } catch {
                    throw UserFacingError(message: "Could not write \(output): \(error.localizedDescription).")
                }
                say("wrote \(output): \(lock.comfyui == nil ? "" : "ComfyUI, ")\(lock.customNodes.count) custom nodes, \(lock.models.count) models")
            }
        }
    }
}

struct PlanCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Print the plan (jobs DAG for `provision enqueue --plan`) that installs a lockfile, manifest or config_nodes.json.")

    @Argument(help: "A lockfile (exact pins, alone), or manifests, config_nodes.json and saved discovery responses (refs as given; merged in order, defaults first).")
    var specs: [String]

    @Option(help: "The machine the plan is for (recorded as machine_id; env MACHINE_ID).")
    var machine: String?

    @Option(help: "The plan id (default: lock- and the first 16 hex digits of the input's SHA-256).")
    var planID: String?

    @Flag(help: "Make the final verify job hash every model.")
    var deepVerify = false

    @Flag(help: "End the plan with a services job: ready only once ComfyUI serves every node (and the lock's workflow node types).")
    var withServices = false

    @Option(help: "Seconds ComfyUI may take to serve before the services job fails (default 300).")
    var servicesDeadline: Double?

    @Option(name: [.short, .long], help: "Write the plan here instead of standard output.")
    var output: String?

    func run() async throws {
        try await reportingErrors {
            var builder = PlanBuilder(
                planID: planID, machineID: machine ?? ProcessInfo.processInfo.environment["MACHINE_ID"].flatMap { $0.isEmpty ? nil : $0 },
                deepVerify: deepVerify, source: specs.map { ($0 as NSString).lastPathComponent }.joined(separator: " + "))
            if withServices { builder.services = PlanBuilder.ServicesJob(deadlineSeconds: servicesDeadline) }
            var documents: [(name: String, data: Data)] = []
            for spec in specs {
                guard let data = FileManager.default.contents(atPath: spec) else { throw UserFacingError(message: "The spec \(spec) cannot be read.") }
                documents.append((spec, data))
            }
            let plan = try Planner.plan(documents, builder: builder)
            let text = PlanBuilder.encode(plan) + "\n"
            if let output {
                do {
                    try text.write(toFile: output, atomically: true, encoding: .utf8)
                } catch {
                    throw UserFacingError(message: "Could not write \(output): \(error.localizedDescription).")
                }
            } else {
                FileHandle.standardOutput.write(Data(text.utf8))
            }
        }
    }
}
