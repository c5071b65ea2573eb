import Foundation
import JobQueue
import Scheduler
import Synchronization

/// Turns what a worker does into step events, progress records and metric counts
/// (protocols/events.md), recorded in an `EventPublisher`. Download progress is published at most
/// once per `progressInterval` per job, however often the executor reports it.
public final class StepEventObserver: WorkerObserver {
    public let publisher: EventPublisher
    public let progressInterval: Duration

    private struct ProgressState {
        var published: ContinuousClock.Instant?
        var publishedBytes: Int64 = 0
        var countedBytes: Int64 = 0
        var latest: JobProgress
        var rate: Double?
    }

    private let progress = Mutex<[Lease: ProgressState]>([:])
    private let clock = ContinuousClock()

    public init(publisher: EventPublisher, progressInterval: Duration = .seconds(1)) {
        self.publisher = publisher
        self.progressInterval = progressInterval
    }

    public func workerRegistered(workerID: String, concurrency: Int, kinds: [String]) async {
        let step = Step.workerConnection
        publisher.emit(
            StepEvent(
                name: step.event, step: step, traceID: nil, spanID: "\(step.spanID)/\(workerID)", parentSpanID: nil,
                attributes: [
                    ("worker_id", .string(workerID)), ("concurrency", .int(Int64(concurrency))),
                    ("capabilities", .string(kinds.joined(separator: ","))), ("pid", .int(Int64(getpid()))),
                ]))
        await publisher.flush()
    }

    public func jobStarted(_ job: ClaimedJob, workerID: String) {
        let step = Step.forJob(kind: job.kind, id: job.id)
        publisher.emit(jobEvent(job, step: step, name: step.event + EventName.start, workerID: workerID))
    }

    public func jobProgress(_ job: ClaimedJob, _ report: JobProgress) {
        let now = clock.now
        let due = progress.withLock { states -> (bytes: Int64, rate: Double?)? in
            var state = states[job.lease] ?? ProgressState(latest: report)
            state.latest = report
            defer { states[job.lease] = state }
            if let last = state.published, now - last < progressInterval { return nil }
            let rate: Double?
            if let given = report.bytesPerSecond {
                rate = given
            } else if let last = state.published {
                rate = max(0, Double(report.bytesDone - state.publishedBytes) / ((now - last) / .seconds(1)))
            } else {
                rate = nil
            }
            let counted = report.bytesDone >= state.countedBytes ? report.bytesDone - state.countedBytes : 0
            state.countedBytes = report.bytesDone
            state.published = now
            state.publishedBytes = report.bytesDone
            state.rate = rate
            return (counted, rate)
        }
        guard let due else { return }
        publisher.count(MetricField.bytesDownloaded, by: due.bytes)
        let step = Step.forJob(kind: job.kind, id: job.id)
        var event = jobEvent(job, step: step, name: step.event + EventName.progress, workerID: nil)
        event.attributes += Self.progressAttributes(report, rate: due.rate)
        publisher.emit(event)
        var record = JSONObjectWriter(capacity: 200)
        record.add("plan", job.plan)
        record.add("kind", job.kind)
        record.add("attempt", Int64(job.attempt))
        record.add("bytes_done", report.bytesDone)
        if let total = report.bytesTotal { record.add("bytes_total", total) }
        if let rate = due.rate { record.add("bytes_per_second", rate) }
        record.add("at_ms", StepEvent.now() / 1_000_000)
        publisher.setProgress(job: job.id, json: record.finish())
    }

    public func jobSucceeded(_ job: ClaimedJob, outcome: CompletionOutcome, duration: Duration) {
        let state = endProgress(job, counting: outcome == .ok)
        guard outcome == .ok else { return }
        let step = Step.forJob(kind: job.kind, id: job.id)
        var event = jobEvent(job, step: step, name: step.event + EventName.complete, workerID: nil)
        event.durationMilliseconds = duration / .milliseconds(1)
        if let state { event.attributes += Self.progressAttributes(state.latest, rate: state.rate) }
        publisher.emit(event)
        recordDuration(job, duration, outcome: "succeeded")
    }

    public func jobFailed(_ job: ClaimedJob, failure: JobFailure, outcome: FailureOutcome, duration: Duration) {
        _ = endProgress(job, counting: false)
        let willRetry: Bool
        var extra: [(key: String, value: EventValue)] = []
        switch outcome {
        case .stale: return
        case .dead: willRetry = false
        case .retry(let delay):
            willRetry = true
            extra.append(("retry_delay_ms", .int(Int64(delay))))
        }
        let step = Step.forJob(kind: job.kind, id: job.id)
        var event = jobEvent(job, step: step, name: EventName.failure, workerID: nil)
        event.durationMilliseconds = duration / .milliseconds(1)
        event.attributes += [
            ("error_type", .string(failure.type)), ("error_message", .string(failure.message)),
            ("retry_attempt", .int(Int64(job.attempt))), ("will_retry", .bool(willRetry)),
        ] + extra
        publisher.emit(event)
        recordDuration(job, duration, outcome: willRetry ? "retried" : "dead")
    }

    public func machineFlipped(_ flip: MachineFlip, job: ClaimedJob?) async {
        await publisher.flush()
    }

    public func workerStopping(workerID: String) async {
        await publisher.flush()
    }

    // MARK: helpers

    private func jobEvent(_ job: ClaimedJob, step: Step, name: String, workerID: String?) -> StepEvent {
        var attributes: [(key: String, value: EventValue)] = [
            ("job_id", .string(job.id)), ("job_kind", .string(job.kind)),
            ("component", .string(job.label.isEmpty ? Step.component(ofJob: job.id) : job.label)),
            ("attempt", .int(Int64(job.attempt))), ("max_attempts", .int(Int64(job.maxAttempts))),
            ("generation", .int(Int64(job.generation))),
        ]
        if let workerID { attributes.append(("worker_id", .string(workerID))) }
        return StepEvent(
            name: name, step: step, traceID: job.plan, spanID: job.id, parentSpanID: step.spanID, attributes: attributes)
    }

    private static func progressAttributes(_ report: JobProgress, rate: Double?) -> [(key: String, value: EventValue)] {
        var attributes: [(key: String, value: EventValue)] = [("bytes_done", .int(report.bytesDone))]
        if let total = report.bytesTotal { attributes.append(("bytes_total", .int(total))) }
        if let rate { attributes.append(("bytes_per_second", .double(rate))) }
        return attributes
    }

    /// Forgets a job's progress; on success also counts the bytes it received since the last publish.
    private func endProgress(_ job: ClaimedJob, counting: Bool) -> ProgressState? {
        guard let state = progress.withLock({ $0.removeValue(forKey: job.lease) }) else { return nil }
        if counting, state.latest.bytesDone > state.countedBytes {
            publisher.count(MetricField.bytesDownloaded, by: state.latest.bytesDone - state.countedBytes)
        }
        publisher.clearProgress(job: job.id)
        return state
    }

    private func recordDuration(_ job: ClaimedJob, _ duration: Duration, outcome: String) {
        let seconds = duration / .seconds(1)
        publisher.count(MetricField.durationBucket(kind: job.kind, index: MetricField.bucketIndex(seconds: seconds)))
        publisher.count(MetricField.durationSumMilliseconds(kind: job.kind), by: Int64((seconds * 1000).rounded()))
        publisher.count(MetricField.durationCount(kind: job.kind))
        publisher.count(MetricField.attempts(kind: job.kind, outcome: outcome))
    }
}
