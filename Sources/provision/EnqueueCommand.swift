import ArgumentParser
import Foundation
import JobQueue
import RedisClient

struct EnqueueCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enqueue",
        abstract: "Enqueue a plan (JSON per protocols/schemas/plan.schema.json) for one machine.")

    @OptionGroup var queue: QueueOptions

    @Option(help: "The plan file, or - for standard input.")
    var plan: String

    @Flag(help: "Supersede a plan the machine is still running.")
    var replace = false

    func run() async throws {
        try await reportingErrors {
            let text = try readPlanFile(plan)
            let jobQueue = try JobQueue(redis: try RedisClient(url: try queue.redisURL), machine: try queue.machineID, prefix: queue.keyPrefix)
            let enqueued = try await jobQueue.enqueue(planJSON: text, replace: replace)
            say("enqueued \(enqueued.jobs) jobs for machine \(jobQueue.keys.machine) (generation \(enqueued.generation), \(enqueued.ready) ready now)")
        }
    }
}

/// Reads a plan file (or standard input), refusing anything larger than Redis should hold.
func readPlanFile(_ path: String, limit: Int = 64 << 20) throws -> String {
    let data: Data
    if path == "-" {
        data = FileHandle.standardInput.readDataToEndOfFile()
    } else {
        let attributes = try? FileManager.default.attributesOfItem(atPath: path)
        if let size = attributes?[.size] as? Int, size > limit {
            throw UserFacingError(message: "The plan \(path) is \(size) bytes, more than the limit of \(limit).")
        }
        guard let contents = FileManager.default.contents(atPath: path) else {
            throw UserFacingError(message: "The plan file \(path) cannot be read.")
        }
        data = contents
    }
    guard data.count <= limit else { throw UserFacingError(message: "The plan is larger than \(limit) bytes.") }
    guard let text = String(data: data, encoding: .utf8) else {
        throw UserFacingError(message: "The plan \(path) is not UTF-8 text.")
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
            let jobQueue = try JobQueue(redis: try RedisClient(url: try queue.redisURL), machine: try queue.machineID, prefix: queue.keyPrefix)
            guard let plan = try await jobQueue.status().planID else {
                throw UserFacingError(message: "Machine \(jobQueue.keys.machine) has no plan to cancel.")
            }
            let count = try await jobQueue.cancel(plan: plan, reason: reason)
            say("cancelled \(count) jobs of plan \(plan)")
        }
    }
}
