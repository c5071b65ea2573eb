import Foundation
import JobQueue
import RedisClient
import TestSupport
import Testing

@Suite("Logs of a worker pool in one file", .serialized)
struct LogFileTests {
    /// `provision worker … > FILE 2>&1` from a shell opens FILE without O_APPEND; the supervisor and
    /// its worker processes share it. Every line must arrive whole: none overwritten by another
    /// process writing at a stale offset.
    @Test func supervisorAndWorkersShareAFileOpenedWithoutAppend() async throws {
        let harness = try await WorkerHarness()
        let folder = try makeTemporaryDirectory("logs")
        defer { try? FileManager.default.removeItem(at: folder) }
        let log = folder.appendingPathComponent("pool.log")
        try await harness.enqueue(planJSON("logs", (0..<40).map { sleepJob("j\($0)", ms: 20) }))
        let pool = try TestProcess(
            "/bin/sh",
            ["-c", "exec \"$0\" \"$@\" > \"$POOL_LOG\" 2>&1", provisionExecutable(), "worker", "--machine", "m1", "--processes", "2",
             "--concurrency", "2", "--log-level", "debug", "--health-port", "0"],
            environment: ["REDIS_URL": harness.redis.url, "POOL_LOG": log.path])
        defer { pool.terminate() }
        let status = try await harness.waitForState([.ready])
        #expect(status.state == .ready)
        #expect(await harness.stop(pool) == 0)
        let text = try String(contentsOf: log, encoding: .utf8)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
        // Every line is a whole log line: a timestamp first (a line cut by another write is not).
        let broken = lines.filter { $0.range(of: #"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}"#, options: .regularExpression) == nil }
        #expect(broken.isEmpty, "\(broken.prefix(5))")
        #expect(!text.contains("\0"))
        // The supervisor's lines and the workers' lines are all there: two starts, two exits, and
        // one outcome line per job.
        #expect(lines.filter { $0.contains("worker process started") }.count == 2, "\(text.suffix(3000))")
        #expect(lines.filter { $0.contains("worker process exited") }.count == 2, "\(text.suffix(3000))")
        let outcomes = Set(lines.compactMap { line -> String? in
            guard line.contains("succeeded"), let range = line.range(of: #"job=j\d+"#, options: .regularExpression) else { return nil }
            return String(line[range])
        })
        #expect(outcomes.count == 40, "\(outcomes.count) job outcomes in \(lines.count) lines")
    }
}
