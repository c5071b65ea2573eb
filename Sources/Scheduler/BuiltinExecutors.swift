import Foundation
import JobQueue

/// `noop`: does nothing and succeeds; measures the queue itself.
public struct NoopExecutor: JobExecutor {
    public let kind = "noop"
    public init() {}

    public func validate(payload: String) throws(JobFailure) {}

    public func run(_ job: ClaimedJob, context: JobContext) async throws -> String { "{}" }
}

/// `sleep`: waits `ms` milliseconds, optionally failing its first attempts on purpose, optionally
/// reporting progress as if it downloaded `progress_bytes` bytes. Used by tests and benchmarks to
/// hold a slot, and to rehearse retries, failures and download progress.
public struct SleepExecutor: JobExecutor {
    public let kind = "sleep"
    public init() {}

    struct Payload: Decodable {
        struct Failure: Decodable {
            var message: String
            /// Attempts up to and including this one fail; absent: every attempt fails.
            var untilAttempt: Int?
            var retryable: Bool?

            enum CodingKeys: String, CodingKey {
                case message, untilAttempt = "until_attempt", retryable
            }
        }
        var ms: Int
        var fail: Failure?
        /// Reports progress every `progressEveryMs` as if this many bytes arrived evenly over `ms`.
        var progressBytes: Int64?
        var progressEveryMs: Int?

        enum CodingKeys: String, CodingKey {
            case ms, fail, progressBytes = "progress_bytes", progressEveryMs = "progress_every_ms"
        }
    }

    public func validate(payload: String) throws(JobFailure) { _ = try decode(payload) }

    public func run(_ job: ClaimedJob, context: JobContext) async throws -> String {
        let payload = try decode(job.payload)
        if let total = payload.progressBytes {
            // A stand-in for a download: progress reported far more often than an observer may publish it.
            let clock = ContinuousClock()
            let start = clock.now
            let end = start + .milliseconds(payload.ms)
            let step = Duration.milliseconds(payload.progressEveryMs ?? 20)
            context.progress(JobProgress(bytesDone: 0, bytesTotal: total))
            while clock.now < end {
                try await Task.sleep(until: min(clock.now + step, end), clock: clock)
                let fraction = min(1, ((clock.now - start) / .milliseconds(1)) / Double(max(1, payload.ms)))
                context.progress(JobProgress(bytesDone: Int64(Double(total) * fraction), bytesTotal: total))
            }
        } else {
            try await Task.sleep(for: .milliseconds(payload.ms))
        }
        if let failure = payload.fail, job.attempt <= (failure.untilAttempt ?? Int.max) {
            throw JobFailure(type: "sleep_failed", message: failure.message, retryable: failure.retryable ?? true)
        }
        return #"{"slept_ms":\#(payload.ms)}"#
    }

    private func decode(_ text: String) throws(JobFailure) -> Payload {
        let payload: Payload
        do {
            payload = try JSONDecoder().decode(Payload.self, from: Data(text.utf8))
        } catch {
            throw .invalidPayload("a sleep job needs a payload {\"ms\": milliseconds}")
        }
        guard (0...86_400_000).contains(payload.ms) else {
            throw .invalidPayload("a sleep job's ms must be between 0 and 86400000")
        }
        if let bytes = payload.progressBytes, bytes < 0 {
            throw .invalidPayload("a sleep job's progress_bytes must not be negative")
        }
        if let every = payload.progressEveryMs, !(1...60_000).contains(every) {
            throw .invalidPayload("a sleep job's progress_every_ms must be between 1 and 60000")
        }
        if let failure = payload.fail, failure.message.count > 1000 {
            throw .invalidPayload("a sleep job's failure message is longer than 1000 characters")
        }
        return payload
    }
}
