import ArgumentParser
import Foundation
import JobQueue
import RedisClient

/// `provision retire`: removes every key of a machine (its plan, jobs, events, workers, metrics) and
/// its entry in the fleet stream's index, so a retired machine costs Redis nothing.
struct RetireCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "retire",
        abstract: "Remove every Redis key of a machine (stop its workers first).")

    @OptionGroup var queue: QueueOptions

    @Flag(help: "Retire even while the machine's plan is pending or running.")
    var force = false

    func run() async throws {
        try await reportingErrors {
            let redis = try RedisClient(url: try queue.redisURL, label: "retire")
            let jobQueue = try JobQueue(redis: redis, machine: try queue.machineID, prefix: queue.keyPrefix)
            let deleted = try await jobQueue.retire(force: force)
            // The fleet index is in the fleet stream's slot: a call of its own.
            try await FleetStream(redis: redis, keys: jobQueue.keys).forget()
            // The services' keys are written by plain commands, not the queue's script (same slot).
            let services = ServiceKeys(machine: jobQueue.keys)
            let removed = try await redis.send(["DEL", services.services, services.want, services.wake, services.comfyWorkers]).int ?? 0
            say("retired machine \(jobQueue.keys.machine): \(deleted + Int(removed)) keys removed")
        }
    }
}
