import Foundation

/// One attempt at a job as an executor sees it: the job's id and plan, which attempt this is, and
/// its payload decoded once. No lease, no token, nothing of the queue.
package struct JobAttempt<Payload: JobPayload>: Sendable {
    package let id: String
    /// The plan the job belongs to and the plan's generation on the machine (a re-enqueued plan is a new one).
    package let plan: String
    package let generation: Int
    package let attempt: Int
    package let maxAttempts: Int
    package let payload: Payload

    package init(id: String, plan: String = "", generation: Int = 1, attempt: Int = 1, maxAttempts: Int = 1, payload: Payload) {
        self.id = id
        self.plan = plan
        self.generation = generation
        self.attempt = attempt
        self.maxAttempts = maxAttempts
        self.payload = payload
    }
}

/// Runs one kind of job: the kind is its payload type's. Executors are idempotent: a job may be
/// delivered again after a crash.
package protocol JobExecutor: Sendable {
    associatedtype Payload: JobPayload
    /// What this worker refuses beyond the payload's own rules (sources, paths): a permanent failure.
    func validate(_ payload: Payload) throws(JobFailure)
    /// Runs one attempt and returns its result as JSON. Honours task cancellation (lease lost,
    /// drain). Throw `JobFailure` to say whether a retry can help.
    func run(_ attempt: JobAttempt<Payload>, context: JobContext) async throws -> String
}

extension JobExecutor {
    package var kind: String { Payload.kind }
    package func validate(_ payload: Payload) throws(JobFailure) {}
}

/// A job ready to run: its payload decoded and checked.
package struct PreparedJob: Sendable {
    package let kind: String
    let body: @Sendable (JobContext) async throws -> String

    /// Runs the attempt.
    package func run(context: JobContext) async throws -> String { try await body(context) }
}

/// An executor of any kind, for a registry: decodes a payload's JSON text once, checks it (the
/// payload's rules, then the executor's), and hands the typed attempt to the executor.
package struct AnyJobExecutor: Sendable {
    package let kind: String
    package let step: JobStep
    private let make: @Sendable (_ job: JobAttempt<NoopPayload>, _ payload: String) throws(JobFailure) -> PreparedJob

    package init<E: JobExecutor>(_ executor: E) {
        kind = E.Payload.kind
        step = E.Payload.step
        make = { about, text throws(JobFailure) in
            let payload = try E.Payload.decode(text)
            try payload.validate()
            try executor.validate(payload)
            let job = JobAttempt(
                id: about.id, plan: about.plan, generation: about.generation, attempt: about.attempt, maxAttempts: about.maxAttempts, payload: payload)
            return PreparedJob(kind: E.Payload.kind) { context in try await executor.run(job, context: context) }
        }
    }

    /// Decodes and checks a payload without running anything.
    package func validate(payload: String) throws(JobFailure) {
        _ = try make(JobAttempt(id: "validate", payload: NoopPayload()), payload)
    }

    /// Decodes and checks a payload; an unusable one is a permanent failure.
    package func prepare(id: String, plan: String = "", generation: Int = 1, attempt: Int = 1, maxAttempts: Int = 1, payload: String) throws(JobFailure) -> PreparedJob {
        try make(JobAttempt(id: id, plan: plan, generation: generation, attempt: attempt, maxAttempts: maxAttempts, payload: NoopPayload()), payload)
    }
}

/// The executors a worker offers, by kind.
package struct ExecutorRegistry: Sendable {
    private var executors: [String: AnyJobExecutor] = [:]

    package init(_ executors: [AnyJobExecutor] = []) {
        for executor in executors { self.executors[executor.kind] = executor }
    }

    package mutating func register<E: JobExecutor>(_ executor: E) {
        executors[E.Payload.kind] = AnyJobExecutor(executor)
    }

    package subscript(kind: String) -> AnyJobExecutor? { executors[kind] }

    /// The kinds this worker can run, reported when it registers.
    package var kinds: [String] { executors.keys.sorted() }
}
