/// The Redis key layout of one machine (protocols/redis.md): every key carries the machine id as
/// a hash tag, so one machine's keys live in one cluster slot.
public struct MachineKeys: Sendable, Equatable {
    public let prefix: String
    public let machine: String
    /// `<prefix>:{<machine>}`, the start of every key of this machine.
    public let base: String

    public init(prefix: String = "provision", machine: String) throws(JobQueueError) {
        guard Self.isValidMachineID(machine) else { throw .invalidMachineID(machine) }
        guard !prefix.isEmpty, prefix.count <= 64,
            prefix.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "._:-".contains($0)) })
        else { throw .invalidPrefix(prefix) }
        self.prefix = prefix
        self.machine = machine
        self.base = "\(prefix):{\(machine)}"
    }

    /// Machine ids are 1-64 letters, digits, `.`, `_` or `-`, starting with a letter or digit.
    public static func isValidMachineID(_ id: String) -> Bool {
        guard let first = id.first, id.count <= 64, first.isASCII, first.isLetter || first.isNumber else { return false }
        return id.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) }
    }

    public var status: String { base + ":status" }
    public var ready: String { base + ":ready" }
    public var active: String { base + ":active" }
    public var delayed: String { base + ":delayed" }
    public var wake: String { base + ":wake" }
    public var failures: String { base + ":failures" }
    public var workers: String { base + ":workers" }
    public var heartbeats: String { base + ":heartbeats" }
    public var events: String { base + ":events" }
    /// Latest progress of running jobs (job id → JSON), written by workers at most once a second per job.
    public var progress: String { base + ":progress" }
    /// Counters that only grow (bytes downloaded, job durations), for `/metrics`.
    public var metrics: String { base + ":metrics" }
    /// The current plan's records: a job's record `<job_id>` (JSON) and `<job_id>|payload` etc., plan fields `|<field>`.
    public var jobs: String { base + ":jobs" }
    /// The previous plan's records (the same layout as `jobs`), kept for the retention window.
    public var previous: String { base + ":previous" }
    /// Plan ids enqueued within the retention window (score: enqueue time), refused again.
    public var plans: String { base + ":plans" }
    /// A plan being enqueued in slices, invisible until its last call renames it to `jobs`.
    public var staging: String { base + ":staging" }

    /// The fleet-wide channel that `machine_ready` / `machine_failed` are published on (no hash tag:
    /// it is not a key).
    public var fleetChannel: String { prefix + ":fleet" }
    /// The fleet-wide stream of announcements, one entry per machine and generation.
    public var fleetEvents: String { prefix + ":fleet:events" }
    /// The fleet stream's index of the last announced generation of this machine: its hash tag is
    /// the stream's whole name, so it shares the stream's cluster slot (`fleet.lua` touches both).
    public var fleetAnnounced: String { "{\(fleetEvents)}:announced:\(machine)" }

    /// The keys every call of `queue.lua` declares, in order: every key of the machine (retire
    /// deletes exactly these).
    public var scriptKeys: [String] {
        [status, ready, active, delayed, wake, failures, workers, heartbeats, events, jobs, previous, plans, progress, metrics, staging]
    }
}
