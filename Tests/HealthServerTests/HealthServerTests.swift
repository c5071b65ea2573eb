import Aggregator
import Foundation
import HealthServer
import JobQueue
import Logging
import RedisClient
import Telemetry
import TestSupport
import Testing

func planJSON(_ id: String, _ jobs: [[String: Any]]) -> String {
    let data = try! JSONSerialization.data(withJSONObject: ["version": 1, "plan_id": id, "jobs": jobs], options: [.sortedKeys])
    return String(decoding: data, as: UTF8.self)
}

/// A private Redis, machine `m1`'s queue, and a health server on a free loopback port.
final class ServerHarness: Sendable {
    let redis: TestRedis
    let queue: JobQueue
    let server: HealthServer
    let port: Int

    init(stallAfter: Duration = .seconds(30)) async throws {
        redis = try await TestRedis()
        queue = try JobQueue(redis: try redis.client(), machine: "m1")
        let monitor = MachineMonitor(redis: try redis.client(label: "health"), keys: queue.keys, stallAfter: stallAfter)
        server = HealthServer(
            monitor: monitor, configuration: .init(host: "127.0.0.1", port: try freeLoopbackPort()),
            logger: Logger(label: "health"))
        port = try await server.start()
    }

    func get(_ path: String) async throws -> (status: Int, body: String, contentType: String?) {
        try await httpGet("http://127.0.0.1:\(port)\(path)")
    }

    func pool(processes: Int, concurrency: Int, extra: [String] = []) throws -> TestProcess {
        try TestProcess.provision(
            ["worker", "--machine", "m1", "--processes", String(processes), "--concurrency", String(concurrency),
             "--log-level", "info", "--health-port", "0"] + extra,
            environment: ["REDIS_URL": redis.url])
    }

    func stop() async {
        await server.stop()
        redis.stop()
    }
}

func object(_ text: String) -> [String: Any] {
    (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]) ?? [:]
}

@Suite("Health server on Hummingbird: /health, /status, /metrics", .serialized)
struct HealthServerTests {
    @Test func healthTurnsFrom503To200AtTheFlipAndStatusShowsProgress() async throws {
        let h = try await ServerHarness()
        let idle = try await h.get("/health")
        #expect(idle.status == 503 && idle.contentType == "application/json")
        #expect(object(idle.body)["status"] as? String == "idle" && object(idle.body)["reason"] is String)

        _ = try await h.queue.enqueue(planJSON: planJSON("p1", [
            ["id": "comfyui", "kind": "sleep", "payload": ["ms": 300]],
            ["id": "node:a", "kind": "sleep", "payload": ["ms": 300], "depends_on": ["comfyui"]],
            ["id": "model:big.safetensors", "kind": "sleep", "payload": ["ms": 2500, "progress_bytes": 2_000_000_000]],
        ]))
        let pending = try await h.get("/health")
        #expect(pending.status == 503 && object(pending.body)["status"] as? String == "pending")
        let pool = try h.pool(processes: 1, concurrency: 3)
        defer { pool.terminate() }

        // While it runs: 503 with a reason, and /status lists the running download with its progress.
        var sawProgress = false
        var statusBodies: [String] = []
        var lastNot200 = ContinuousClock.now
        var first200: ContinuousClock.Instant?
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            let health = try await h.get("/health")
            if health.status == 200 {
                first200 = ContinuousClock.now
                #expect(object(health.body)["status"] as? String == "ready" && object(health.body)["ready"] as? Bool == true)
                break
            }
            #expect(health.status == 503)
            #expect(["pending", "running"].contains(object(health.body)["status"] as? String), "\(health.body)")
            lastNot200 = ContinuousClock.now
            let status = try await h.get("/status")
            statusBodies.append(status.body.trimmingCharacters(in: .whitespacesAndNewlines))
            let jobs = object(status.body)["active_jobs"] as? [[String: Any]] ?? []
            if let download = jobs.first(where: { $0["job"] as? String == "model:big.safetensors" }),
                let done = download["bytes_done"] as? Int, done > 0, download["bytes_total"] as? Int == 2_000_000_000,
                (download["bytes_per_second"] as? Double ?? 0) > 0 || download["bytes_per_second"] as? Int ?? 0 > 0
            {
                sawProgress = true
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        let turned = try #require(first200)
        #expect(sawProgress, "\(statusBodies.suffix(3))")
        // 200 from the moment the status hash says ready: within one poll of it (a poll is three
        // requests; generous for a loaded machine).
        let status = try await h.queue.status()
        #expect(status.state == .ready)
        // Never 200 before the status hash said ready (the order is the contract; how soon is timing).
        #expect(turned >= lastNot200)
        let (valid, report) = try await validateJSONLines(statusBodies + [try await h.get("/status").body], schema: "status.schema.json")
        #expect(valid, "\(report)")
        pool.signal(SIGTERM)
        #expect(await pool.wait() == 0)
        await h.stop()
    }

    @Test func metricsParseWithThePrometheusClientParser() async throws {
        let h = try await ServerHarness()
        _ = try await h.queue.enqueue(planJSON: planJSON("p1", [
            ["id": "flaky", "kind": "sleep", "backoff_ms": 50, "payload": ["ms": 20, "fail": ["message": "try again", "until_attempt": 1]]],
            ["id": "model:a.safetensors", "kind": "sleep", "payload": ["ms": 1200, "progress_bytes": 300_000]],
        ] + (1...6).map { ["id": "n\($0)", "kind": "noop"] }))
        let pool = try h.pool(processes: 1, concurrency: 4)
        defer { pool.terminate() }
        #expect(try await eventually(timeout: .seconds(30)) { try await h.queue.status().state == .ready })
        try await Task.sleep(for: .milliseconds(200))  // the last counters are flushed within 25 ms
        let metrics = try await h.get("/metrics")
        #expect(metrics.status == 200 && metrics.contentType?.hasPrefix("text/plain; version=0.0.4") == true)
        let parsed = try await runPython(prometheusProgram, [metrics.body])
        #expect(parsed.status == 0, "\(parsed.output)\n\(metrics.body)")
        let values = Dictionary(
            parsed.output.split(separator: "\n").compactMap { line -> (String, Double)? in
                let parts = line.split(separator: " ")
                guard parts.count == 2, let value = Double(parts[1]) else { return nil }
                return (String(parts[0]), value)
            }, uniquingKeysWith: { $1 })
        #expect(values["provision_jobs{state=succeeded}"] == 8)
        #expect(values["provision_machine_ready"] == 1 && values["provision_machine_state{state=ready}"] == 1)
        #expect(values["provision_plan_retries"] == 1 && values["provision_job_retries_total"] == 1)
        #expect(values["provision_download_bytes_total"] == 300_000)
        #expect(values["provision_job_duration_seconds_count{kind=noop}"] == 6)
        #expect(values["provision_job_duration_seconds_count{kind=sleep}"] == 3)
        #expect(values["provision_job_duration_seconds_bucket{kind=sleep,le=+Inf}"] == 3)
        #expect((values["provision_job_duration_seconds_sum{kind=sleep}"] ?? 0) >= 1.2)
        #expect(values["provision_job_attempts_total{kind=sleep,outcome=retried}"] == 1)
        #expect(values["provision_workers_alive"] == 1)
        pool.signal(SIGTERM)
        #expect(await pool.wait() == 0)
        await h.stop()
    }

    @Test func aStalledMachineIsUnhealthyWithAReason() async throws {
        let h = try await ServerHarness(stallAfter: .seconds(2))
        _ = try await h.queue.enqueue(planJSON: planJSON("p1", [["id": "long", "kind": "sleep", "payload": ["ms": 60_000], "lease_ms": 2000]]))
        let pool = try h.pool(processes: 1, concurrency: 1)
        defer { pool.terminate() }
        #expect(try await eventually(timeout: .seconds(20)) { try await h.queue.status().count("active") == 1 })
        for pid in childPIDs(of: pool.pid) { kill(pid, SIGKILL) }
        kill(pool.pid, SIGKILL)
        _ = await pool.wait(timeout: .seconds(10))
        var body = ""
        #expect(try await eventually(timeout: .seconds(15), every: .milliseconds(200)) {
            let health = try await h.get("/health")
            body = health.body
            return health.status == 503 && object(health.body)["status"] as? String == "stalled"
        })
        #expect((object(body)["reason"] as? String)?.contains("no worker has sent a heartbeat") == true, "\(body)")
        #expect(object(try await h.get("/status").body)["stalled"] as? Bool == true)
        #expect(try await h.get("/metrics").body.contains("provision_machine_state{machine_id=\"m1\",state=\"stalled\"} 1"))
        await h.stop()
    }

    @Test func aPortInUseStopsTheWorkerWithOneSentenceAndAStepFailure() async throws {
        let h = try await ServerHarness()
        let result = try await run(
            provisionExecutable(), ["worker", "--redis", h.redis.url, "--machine", "m1", "--health-port", String(h.port), "--log-level", "info"])
        #expect(result.status == 1)
        #expect(result.output.contains("provision: The health server cannot listen on 127.0.0.1:\(h.port)"), "\(result.output)")
        // The pool starts only once the server listens: no worker process was started and stopped.
        #expect(!result.output.contains("worker process started"), "\(result.output)")
        let entries = try await h.redis.client().send("XRANGE", h.queue.keys.events, "-", "+").array ?? []
        let events = entries.compactMap { $0.array?[1].hash?["event"] }.compactMap(StepEvent.decode)
        #expect(events.contains { $0["event"]?.string == "machine.step.failure" && $0["step_number"] == .int(12) && $0["error_type"]?.string == "port_in_use" })
        // The default address is loopback only.
        #expect(HealthServer.Configuration().host == "127.0.0.1" && HealthServer.Configuration().port == 9090)
        await h.stop()
    }

    @Test func aFailedStartOfUpTearsDownOnceAndLeavesNoConnection() async throws {
        let h = try await ServerHarness()
        let observer = try h.redis.client(label: "observer")
        defer { observer.close() }
        func clients() async throws -> Set<String> {
            let list = try await observer.send("CLIENT", "LIST").string ?? ""
            return Set(list.split(separator: "\n").compactMap { line in
                line.split(separator: " ").first { $0.hasPrefix("id=") }.map(String.init)
            })
        }
        let before = try await clients()
        let folder = try makeTemporaryDirectory("failed-start")
        defer { try? FileManager.default.removeItem(at: folder) }
        let plan = folder.appendingPathComponent("plan.json")
        try planJSON("p-failed-start", [["id": "a", "kind": "noop"]]).write(to: plan, atomically: true, encoding: .utf8)
        // The health server's port is taken by the harness' own server.
        let result = try await run(
            provisionExecutable(),
            ["up", "--redis", h.redis.url, "--machine", "m1", "--plan", plan.path, "--health-port", String(h.port), "--log-level", "info",
             "--state-dir", folder.path])
        #expect(result.status == 1, "\(result.output)")
        // One sentence, and nothing started twice or after the failure: no worker process, one attempt.
        let sentences = result.output.split(separator: "\n").filter { $0.hasPrefix("provision: ") }
        #expect(sentences.count == 1 && sentences[0].contains("The health server cannot listen on 127.0.0.1:\(h.port)"), "\(result.output)")
        #expect(!result.output.contains("worker process started"), "\(result.output)")
        #expect(!result.output.contains("going on without it"), "\(result.output)")
        let entries = try await observer.send("XRANGE", h.queue.keys.events, "-", "+").array ?? []
        let events = entries.compactMap { $0.array?[1].hash?["event"] }.compactMap(StepEvent.decode)
        #expect(events.filter { $0["event"]?.string == "machine.step.failure" && $0["step_number"] == .int(12) }.count == 1, "\(events)")
        // None of its connections is left on the server.
        let after = try await clients()
        #expect(after.subtracting(before).isEmpty, "left: \(after.subtracting(before))")
        await h.stop()
    }
}

/// Parses Prometheus text with prometheus_client's parser; prints "name{labels} value" per sample
/// (labels sorted, machine_id left out), exit 1 on a parse error or a histogram that is inconsistent.
let prometheusProgram = #"""
import sys
from prometheus_client.parser import text_string_to_metric_families
families = list(text_string_to_metric_families(sys.argv[1]))
assert families, "no metric families"
for family in families:
    assert family.documentation, family.name
    if family.type == "histogram":
        buckets = {}
        for s in family.samples:
            if s.name.endswith("_bucket"):
                buckets.setdefault(s.labels["kind"], []).append((float(s.labels["le"]), s.value))
        for kind, values in buckets.items():
            counts = [v for _, v in sorted(values)]
            assert counts == sorted(counts), f"buckets of {kind} are not cumulative"
    for s in family.samples:
        labels = {k: v for k, v in s.labels.items() if k != "machine_id"}
        text = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        print(f"{s.name}{{{text}}} {s.value}" if text else f"{s.name} {s.value}")
"""#
