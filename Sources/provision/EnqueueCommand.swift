import ArgumentParser
import Foundation
import JobQueue
import RedisClient
import Downloader
import Planning
import Scheduler

struct EnqueueCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enqueue",
        abstract: "Enqueue a plan (JSON per protocols/schemas/plan.schema.json) for one machine.")

    @OptionGroup var queue: QueueOptions
    @OptionGroup var source: PlanSource

    @Flag(help: "Supersede a plan the machine is still running.")
    var replace = false

    func run() async throws {
        try await reportingErrors {
            guard let text = try await source.planJSON(machine: try queue.machineID) else {
                throw ValidationError("Say what to install: --plan FILE, --spec FILE or --discovery-api URL.")
            }
            let jobQueue = try JobQueue(redis: try queue.oneShotClient(), machine: try queue.machineID, prefix: queue.keyPrefix)
            let enqueued = try await jobQueue.enqueue(planJSON: text, replace: replace)
            say("enqueued \(enqueued.jobs) jobs for machine \(jobQueue.keys.machine) (generation \(enqueued.generation), \(enqueued.ready) ready now)")
        }
    }
}

/// Where a plan comes from: a plan file, specs (manifest, lockfile, config_nodes.json, saved
/// discovery responses), or the discovery API itself.
struct PlanSource: ParsableArguments {
    @Option(help: "A plan file (protocols/schemas/plan.schema.json), or - for standard input.")
    var plan: String?

    @Option(help: "A manifest, lockfile, config_nodes.json or saved discovery response (repeatable; merged in order, defaults first).")
    var spec: [String] = []

    @Option(help: "The API that serves /custom-nodes/defaults, /workflows/dependencies and /collections/dependencies (protocols/discovery.md).")
    var discoveryApi: String?

    @Option(help: "Workflows whose dependencies to install, comma-separated (env COMPONENTS).")
    var components: String?

    @Option(help: "Collections whose dependencies to install, comma-separated (env COLLECTIONS).")
    var collections: String?

    @Option(name: .customLong("api-header"), help: "A header for the discovery API, 'Name: value'; ${VAR} is read from the environment (repeatable).")
    var apiHeaders: [String] = []

    @Flag(help: "Let the discovery API be on a loopback or private address.")
    var allowLoopbackApi = false

    @Flag(help: "End the plan with a services job: ready only once ComfyUI serves every installed node (env PROVISION_WITH_SERVICES=1).")
    var withServices = false

    @Option(help: "Seconds ComfyUI may take to serve before the services job fails (default 300).")
    var servicesDeadline: Double?

    var isEmpty: Bool { plan == nil && spec.isEmpty && discoveryApi == nil }

    /// The plan JSON to enqueue, or nil when nothing was named.
    func planJSON(machine: String) async throws -> String? {
        if let plan { return try readPlanFile(plan) }
        var documents: [(name: String, data: Data)] = []
        for path in spec {
            guard let data = FileManager.default.contents(atPath: path) else { throw UserFacingError(message: "The spec \(path) cannot be read.") }
            documents.append((path, data))
        }
        if let api = discoveryApi { documents += try await discover(api) }
        if documents.isEmpty { return nil }
        let fingerprint = documents.reduce(into: SHA256Hasher()) { $0.update($1.data) }
        var digest = fingerprint
        var builder = PlanBuilder(planID: "spec-\(digest.finalize().prefix(12))-\(Int(Date().timeIntervalSince1970 * 1000))", machineID: machine, source: documents.map(\.name).joined(separator: " + "))
        if withServices || ProcessInfo.processInfo.environment["PROVISION_WITH_SERVICES"] == "1" {
            builder.services = PlanBuilder.ServicesJob(deadlineSeconds: servicesDeadline)
        }
        return PlanBuilder.encode(try Planner.plan(documents, builder: builder), pretty: false)
    }

    /// Step 16 of the seed: defaults always, then the components' and collections' dependencies.
    private func discover(_ api: String) async throws -> [(name: String, data: Data)] {
        let environment = ProcessInfo.processInfo.environment
        var headers: [(name: String, value: String)] = []
        for line in apiHeaders {
            guard let colon = line.firstIndex(of: ":") else { throw ValidationError("--api-header must look like 'Name: value'.") }
            let value = try EnvironmentTemplate.expand(String(line[line.index(after: colon)...]).trimmingCharacters(in: .whitespaces), environment: environment, field: "--api-header")
            headers.append((String(line[..<colon]).trimmingCharacters(in: .whitespaces), value))
        }
        let fetch = SmallFetch(policy: URLPolicy(allowLoopback: allowLoopbackApi || environment["PROVISION_ALLOW_LOOPBACK"] == "1"), headers: headers)
        let base = api.hasSuffix("/") ? String(api.dropLast()) : api
        var documents = [("\(base)/custom-nodes/defaults", try await fetch.get("\(base)/custom-nodes/defaults"))]
        for (path, list) in [("workflows", components ?? environment["COMPONENTS"]), ("collections", collections ?? environment["COLLECTIONS"])] {
            let names = (list ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            guard !names.isEmpty else { continue }
            let query = names.map { $0.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-_."))) ?? $0 }.joined(separator: ",")
            let url = "\(base)/\(path)/dependencies?names=\(query)"
            documents.append((url, try await fetch.get(url)))
        }
        return documents
    }
}

/// Reads a plan file (or standard input), refusing anything larger than Redis should hold: the
/// size is checked while reading, so an endless or huge input is not read past the limit.
func readPlanFile(_ path: String, limit: Int = 64 << 20) throws -> String {
    let handle: FileHandle
    if path == "-" {
        handle = FileHandle.standardInput
    } else {
        guard let file = FileHandle(forReadingAtPath: path) else {
            throw UserFacingError(message: "The plan file \(path) cannot be read.")
        }
        handle = file
    }
    defer { if path != "-" { try? handle.close() } }
    var data = Data()
    while true {
        let chunk: Data?
        do { chunk = try handle.read(upToCount: 1 << 20) } catch {
            throw UserFacingError(message: "The plan \(path == "-" ? "on standard input" : path) cannot be read: \(error.localizedDescription)")
        }
        guard let chunk, !chunk.isEmpty else { break }
        data.append(chunk)
        if data.count > limit {
            throw UserFacingError(message: "The plan \(path == "-" ? "on standard input" : path) is larger than the limit of \(limit) bytes.")
        }
    }
    guard let text = String(data: data, encoding: .utf8) else {
        throw UserFacingError(message: "The plan \(path) is not UTF-8 text.")
    }
    // Strict JSON and the plan's shape before anything reaches Redis: the script's decoder takes
    // `0x2`, lets a repeated key win, and cannot say which field has the wrong type.
    do throws(PlanShapeError) {
        try PlanShape.check(data)
    } catch {
        throw UserFacingError(message: "The plan was refused: \(error).")
    }
    return text
}

struct CancelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cancel", abstract: "Cancel the machine's current plan.")

    @OptionGroup var queue: QueueOptions

    @Option(help: "Why, recorded on every cancelled job.")
    var reason = "cancelled by an operator"

    func run() async throws {
        try await reportingErrors {
            let jobQueue = try JobQueue(redis: try queue.oneShotClient(), machine: try queue.machineID, prefix: queue.keyPrefix)
            guard let plan = try await jobQueue.status().planID else {
                throw UserFacingError(message: "Machine \(jobQueue.keys.machine) has no plan to cancel.")
            }
            let count = try await jobQueue.cancel(plan: plan, reason: reason)
            say("cancelled \(count) jobs of plan \(plan)")
        }
    }
}
