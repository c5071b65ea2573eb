import Foundation

/// A machine's status hash (protocols/redis.md), decoded.
public struct MachineStatus: Sendable, Equatable, Codable {
    public enum State: String, Sendable, Codable {
        /// No plan was ever enqueued.
        case idle
        case pending, running, ready, failed, cancelled
    }

    public var machineID: String
    public var state: State
    public var planID: String?
    public var generation: Int
    public var counts: [String: Int]
    public var enqueuedAt: Int?
    public var startedAt: Int?
    public var finishedAt: Int?
    public var failures: [FailureReason]

    public static let countFields = [
        "total", "waiting", "ready", "active", "delayed", "succeeded", "failed", "dead", "cancelled", "retries",
        "reclaimed",
    ]

    public init(
        machineID: String, state: State, planID: String?, generation: Int, counts: [String: Int], enqueuedAt: Int?,
        startedAt: Int?, finishedAt: Int?, failures: [FailureReason]
    ) {
        self.machineID = machineID
        self.state = state
        self.planID = planID
        self.generation = generation
        self.counts = counts
        self.enqueuedAt = enqueuedAt
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.failures = failures
    }

    /// Decodes the status hash `B:status` and the JSON reasons of `B:failures`.
    public init(machineID: String, hash: [String: String], reasons: [String]) {
        let decoder = JSONDecoder()
        var counts: [String: Int] = [:]
        for field in Self.countFields { counts[field] = hash[field].flatMap { Int($0) } ?? 0 }
        self.init(
            machineID: machineID, state: hash["state"].flatMap(State.init(rawValue:)) ?? .idle,
            planID: hash["plan_id"], generation: hash["generation"].flatMap { Int($0) } ?? 0, counts: counts,
            enqueuedAt: hash["enqueued_at"].flatMap { Int($0) }, startedAt: hash["started_at"].flatMap { Int($0) },
            finishedAt: hash["finished_at"].flatMap { Int($0) },
            failures: reasons.compactMap { try? decoder.decode(FailureReason.self, from: Data($0.utf8)) })
    }

    public func count(_ field: String) -> Int { counts[field] ?? 0 }

    /// True once the plan cannot change any more (ready, cancelled, or failed with nothing left running).
    public var isSettled: Bool {
        switch state {
        case .ready, .cancelled: return true
        case .failed: return count("waiting") + count("ready") + count("active") + count("delayed") == 0
        default: return false
        }
    }

    enum CodingKeys: String, CodingKey {
        case machineID = "machine_id", state, planID = "plan_id", generation, counts
        case enqueuedAt = "enqueued_at", startedAt = "started_at", finishedAt = "finished_at", failures
    }
}

/// Why a job did not succeed, as recorded in the machine's failures list.
public struct FailureReason: Sendable, Equatable, Codable {
    public var job: String
    public var kind: String?
    public var errorType: String
    public var error: String
    public var attempts: Int?

    enum CodingKeys: String, CodingKey {
        case job, kind, errorType = "error_type", error, attempts
    }
}
