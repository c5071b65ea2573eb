import Foundation
import JobQueue
import Scheduler
import Synchronization

/// Turns what a worker does into step events, progress records and metric counts
/// (protocols/events.md), recorded in an `EventPublisher`. Download progress is published at most
/// once per `progressInterval` per job, however often the executor reports it.
package final class StepEventObserver: WorkerObserver {
    package let publisher: EventPublisher
    package let progressInterval: Duration

    private struct ProgressState: Sendable {
        var published: ContinuousClock.Instant?
        var publishedBytes: Int64 = 0
        var countedBytes: Int64 = 0
        var latest: JobProgress
        var rate: Double?
    }

    private let progress = Mutex<[Lease: ProgressState]>([:])
    private let clock = ContinuousClock()

    /// The counters of one job kind, registered once.
    private struct KindFields {
        let buckets: [EventPublisher.Counter]
        let sum: EventPublisher.Counter
        let count: EventPublisher.Counter
        let succeeded: EventPublisher.Counter
        let retried: EventPublisher.Counter
        let dead: EventPublisher.Counter

        init(_ kind: String, _ publisher: EventPublisher) {
            buckets = (0...MetricField.durationBuckets.count).map {
                publisher.counter(MetricField.durationBucket(kind: kind, index: $0))
            }
            sum = publisher.counter(MetricField.durationSumMilliseconds(kind: kind))
            count = publisher.counter(MetricField.durationCount(kind: kind))
            succeeded = publisher.counter(MetricField.attempts(kind: kind, outcome: "succeeded"))
            retried = publisher.counter(MetricField.attempts(kind: kind, outcome: "retried"))
            dead = publisher.counter(MetricField.attempts(kind: kind, outcome: "dead"))
        }
    }

    private let kindFields = Mutex<[String: KindFields]>([:])

    package init(publisher: EventPublisher, progressInterval: Duration = .seconds(1)) {
        self.publisher = publisher
        self.progressInterval = progressInterval
    }

    package func workerRegistered(workerID: String, concurrency: Int, kinds: [String]) async {
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

    package func jobStarted(_ job: ClaimedJob, workerID: String) {
        let step = Step.forJob(kind: job.kind, id: job.id)
        emitJob(job, step: step, name: step.startEvent) { out in out.add(.workerID, workerID) }
    }

    package func jobProgress(_ job: ClaimedJob, _ report: JobProgress) {
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
        emitJob(job, step: step, name: step.progressEvent) { out in
            Self.writeProgress(report, rate: due.rate, into: &out)
        }
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

    package func jobSucceeded(_ job: ClaimedJob, outcome: CompletionOutcome, duration: Duration, sinceEnd: Duration) {
        let state = endProgress(job, counting: outcome == .ok)
        guard outcome == .ok else { return }
        let step = Step.forJob(kind: job.kind, id: job.id)
        emitJob(job, step: step, name: step.completeEvent, duration: duration, sinceEnd: sinceEnd) { out in
            if let state { Self.writeProgress(state.latest, rate: state.rate, into: &out) }
        }
        recordDuration(job, duration, outcome: "succeeded")
    }

    package func jobFailed(_ job: ClaimedJob, failure: JobFailure, outcome: FailureOutcome, duration: Duration, sinceEnd: Duration) {
        _ = endProgress(job, counting: false)
        let delay: Int?
        switch outcome {
        case .stale: return
        case .dead: delay = nil
        case .retry(let milliseconds): delay = milliseconds
        }
        let willRetry = delay != nil
        let step = Step.forJob(kind: job.kind, id: job.id)
        emitJob(job, step: step, name: EventName.failure, duration: duration, sinceEnd: sinceEnd) { out in
            out.add("error_type", failure.type)
            out.add("error_message", failure.message)
            out.add("retry_attempt", Int64(job.attempt))
            out.add("will_retry", willRetry)
            if let delay { out.add("retry_delay_ms", Int64(delay)) }
        }
        recordDuration(job, duration, outcome: willRetry ? "retried" : "dead")
    }

    package func machineFlipped(_ flip: MachineFlip, job: ClaimedJob?) async {
        await publisher.flush()
    }

    package func workerStopping(workerID: String) async {
        await publisher.flush()
    }

    // MARK: helpers

    /// A job event: trace = plan, span = job, parent = the step's span, and the job's attributes. An
    /// end is stamped with the moment the attempt ended, not the later moment the queue confirmed it,
    /// so that it precedes the start of any job it unlocked.
    private func emitJob(
        _ job: ClaimedJob, step: Step, name: String, duration: Duration? = nil, sinceEnd: Duration = .zero,
        _ more: @escaping @Sendable (inout JSONObjectWriter) -> Void
    ) {
        let (seconds, attoseconds) = sinceEnd.components
        let timestamp = StepEvent.now() - (seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
        publisher.emit(
            name: name, step: step, timestamp: timestamp, traceID: job.plan, spanID: job.id, parentSpanID: step.spanID,
            durationMilliseconds: duration.map { $0 / .milliseconds(1) }
        ) { out in
            out.add(.jobID, job.id)
            out.add(.jobKind, job.kind)
            out.add(.component, job.label.isEmpty ? Step.component(ofJob: job.id) : job.label)
            out.add(.attempt, Int64(job.attempt))
            out.add(.maxAttempts, Int64(job.maxAttempts))
            out.add(.generation, Int64(job.generation))
            more(&out)
        }
    }

    private static func writeProgress(_ report: JobProgress, rate: Double?, into out: inout JSONObjectWriter) {
        out.add("bytes_done", report.bytesDone)
        if let total = report.bytesTotal { out.add("bytes_total", total) }
        if let rate { out.add("bytes_per_second", rate) }
    }

    /// Forgets a job's progress; on success also counts the bytes it received since the last publish.
    private func endProgress(_ job: ClaimedJob, counting: Bool) -> ProgressState? {
        // Most jobs never report progress: an empty table is checked without hashing the lease.
        guard let state = progress.withLock({ $0.isEmpty ? nil : $0.removeValue(forKey: job.lease) }) else { return nil }
        if counting, state.latest.bytesDone > state.countedBytes {
            publisher.count(MetricField.bytesDownloaded, by: state.latest.bytesDone - state.countedBytes)
        }
        publisher.clearProgress(job: job.id)
        return state
    }

    private func recordDuration(_ job: ClaimedJob, _ duration: Duration, outcome: String) {
        let seconds = duration / .seconds(1)
        let fields = kindFields.withLock { cache -> KindFields in
            if let known = cache[job.kind] { return known }
            let made = KindFields(job.kind, publisher)
            cache[job.kind] = made
            return made
        }
        let attempts = outcome == "succeeded" ? fields.succeeded : outcome == "retried" ? fields.retried : fields.dead
        publisher.count(
            (fields.buckets[MetricField.bucketIndex(seconds: seconds)], 1), (fields.sum, Int64((seconds * 1000).rounded())),
            (fields.count, 1), (attempts, 1))
    }
}
