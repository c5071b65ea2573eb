import Foundation
@_exported import JobCore

/// `noop`: does nothing and succeeds; measures the queue itself.
package struct NoopExecutor: JobExecutor {
    package init() {}

    package func run(_ attempt: JobAttempt<NoopPayload>, context: JobContext) async throws -> String { "{}" }
}

/// `sleep`: waits `ms` milliseconds, optionally failing its first attempts on purpose, optionally
/// reporting progress as if it downloaded `progress_bytes` bytes. Used by tests and benchmarks to
/// hold a slot, and to rehearse retries, failures and download progress.
package struct SleepExecutor: JobExecutor {
    package init() {}

    package func validate(_ payload: SleepPayload) throws(JobFailure) {
        if let failure = payload.fail, failure.message.count > 1000 {
            throw .invalidPayload("a sleep job's failure message is longer than 1000 characters")
        }
    }

    package func run(_ attempt: JobAttempt<SleepPayload>, context: JobContext) async throws -> String {
        let payload = attempt.payload
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
        if let failure = payload.fail, attempt.attempt <= (failure.untilAttempt ?? Int.max) {
            throw JobFailure(type: "sleep_failed", message: failure.message, retryable: failure.retryable ?? true)
        }
        return #"{"slept_ms":\#(payload.ms)}"#
    }
}

extension ExecutorRegistry {
    /// The executors every worker has.
    package static var builtin: ExecutorRegistry {
        var registry = ExecutorRegistry()
        registry.register(NoopExecutor())
        registry.register(SleepExecutor())
        return registry
    }
}
