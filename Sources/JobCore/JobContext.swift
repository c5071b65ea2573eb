import Logging

/// What an executor gets besides the job: who runs it, where to log, where to report progress.
package struct JobContext: Sendable {
    package let workerID: String
    /// Reports progress of long jobs (bytes of a download); cheap to call often, the receiver throttles.
    package let progress: @Sendable (JobProgress) -> Void
    private let makeLogger: @Sendable () -> Logger

    /// The job's logger (its metadata names the job); built when asked for, since most jobs never log.
    package var logger: Logger { makeLogger() }

    package init(workerID: String, logger: Logger, progress: @escaping @Sendable (JobProgress) -> Void = { _ in }) {
        self.init(workerID: workerID, makeLogger: { logger }, progress: progress)
    }

    package init(workerID: String, makeLogger: @escaping @Sendable () -> Logger, progress: @escaping @Sendable (JobProgress) -> Void) {
        self.workerID = workerID
        self.makeLogger = makeLogger
        self.progress = progress
    }
}

/// How far a running job has come.
package struct JobProgress: Sendable, Equatable {
    package var bytesDone: Int64
    package var bytesTotal: Int64?
    /// Bytes per second over the last interval, when the executor measures it.
    package var bytesPerSecond: Double?

    package init(bytesDone: Int64, bytesTotal: Int64?, bytesPerSecond: Double? = nil) {
        self.bytesDone = bytesDone
        self.bytesTotal = bytesTotal
        self.bytesPerSecond = bytesPerSecond
    }
}
