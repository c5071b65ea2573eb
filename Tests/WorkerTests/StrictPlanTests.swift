import Foundation
import JobQueue
import RedisClient
import TestSupport
import Testing

@Suite("Plans are strict JSON of the right shape before they reach Redis", .serialized)
struct StrictPlanTests {
    @Test func malformedPlansAreRefusedNamingTheFieldAndNothingIsWritten() async throws {
        let redis = try await TestRedis()
        defer { redis.stop() }
        let folder = try makeTemporaryDirectory("strict")
        defer { try? FileManager.default.removeItem(at: folder) }
        let deep = String(repeating: "[", count: 2000) + String(repeating: "]", count: 2000)
        let cases: [(plan: String, says: String)] = [
            (#"{"version":1,"plan_id":"p","jobs":[{"id":"a","kind":"sleep","payload":{"ms":0x2}}]}"#, "jobs[0].payload.ms is not a JSON number"),
            (#"{"version":1,"plan_id":"p","jobs":[{"id":"a","kind":"sleep","payload":{"ms":012}}]}"#, "jobs[0].payload.ms is not a JSON number"),
            (#"{"version":1,"plan_id":"p","jobs":[{"id":"a","id":"b","kind":"noop"}]}"#, "jobs[0].id is given twice"),
            (#"{"version":1,"plan_id":"p","plan_id":"q","jobs":[{"id":"a","kind":"noop"}]}"#, "plan_id is given twice"),
            (#"{"version":1,"plan_id":"p","jobs":[{"id":"a","kind":"noop","payload":{"x":"# + deep + "}}]}", "jobs[0].payload.x"),
            (#"{"version":1,"plan_id":"p","jobs":[{"id":"a","kind":"noop","max_attempts":"3"}]}"#, "jobs[0].max_attempts must be an integer, not a string"),
            (#"{"version":1,"plan_id":"p","jobs":[{"id":"a","kind":"noop","lease_ms":1.5}]}"#, "jobs[0].lease_ms must be an integer, not a number"),
            (#"{"version":"1","plan_id":"p","jobs":[{"id":"a","kind":"noop"}]}"#, "version must be an integer, not a string"),
            (#"{"version":1,"plan_id":"p","jobs":[{"id":"a","kind":"noop","depends_on":"b"}]}"#, "jobs[0].depends_on must be an array"),
            (#"{"version":1,"plan_id":"p","jobs":[{"id":"a","kind":"noop","payload":[]}]}"#, "jobs[0].payload must be an object, not an array"),
            (#"{"version":1,"plan_id":"p","jobs":[{"id":7,"kind":"noop"}]}"#, "jobs[0].id must be a string, not an integer"),
            (#"[{"version":1}]"#, "the plan is an array, not an object"),
            (#"{"version":1,"plan_id":"p","jobs":[{"id":"a","kind":"noop","payload":{"x":NaN}}]}"#, "jobs[0].payload.x is not a JSON value"),
            (#"{"version":1,"plan_id":"p","jobs":[]} x"#, "unexpected text after the JSON value"),
        ]
        for (index, item) in cases.enumerated() {
            let file = folder.appendingPathComponent("plan\(index).json")
            try item.plan.write(to: file, atomically: true, encoding: .utf8)
            let result = try await run(provisionExecutable(), ["enqueue", "--machine", "m1", "--plan", file.path, "--redis", redis.url])
            #expect(result.status == 1, "\(item.says): \(result.output)")
            let lines = result.output.split(separator: "\n")
            #expect(lines.count == 1 && lines[0].hasPrefix("provision: The plan was refused: ") && lines[0].contains(item.says), "\(item.says): \(result.output)")
        }
        #expect(try await redis.client().send("DBSIZE") == .integer(0))
        // The same shapes, well formed, are enqueued.
        let good = folder.appendingPathComponent("good.json")
        try #"{"version":1,"plan_id":"p","jobs":[{"id":"a","kind":"sleep","payload":{"ms":2,"x":[[1.5e3,-0.25,"\u00e9\ud83d\ude00"]]},"max_attempts":3.0,"depends_on":[]}]}"#
            .write(to: good, atomically: true, encoding: .utf8)
        let result = try await run(provisionExecutable(), ["enqueue", "--machine", "m1", "--plan", good.path, "--redis", redis.url])
        #expect(result.status == 0, "\(result.output)")
    }
}
