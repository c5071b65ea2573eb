import Foundation
import JobQueue
import RedisClient
import TestSupport
import Testing

@Suite("Redis errors reach people as sentences; a loading Redis is waited for", .serialized)
struct RedisErrorTests {
    /// The one-shot commands against a port nothing listens on: one sentence, within seconds (the
    /// workers' reconnect window is a minute). The figures are printed.
    @Test func aClosedPortIsReportedWithinSeconds() async throws {
        let port = try freeLoopbackPort()
        let folder = try makeTemporaryDirectory("closed")
        defer { try? FileManager.default.removeItem(at: folder) }
        let plan = folder.appendingPathComponent("plan.json")
        try planJSON("p", [sleepJob("a", ms: 1)]).write(to: plan, atomically: true, encoding: .utf8)
        let url = "redis://127.0.0.1:\(port)/0"
        let commands: [(name: String, arguments: [String], exit: Int32)] = [
            ("status", ["status", "--machine", "m1"], 3),
            ("status --wait", ["status", "--machine", "m1", "--wait", "--timeout", "60"], 3),
            ("enqueue", ["enqueue", "--machine", "m1", "--plan", plan.path], 1),
            ("events", ["events", "--machine", "m1"], 1),
            ("cancel", ["cancel", "--machine", "m1"], 1),
        ]
        for command in commands {
            let started = ContinuousClock.now
            let result = try await run(provisionExecutable(), command.arguments + ["--redis", url], timeout: .seconds(60))
            let seconds = (ContinuousClock.now - started) / .seconds(1)
            print("closed port: provision \(command.name) exited \(result.status) after \(String(format: "%.2f", seconds)) s")
            #expect(result.status == command.exit, "\(command.name): \(result.output)")
            #expect(seconds < 10, "\(command.name) took \(seconds) s")
            let lines = result.output.split(separator: "\n")
            #expect(lines.count == 1 && lines[0].hasPrefix("provision: Could not connect to Redis at redis://127.0.0.1:\(port)/0"), "\(command.name): \(result.output)")
        }
    }

    /// `status --wait` across a Redis that is away for longer than one-shot retries last: it keeps
    /// waiting and exits 0 when the machine is ready; with Redis gone until the timeout it exits 3
    /// with one sentence, never 1 ("failed").
    @Test func statusWaitOutlastsARedisOutage() async throws {
        let redis = try await TestRedis(appendOnly: true)
        defer { redis.stop() }
        let queue = try JobQueue(redis: try redis.client(reconnectWindow: .seconds(30)), machine: "m1")
        _ = try await queue.enqueue(planJSON: planJSON("outage", (0..<4).map { sleepJob("j\($0)", ms: 50) }))
        let waiter = try TestProcess.provision(["status", "--machine", "m1", "--wait", "--timeout", "120"], environment: ["REDIS_URL": redis.url])
        defer { waiter.terminate() }
        try await Task.sleep(for: .milliseconds(800))
        try await redis.restart(downtime: .seconds(6))
        #expect(waiter.isRunning, "\(waiter.output)")
        let pool = try TestProcess.provision(
            ["worker", "--machine", "m1", "--processes", "1", "--concurrency", "2", "--health-port", "0"], environment: ["REDIS_URL": redis.url])
        defer { pool.terminate() }
        let exit = await waiter.wait(timeout: .seconds(90))
        #expect(exit == 0, "\(String(describing: exit)): \(waiter.output)")

        // Gone for good: the timeout ends the wait with the Redis problem, exit 3.
        _ = try await queue.enqueue(planJSON: planJSON("outage-2", [sleepJob("a", ms: 60_000)]), replace: true)
        let second = try TestProcess.provision(["status", "--machine", "m1", "--wait", "--timeout", "6"], environment: ["REDIS_URL": redis.url])
        defer { second.terminate() }
        try await Task.sleep(for: .milliseconds(800))
        pool.terminate()
        redis.server.stop()
        let gone = await second.wait(timeout: .seconds(60))
        #expect(gone == 3, "\(String(describing: gone)): \(second.output)")
        let lines = second.output.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].hasPrefix("provision: Could not connect to Redis"), "\(second.output)")
    }

    @Test func negativeTimeoutsAreRangeErrors() async throws {
        for (arguments, option) in [
            (["status", "--machine", "m1", "--wait", "--timeout=-1"], "--timeout"),
            (["up", "--machine", "m1", "--timeout=-5"], "--timeout"),
            (["up", "--machine", "m1", "--drain-timeout=-1"], "--drain-timeout"),
            (["worker", "--machine", "m1", "--drain-timeout=-1"], "--drain-timeout"),
        ] {
            let result = try await run(provisionExecutable(), arguments + ["--redis", "redis://127.0.0.1:1/0"])
            #expect(result.status == 64, "\(arguments): \(result.output)")
            #expect(result.output.contains("\(option) must be between"), "\(arguments): \(result.output)")
        }
    }

    /// A password-protected Redis without the password, or with a wrong one: a sentence that says so,
    /// at once (no minute of retries), never a reply dump and never the password.
    @Test func missingOrWrongPasswordsAreSentences() async throws {
        let redis = try await TestRedis(password: "right-secret", unixSocket: false)
        defer { redis.stop() }
        let folder = try makeTemporaryDirectory("noauth")
        defer { try? FileManager.default.removeItem(at: folder) }
        let plan = folder.appendingPathComponent("plan.json")
        try planJSON("p", [sleepJob("a", ms: 1)]).write(to: plan, atomically: true, encoding: .utf8)
        let bare = "redis://127.0.0.1:\(redis.port)/0"
        let wrong = "redis://:wrong-secret@127.0.0.1:\(redis.port)/0"
        let cases: [(url: String, arguments: [String], exit: Int32, says: String)] = [
            (bare, ["status", "--machine", "m1"], 3, "requires a password"),
            (bare, ["status", "--machine", "m1", "--wait", "--timeout", "30"], 3, "requires a password"),
            (bare, ["enqueue", "--machine", "m1", "--plan", plan.path], 1, "requires a password"),
            (bare, ["events", "--machine", "m1"], 1, "requires a password"),
            (bare, ["cancel", "--machine", "m1"], 1, "requires a password"),
            (wrong, ["status", "--machine", "m1"], 3, "refused the password"),
            (wrong, ["enqueue", "--machine", "m1", "--plan", plan.path], 1, "refused the password"),
        ]
        for item in cases {
            let started = ContinuousClock.now
            let result = try await run(provisionExecutable(), item.arguments + ["--redis", item.url], timeout: .seconds(60))
            #expect(result.status == item.exit, "\(item.arguments): \(result.output)")
            #expect(ContinuousClock.now - started < .seconds(10))
            let lines = result.output.split(separator: "\n")
            #expect(lines.count == 1 && lines[0].hasPrefix("provision: Redis at ") && lines[0].contains(item.says), "\(item.arguments): \(result.output)")
            #expect(!result.output.contains("RedisReply") && !result.output.contains("secret"), "\(result.output)")
        }
    }

    /// Another client's long script makes Redis answer BUSY: a command waits for it within the
    /// reconnect window instead of failing.
    @Test func aBusyServerIsWaitedFor() async throws {
        let redis = try await TestRedis(extraConfiguration: ["busy-reply-threshold 100"])
        defer { redis.stop() }
        let busy = try redis.client(label: "busy")
        let other = try redis.client(label: "other", reconnectWindow: .seconds(20))
        try await other.send("SET", "k", "v")
        let script = Task { try await busy.send("EVAL", "local t = redis.call('TIME'); local s = t[1] + 1.5; while true do local n = redis.call('TIME'); if n[1] + n[2] / 1e6 > s + t[2] / 1e6 then break end end return 1", "0") }
        try await Task.sleep(for: .milliseconds(400))
        let started = ContinuousClock.now
        let value = try await other.send("GET", "k")
        #expect(value.string == "v")
        // It did wait for the script (answered BUSY meanwhile), so the retry is what made it work.
        #expect(ContinuousClock.now - started > .milliseconds(300))
        _ = try await script.value
        #expect(RedisError.server(server: "s", command: "GET", message: "BUSY Redis is busy running a script.").isRetryable)
        #expect(!RedisError.server(server: "s", command: "GET", message: "BUSYKEY Target key name already exists.").isRetryable)
        #expect(!RedisError.server(server: "s", command: "GET", message: "WRONGTYPE Operation against a key").isRetryable)
    }

    /// Redis restarted mid-plan with a large data set to load (LOADING for seconds): no completion is
    /// dropped (no job runs twice), `status --wait` waits through it and exits 0.
    @Test func aRedisLoadingItsDataIsWaitedForByWorkersAndStatusWait() async throws {
        let redis = try await TestRedis(extraConfiguration: ["enable-debug-command local"])
        defer { redis.stop() }
        let admin = try redis.client(label: "admin", reconnectWindow: .seconds(60))
        try await admin.send("DEBUG", "POPULATE", "2500000", "fill", "16")
        let queue = try JobQueue(redis: try redis.client(reconnectWindow: .seconds(60)), machine: "m1")
        _ = try await queue.enqueue(planJSON: planJSON("loading", (0..<40).map { sleepJob("j\($0)", ms: 150) }))
        let pool = try TestProcess.provision(
            ["worker", "--machine", "m1", "--processes", "1", "--concurrency", "2", "--health-port", "0", "--log-level", "debug"],
            environment: ["REDIS_URL": redis.url])
        defer { pool.terminate() }
        let waiter = try TestProcess.provision(["status", "--machine", "m1", "--wait", "--timeout", "180"], environment: ["REDIS_URL": redis.url])
        defer { waiter.terminate() }
        #expect(try await eventually(timeout: .seconds(60)) { (try? await queue.status().count("succeeded")) ?? 0 >= 6 })
        // SHUTDOWN SAVE writes everything and exits in one step; the new server loads it (LOADING).
        // (A client that does not send SHUTDOWN again when the connection closes under it.)
        _ = try? await redis.client(label: "shutdown", reconnectWindow: .zero).send("SHUTDOWN", "SAVE")
        redis.server.stop()
        let restarted = ContinuousClock.now
        try await redis.server.start(timeout: .seconds(120))
        print("loading took \(String(format: "%.2f", (ContinuousClock.now - restarted) / .seconds(1))) s")
        let exit = await waiter.wait(timeout: .seconds(180))
        #expect(exit == 0, "status --wait: \(String(describing: exit)) \(waiter.output.suffix(2000))")
        #expect(!waiter.output.contains("RedisReply"))
        let status = try await queue.status()
        #expect(status.state == .ready && status.count("succeeded") == 40, "\(status)")
        let jobs = try await queue.jobs(plan: "loading")
        let rerun = jobs.filter { $0["attempts"] != "1" }.compactMap { $0["id"] }
        #expect(rerun.isEmpty, "jobs run more than once: \(rerun); \(pool.output.split(separator: "\n").filter { $0.contains("warning") || $0.contains("error") }.suffix(20).joined(separator: "\n"))")
    }
}
