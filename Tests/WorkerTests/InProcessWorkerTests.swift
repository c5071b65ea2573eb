import Foundation
import JobQueue
import Logging
import Scheduler
import ServiceLifecycle
import TestSupport
import Testing

/// A `noop` stand-in whose job `big` returns a result larger than the queue keeps.
struct OversizeResultExecutor: JobExecutor {
    func run(_ job: JobAttempt<NoopPayload>, context: JobContext) async throws -> String {
        job.id == "big" ? "\"" + String(repeating: "x", count: 1_100_000) + "\"" : "{}"
    }
}

@Suite("A worker in this process against a real redis-server", .serialized)
struct InProcessWorkerTests {
    @Test func anOversizeResultFailsItsJobAndNotTheBatchItTravelsWith() async throws {
        let redis = try await TestRedis()
        defer { redis.stop() }
        let queue = try JobQueue(redis: try redis.client(), machine: "m1")
        let ids = (1...40).map { "j\($0)" } + ["big"] + (41...80).map { "j\($0)" }
        let jobs = ids.map { ["id": $0, "kind": "noop", "lease_ms": 2000] as [String: Any] }
        let plan = try JSONSerialization.data(withJSONObject: ["version": 1, "plan_id": "p", "jobs": jobs])
        _ = try await queue.enqueue(planJSON: String(decoding: plan, as: UTF8.self))
        let worker = try Worker(
            redis: try redis.server.configuration, machine: "m1", registry: ExecutorRegistry([AnyJobExecutor(OversizeResultExecutor())]),
            configuration: WorkerConfiguration(workerID: "w-big", concurrency: 8), logger: Logger(label: "test"))
        let group = ServiceGroup(configuration: .init(services: [worker], gracefulShutdownSignals: [], logger: Logger(label: "test")))
        let running = Task { try await group.run() }
        #expect(try await eventually(timeout: .seconds(20)) {
            let status = try await queue.status()
            return status.state == .failed && status.count("succeeded") == 80
        })
        await group.triggerGracefulShutdown()
        try await running.value
        let status = try await queue.status()
        #expect(status.count("dead") == 1 && status.count("retries") == 0 && status.count("reclaimed") == 0, "\(status)")
        let big = try #require(status.failures.first { $0.job == "big" })
        #expect(big.errorType == "result_too_large" && big.error.contains("1100002 bytes"), "\(big)")
    }
}
