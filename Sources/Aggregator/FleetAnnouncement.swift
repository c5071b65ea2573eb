import Foundation
import JobQueue

/// What the fleet learns when a machine flips (protocols/schemas/machine-ready.schema.json): the
/// message published on `<prefix>:fleet` and the `data` of its `<prefix>:fleet:events` entry.
package struct FleetAnnouncement: Sendable, Equatable, Codable {
    package enum Kind: String, Sendable, Codable {
        case machineReady = "machine_ready"
        case machineFailed = "machine_failed"
    }

    /// How long the plan took, from the server's timestamps.
    package struct Durations: Sendable, Equatable, Codable {
        /// Enqueue to flip.
        package var totalMs: Int
        /// Enqueue to the first claim.
        package var queuedMs: Int?
        /// First claim to flip.
        package var runningMs: Int?

        enum CodingKeys: String, CodingKey {
            case totalMs = "total_ms", queuedMs = "queued_ms", runningMs = "running_ms"
        }
    }

    package var type: Kind
    /// `<machine_id>:<generation>`: one entry per value in the fleet stream.
    package var announceID: String
    package var machineID: String
    package var planID: String
    package var generation: Int
    package var state: String
    package var enqueuedAt: Int?
    package var startedAt: Int?
    package var finishedAt: Int?
    package var durations: Durations
    package var counts: [String: Int]
    /// Why jobs did not succeed (empty for machine_ready).
    package var reasons: [FailureReason]
    /// Who announced, and whether it took over from an announcer that died.
    package var announcedBy: String
    package var tookOver: Bool

    enum CodingKeys: String, CodingKey {
        case type, announceID = "announce_id", machineID = "machine_id", planID = "plan_id", generation, state
        case enqueuedAt = "enqueued_at", startedAt = "started_at", finishedAt = "finished_at", durations, counts
        case reasons, announcedBy = "announced_by", tookOver = "took_over"
    }

    /// Builds the announcement from what `announce` returned (the status hash at the claim).
    package init(machineID: String, generation: Int, status hash: [String: String], failures: [String], claimant: String, tookOver: Bool) {
        let status = MachineStatus(machineID: machineID, hash: hash, reasons: failures)
        type = status.state == .ready ? .machineReady : .machineFailed
        announceID = "\(machineID):\(generation)"
        self.machineID = machineID
        planID = status.planID ?? ""
        self.generation = generation
        state = status.state.rawValue
        enqueuedAt = status.enqueuedAt
        startedAt = status.startedAt
        finishedAt = status.finishedAt
        let end = status.finishedAt ?? status.enqueuedAt ?? 0
        durations = Durations(
            totalMs: max(0, end - (status.enqueuedAt ?? end)),
            queuedMs: status.startedAt.map { max(0, $0 - (status.enqueuedAt ?? $0)) },
            runningMs: status.startedAt.map { max(0, end - $0) })
        counts = status.counts
        reasons = status.failures
        announcedBy = claimant
        self.tookOver = tookOver
    }

    /// The announcement as one JSON object, keys sorted.
    package var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }
}
