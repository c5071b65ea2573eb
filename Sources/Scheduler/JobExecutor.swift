import JobQueue
import Logging

/// Runs one kind of job. Executors are idempotent: a job may be delivered again after a crash.
public protocol JobExecutor: Sendable {
    /// The job kind this executor runs (`noop`, `sleep`, `download`, `node`, …).
    var kind: String { get }
    /// Checks a payload before anything runs; an unusable payload is a permanent failure.
    func validate(payload: String) throws(JobFailure)
    /// Runs one attempt and returns its result as JSON. Honours task cancellation (lease lost,
    /// drain). Throw `JobFailure` to say whether a retry can help.
    func run(_ job: ClaimedJob, context: JobContext) async throws -> String
}

/// What an executor gets besides the job: who runs it, where to log, where to report progress.
public struct JobContext: Sendable {
    public let workerID: String
    /// Reports progress of long jobs (bytes of a download); cheap to call often, the receiver throttles.
    public let progress: @Sendable (JobProgress) -> Void
    private let makeLogger: @Sendable () -> Logger

    /// The job's logger (its metadata names the job); built when asked for, since most jobs never log.
    public var logger: Logger { makeLogger() }

    public init(workerID: String, logger: Logger, progress: @escaping @Sendable (JobProgress) -> Void = { _ in }) {
        self.init(workerID: workerID, makeLogger: { logger }, progress: progress)
    }

    init(workerID: String, makeLogger: @escaping @Sendable () -> Logger, progress: @escaping @Sendable (JobProgress) -> Void) {
        self.workerID = workerID
        self.makeLogger = makeLogger
        self.progress = progress
    }
}

/// How far a running job has come.
public struct JobProgress: Sendable, Equatable {
    public var bytesDone: Int64
    public var bytesTotal: Int64?
    /// Bytes per second over the last interval, when the executor measures it.
    public var bytesPerSecond: Double?

    public init(bytesDone: Int64, bytesTotal: Int64?, bytesPerSecond: Double? = nil) {
        self.bytesDone = bytesDone
        self.bytesTotal = bytesTotal
        self.bytesPerSecond = bytesPerSecond
    }
}

/// A failed attempt, classified: `type` is a short machine-readable cause, `message` one sentence.
public struct JobFailure: Error, Sendable, Equatable, CustomStringConvertible {
    public var type: String
    public var message: String
    public var retryable: Bool

    public init(type: String, message: String, retryable: Bool) {
        self.type = type
        self.message = message
        self.retryable = retryable
    }

    public static func invalidPayload(_ message: String) -> JobFailure {
        JobFailure(type: "invalid_payload", message: message, retryable: false)
    }

    public var description: String { message }
}

/// The executors a worker offers, by kind.
public struct ExecutorRegistry: Sendable {
    private var executors: [String: any JobExecutor] = [:]

    public init(_ executors: [any JobExecutor] = []) {
        for executor in executors { register(executor) }
    }

    public mutating func register(_ executor: any JobExecutor) {
        executors[executor.kind] = executor
    }

    public subscript(kind: String) -> (any JobExecutor)? { executors[kind] }

    /// The kinds this worker can run, reported when it registers.
    public var kinds: [String] { executors.keys.sorted() }

    /// The executors every worker has.
    public static let builtin = ExecutorRegistry([NoopExecutor(), SleepExecutor()])
}
