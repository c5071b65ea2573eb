/// A job handed to a worker by `claim`: what to run and the lease under which it runs.
public struct ClaimedJob: Sendable, Equatable {
    public let id: String
    public let kind: String
    /// The payload as JSON text, exactly as stored at enqueue.
    public let payload: String
    public let attempt: Int
    public let maxAttempts: Int
    public let lease: Lease
    public let leaseMilliseconds: Int
    public let timeoutMilliseconds: Int
    public let generation: Int
    public let label: String

    public var plan: String { lease.plan }

    public init(
        id: String, kind: String, payload: String, attempt: Int = 1, maxAttempts: Int = 3, lease: Lease,
        leaseMilliseconds: Int = 30_000, timeoutMilliseconds: Int = 3_600_000, generation: Int = 1, label: String = ""
    ) {
        self.id = id
        self.kind = kind
        self.payload = payload
        self.attempt = attempt
        self.maxAttempts = maxAttempts
        self.lease = lease
        self.leaseMilliseconds = leaseMilliseconds
        self.timeoutMilliseconds = timeoutMilliseconds
        self.generation = generation
        self.label = label
    }
}

/// The proof that a worker holds a job: only the newest token of a job may finish it.
public struct Lease: Sendable, Hashable {
    public let plan: String
    public let job: String
    /// The fencing token: a counter that grows with every claim on the machine.
    public let token: String

    public init(plan: String, job: String, token: String) {
        self.plan = plan
        self.job = job
        self.token = token
    }
}

/// The states of a job (protocols/redis.md).
public enum JobState: String, Sendable, CaseIterable, Codable {
    case waiting, ready, active, delayed, succeeded, failed, dead, cancelled
}

/// What `complete` did.
public enum CompletionOutcome: String, Sendable {
    /// The job succeeded now.
    case ok
    /// The same lease had already completed it (a repeated call after a lost reply).
    case duplicate
    /// The lease is no longer the job's (expired and taken over, cancelled, superseded).
    case stale
}

/// What `fail` did.
public enum FailureOutcome: Sendable, Equatable {
    case retry(delayMilliseconds: Int)
    case dead
    case stale
}

/// A flip of the machine's state that a call caused; it happens once per generation.
public enum MachineFlip: String, Sendable {
    case ready, failed
}
