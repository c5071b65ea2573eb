import Foundation
import JobQueue

/// `noop`: does nothing and succeeds; measures the queue itself.
public struct NoopExecutor: JobExecutor {
    public let kind = "noop"
    public init() {}

    public func validate(payload: String) throws(JobFailure) {}

    public func run(_ job: ClaimedJob, context: JobContext) async throws -> String { "{}" }
}

/// `sleep`: waits `ms` milliseconds, optionally failing its first attempts on purpose. Used by
/// tests and benchmarks to hold a slot, and to rehearse retries and failures.
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
    }

    public func validate(payload: String) throws(JobFailure) { _ = try decode(payload) }

    public func run(_ job: ClaimedJob, context: JobContext) async throws -> String {
        let payload = try decode(job.payload)
        try await Task.sleep(for: .milliseconds(payload.ms))
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
        if let failure = payload.fail, failure.message.count > 1000 {
            throw .invalidPayload("a sleep job's failure message is longer than 1000 characters")
        }
        return payload
    }
}
