import JobQueue

/// Hears what a worker does, for step events, metrics and the fleet announcement. The job-path calls
/// (`jobStarted`, `jobProgress`, `jobSucceeded`, `jobFailed`) run on the hot path: they must only
/// record and return (no network round trip).
package protocol WorkerObserver: Sendable {
    /// The worker registered with the queue (startup step 20).
    func workerRegistered(workerID: String, concurrency: Int, kinds: [String]) async
    /// An attempt of a job starts.
    func jobStarted(_ job: ClaimedJob, workerID: String)
    /// A running job reported progress; called as often as its executor reports (the observer throttles).
    func jobProgress(_ job: ClaimedJob, _ progress: JobProgress)
    /// The queue answered the job's `complete` (ok, or duplicate/stale when it refused it). `duration`
    /// is the attempt's, which ended `sinceEnd` ago (before the round trip to the queue).
    func jobSucceeded(_ job: ClaimedJob, outcome: CompletionOutcome, duration: Duration, sinceEnd: Duration)
    /// The queue answered the job's `fail` (a retry, dead, or stale).
    func jobFailed(_ job: ClaimedJob, failure: JobFailure, outcome: FailureOutcome, duration: Duration, sinceEnd: Duration)
    /// This worker's call flipped the machine; exactly one caller per generation is told. `job` is the
    /// job whose completion or failure flipped it, nil when a claim's upkeep did (an expired lease).
    func machineFlipped(_ flip: MachineFlip, job: ClaimedJob?) async
    /// The worker is about to unregister: flush whatever is buffered.
    func workerStopping(workerID: String) async
}

extension WorkerObserver {
    package func workerRegistered(workerID: String, concurrency: Int, kinds: [String]) async {}
    package func jobStarted(_ job: ClaimedJob, workerID: String) {}
    package func jobProgress(_ job: ClaimedJob, _ progress: JobProgress) {}
    package func jobSucceeded(_ job: ClaimedJob, outcome: CompletionOutcome, duration: Duration, sinceEnd: Duration) {}
    package func jobFailed(_ job: ClaimedJob, failure: JobFailure, outcome: FailureOutcome, duration: Duration, sinceEnd: Duration) {}
    package func machineFlipped(_ flip: MachineFlip, job: ClaimedJob?) async {}
    package func workerStopping(workerID: String) async {}
}
