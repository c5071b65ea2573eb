import Logging

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

    public init(workerID: String, makeLogger: @escaping @Sendable () -> Logger, progress: @escaping @Sendable (JobProgress) -> Void) {
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
