import Downloader
import Foundation
import JobQueue
import RedisClient
import TestSupport
import Testing

@Suite("Download jobs: address checks", .serialized)
struct DownloadAddressTests {
    /// A worker's download jobs: a spelled loopback URL and a redirect from the allowed origin to one
    /// fail for good (one attempt, `invalid_url`); the allowed origin's own file is placed.
    @Test func workerDownloadJobsAreChecked() async throws {
        let redis = try await TestRedis()
        defer { redis.stop() }
        let origin = try await TestOrigin()
        let other = try await TestOrigin()
        defer { origin.stop(); other.stop() }
        let data = try origin.addFile("f.bin", size: 150_000)
        try data.write(to: other.root.appendingPathComponent("f.bin"))
        let models = try makeTemporaryDirectory("models")
        defer { try? FileManager.default.removeItem(at: models) }
        let redirect = "http://0x7f000001:\(other.port)/files/f.bin".addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
        let jobs: [[String: Any]] = [
            ["id": "model:good", "kind": "download", "payload": ["url": origin.url("f.bin"), "path": "checkpoints/good.bin"]],
            ["id": "model:spelled", "kind": "download", "payload": ["url": "http://2130706433:\(other.port)/files/f.bin", "path": "checkpoints/spelled.bin"]],
            ["id": "model:redirected", "kind": "download", "payload": ["url": "\(origin.base)/goto?to=\(redirect)", "path": "checkpoints/redirected.bin"]],
            ["id": "model:mapped", "kind": "download", "payload": ["url": "http://[::ffff:7f00:1]:\(other.port)/files/f.bin", "path": "checkpoints/mapped.bin"]],
        ]
        let plan = try JSONSerialization.data(withJSONObject: ["version": 1, "plan_id": "addresses", "jobs": jobs])
        let queue = try JobQueue(redis: try redis.client(), machine: "m1")
        _ = try await queue.enqueue(planJSON: String(decoding: plan, as: UTF8.self))
        let pool = try TestProcess.provision(
            ["worker", "--machine", "m1", "--processes", "1", "--concurrency", "4", "--models-root", models.path,
             "--allow-origin", "127.0.0.1:\(origin.port)", "--health-port", "0"],
            environment: ["REDIS_URL": redis.url, "PROVISION_ALLOW_LOOPBACK": ""])
        defer { pool.terminate() }
        var status = try await queue.status()
        _ = try await eventually(timeout: .seconds(60)) {
            status = try await queue.status()
            return status.isSettled
        }
        #expect(status.state == .failed, "\(pool.output.suffix(2000))")
        #expect(status.count("succeeded") == 1, "\(status.failures)")
        #expect(try Data(contentsOf: models.appendingPathComponent("checkpoints/good.bin")) == data)
        for id in ["model:spelled", "model:redirected", "model:mapped"] {
            let failure = try #require(status.failures.first { $0.job == id }, "\(id)")
            #expect(failure.errorType == "invalid_url" && failure.attempts == 1, "\(id): \(failure)")
        }
        #expect(try await other.stats().requests.isEmpty)
        #expect(!FileManager.default.fileExists(atPath: models.appendingPathComponent("checkpoints/spelled.bin").path))
    }
}
