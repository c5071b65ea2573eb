import Foundation
import JobQueue

/// A machine as people and the health server see it: the status hash, whether its workers are alive,
/// and its running jobs with their progress. Encodes as the status JSON
/// (protocols/schemas/status.schema.json): the status fields plus `stalled`, `workers` and `active_jobs`.
package struct MachineSnapshot: Sendable, Equatable, Encodable {
    /// What a machine is, for health: its state, or `stalled` when it should be working and no
    /// worker has sent a heartbeat for the stall time.
    package enum Condition: String, Sendable, Codable {
        case idle, pending, running, stalled, ready, failed, cancelled
    }

    /// One running job and its latest progress.
    package struct ActiveJob: Sendable, Equatable, Codable {
        package var job: String
        package var kind: String
        package var label: String?
        package var attempt: Int?
        package var worker: String?
        package var startedAt: Int?
        package var bytesDone: Int64?
        package var bytesTotal: Int64?
        package var bytesPerSecond: Double?
        /// When the progress was recorded (worker clock, ms).
        package var progressAt: Int?

        enum CodingKeys: String, CodingKey {
            case job, kind, label, attempt, worker, startedAt = "started_at", bytesDone = "bytes_done"
            case bytesTotal = "bytes_total", bytesPerSecond = "bytes_per_second", progressAt = "progress_at"
        }
    }

    /// Liveness of the machine's workers, judged by their heartbeats.
    package struct Workers: Sendable, Equatable, Codable {
        /// Workers registered (and not unregistered).
        package var registered: Int
        /// Workers whose last heartbeat is younger than the stall time.
        package var alive: Int
        package var lastHeartbeatAt: Int?

        enum CodingKeys: String, CodingKey {
            case registered, alive, lastHeartbeatAt = "last_heartbeat_at"
        }
    }

    package var status: MachineStatus
    /// The Redis server's clock when the snapshot was taken (ms).
    package var serverTime: Int
    package var condition: Condition
    package var workers: Workers
    package var activeJobs: [ActiveJob]
    /// The stall time the condition was judged with.
    package var stallAfterMilliseconds: Int

    package var stalled: Bool { condition == .stalled }

    /// One sentence on why the machine is not ready (nil when it is).
    package var reason: String? {
        let done = "\(status.count("succeeded")) of \(status.count("total")) jobs succeeded"
        switch condition {
        case .ready: return nil
        case .idle: return "no plan was ever enqueued for this machine"
        case .pending: return "the plan is enqueued; no worker has taken a job yet (\(done))"
        case .running:
            return "\(done); \(status.count("active")) running, \(status.count("ready") + status.count("waiting") + status.count("delayed")) to go"
        case .stalled:
            let silence = workers.lastHeartbeatAt.map { "for \((serverTime - $0) / 1000) s" } ?? "ever"
            return "stalled: no worker has sent a heartbeat \(silence) (\(done))"
        case .failed:
            let first = status.failures.first.map { ": \($0.job): \($0.errorType): \($0.error)" } ?? ""
            return "\(status.count("dead") + status.count("failed")) jobs failed\(first)"
        case .cancelled: return "the plan was cancelled"
        }
    }

    enum ExtraKeys: String, CodingKey {
        case stalled, workers, activeJobs = "active_jobs"
    }

    package func encode(to encoder: any Encoder) throws {
        try status.encode(to: encoder)
        var container = encoder.container(keyedBy: ExtraKeys.self)
        try container.encode(stalled, forKey: .stalled)
        try container.encode(workers, forKey: .workers)
        try container.encode(activeJobs, forKey: .activeJobs)
    }

    /// The snapshot as stable JSON (sorted keys), as `provision status --json` prints it.
    package var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }
}
