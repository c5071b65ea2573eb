import Aggregator
import Foundation
import JobQueue
import Logging
import RedisClient
import Scheduler
import ServiceLifecycle
import Telemetry
import TestSupport
import Testing

/// An executor that does what a careless download would: puts the token into its log lines, its
/// progress, its result and its error messages.
struct LeakyExecutor: JobExecutor {
    /// Stands in for `download`, whatever the payload.
    struct Payload: JobPayload {
        static let kind = "download"
        static let step = JobStep.models
        init(from decoder: any Decoder) throws {}
        func encode(to encoder: any Encoder) throws {}
    }

    let token: String

    func run(_ job: JobAttempt<Payload>, context: JobContext) async throws -> String {
        let url = "https://huggingface.co/org/model/resolve/main/x.safetensors?token=\(token)"
        context.logger.info("fetching \(url) with Authorization: Bearer \(token)", metadata: ["url": "\(url)", "auth": "Bearer \(token)"])
        context.progress(JobProgress(bytesDone: 10, bytesTotal: 100))
        if job.id.hasSuffix("fails") {
            throw JobFailure(type: "http_403", message: "GET https://user:\(token)@cdn.invalid/x?sig=\(token) answered 403 (token \(token))", retryable: false)
        }
        return #"{"url":"https://cdn.invalid/x?X-Amz-Signature=abc&token=\#(token)","note":"\#(token)"}"#
    }
}

@Suite("Secrets never reach events, logs or Redis", .serialized)
struct SecretTests {
    static let token = "hf_SECRETtokenVALUE0123456789"
    static let civitai = "civitai-SECRET-987654321"
    static let password = "redisPW-SECRET-4242"

    /// Every value stored in Redis, as text: strings, hashes, lists, sets, sorted sets, streams.
    func everyValue(_ client: RedisClient) async throws -> [String] {
        var values: [String] = []
        let keys = try await client.send("KEYS", "*").array?.compactMap(\.string) ?? []
        for key in keys {
            values.append(key)
            let type = try await client.send("TYPE", key).string ?? ""
            let reply: RedisReply
            switch type {
            case "string": reply = try await client.send("GET", key)
            case "hash": reply = try await client.send("HGETALL", key)
            case "list": reply = try await client.send("LRANGE", key, "0", "-1")
            case "set": reply = try await client.send("SMEMBERS", key)
            case "zset": reply = try await client.send("ZRANGE", key, "0", "-1", "WITHSCORES")
            case "stream": reply = try await client.send("XRANGE", key, "-", "+")
            default: continue
            }
            values.append(flatten(reply).joined(separator: "\n"))
        }
        return values
    }

    func flatten(_ reply: RedisReply) -> [String] {
        if let items = reply.array { return items.flatMap(flatten) }
        return reply.string.map { [$0] } ?? []
    }

    @Test func aWorkerWithTokensInItsEnvironmentLeaksNone() async throws {
        let redis = try await TestRedis(password: Self.password)
        let environment = [
            "HF_TOKEN": Self.token, "CIVITAI_TOKEN": Self.civitai, "REDIS_URL": redis.url, "GPU_MODE": "mock",
            // The plan's header names ${HF_TOKEN}: the operator lets plans use it.
            "PROVISION_EXPOSE_ENV": "HF_TOKEN",
        ]
        let redactor = Redactor(environment: environment)
        let keys = try MachineKeys(machine: "m1")
        let queue = try JobQueue(redis: try redis.client(), machine: "m1")
        _ = try await queue.enqueue(planJSON: #"{"version":1,"plan_id":"p","jobs":[{"id":"model:ok","kind":"download"},{"id":"model:fails","kind":"download"}]}"#)

        // In process: the worker's logs go through the redacting handler into memory.
        let sink = CapturedLog()
        let logger = Logger(label: "worker") { _ in RedactingLogHandler(wrapping: CapturingLogHandler(sink: sink), redactor: redactor) }
        let context = EventContext.fromEnvironment(machineID: "m1", environment: environment, defaultWorkersConfig: "t")
        let publisher = EventPublisher(redis: try redis.client(label: "events"), keys: keys, context: context, redactor: redactor)
        let announcer = try FlipAnnouncer(
            redis: try redis.client(label: "announce"), keys: keys, publisher: publisher, context: context, redactor: redactor,
            claimant: "w", logger: logger)
        var configuration = WorkerConfiguration(workerID: "w-secret", concurrency: 2)
        configuration.redact = { redactor.scrub($0) }
        let worker = try Worker(
            redis: try redis.server.configuration, machine: "m1", registry: ExecutorRegistry([AnyJobExecutor(LeakyExecutor(token: Self.token))]),
            configuration: configuration, logger: logger, observers: [StepEventObserver(publisher: publisher), announcer])
        let group = ServiceGroup(configuration: .init(services: [worker], gracefulShutdownSignals: [], logger: logger))
        let flusher = Task { await publisher.run() }
        let running = Task { try await group.run() }
        #expect(try await eventually(timeout: .seconds(20)) { try await queue.status().state == .failed })
        #expect(try await eventually(timeout: .seconds(20)) {
            try await redis.client().send("HGET", keys.status, "announced").string == "1"
        })
        await group.triggerGracefulShutdown()
        try await running.value
        flusher.cancel()
        await flusher.value

        // Out of process: a worker pool with the same environment and trace logs, real downloads
        // that send the token to their origin (a header template, so the plan holds no secret), one
        // of them answered 404, and a failure whose message holds a URL with credentials.
        let origin = try await TestOrigin()
        defer { origin.stop() }
        _ = try origin.addFile("model.bin", size: 3_000_000)
        let models = try makeTemporaryDirectory("models")
        defer { try? FileManager.default.removeItem(at: models) }
        let auth = ["Authorization": "Bearer ${HF_TOKEN}"]
        let plan: [String: Any] = ["version": 1, "plan_id": "p2", "jobs": [
            ["id": "a", "kind": "sleep", "payload": ["ms": 50, "fail": ["message": "GET https://bob:plan-given-pw@h.invalid/f?token=abc123456 failed", "retryable": false]]],
            ["id": "b", "kind": "noop"],
            ["id": "model:ok.safetensors", "kind": "download", "payload": ["url": origin.url("model.bin"), "path": "checkpoints/ok.safetensors", "headers": auth, "connections": 2]],
            ["id": "model:missing.safetensors", "kind": "download", "max_attempts": 1, "payload": ["url": origin.url("missing.bin", "sig=plan-signature-0001"), "path": "checkpoints/missing.safetensors", "headers": auth]],
        ]]
        _ = try await queue.enqueue(planJSON: String(decoding: try JSONSerialization.data(withJSONObject: plan), as: UTF8.self))
        let pool = try TestProcess.provision(
            ["worker", "--machine", "m1", "--processes", "1", "--concurrency", "4", "--log-level", "trace", "--health-port", "0",
             "--models-root", models.path, "--allow-loopback-origins"],
            environment: environment)
        defer { pool.terminate() }
        #expect(try await eventually(timeout: .seconds(60)) {
            let status = try await queue.status()
            return status.state == .failed && status.isSettled
        })
        #expect(try await eventually(timeout: .seconds(20)) {
            try await redis.client().send("HGET", keys.status, "announced").string == "1"
        })
        // The token was really used: the origin saw it on the download's requests.
        let requests = try await origin.stats().requests
        #expect(requests.contains { $0.authorization == "Bearer \(Self.token)" }, "\(requests.prefix(3))")
        let okRecord = try await queue.job(plan: "p2", id: "model:ok.safetensors")
        #expect(okRecord?["state"] == "succeeded", "\(okRecord ?? [:])")
        let cli = [
            try await run(provisionExecutable(), ["status", "--machine", "m1"], environment: environment),
            try await run(provisionExecutable(), ["events", "--machine", "m1"], environment: environment),
            try await run(provisionExecutable(), ["events", "--machine", "m1", "--format", "otlp"], environment: environment),
            try await run(provisionExecutable(), ["events", "--fleet"], environment: environment),
        ]
        pool.signal(SIGTERM)
        #expect(await pool.wait() == 0)

        // The search: every event, every log line, every Redis value, every line the CLI printed.
        let client = try redis.client()
        let stored = try await everyValue(client)
        let events = (try await client.send("XRANGE", keys.events, "-", "+").array ?? []).compactMap { $0.array?[1].hash?["event"] }
        let logs = sink.all + [pool.output]
        let printed = cli.map(\.output)
        #expect(events.count > 8 && sink.all.count > 3 && pool.output.contains("job failed"))
        #expect(events.contains { $0.contains("machine.models.install.complete") && $0.contains("model:ok.safetensors") })
        for secret in [Self.token, Self.civitai, Self.password] {
            for (name, texts) in [("event", events), ("log", logs), ("CLI output", printed)] {
                let hits = texts.filter { $0.contains(secret) }
                #expect(hits.isEmpty, "\(name) holds a secret: \(hits.first?.prefix(300) ?? "")")
            }
            let hits = stored.filter { $0.contains(secret) }
            #expect(hits.isEmpty, "Redis holds a secret: \(hits.first?.prefix(300) ?? "")")
        }
        // The plan's own URL credentials are masked wherever the worker wrote them (the payload,
        // written by the API, keeps what the API sent).
        let failures = try await client.send("LRANGE", keys.failures, "0", "-1").array?.compactMap(\.string) ?? []
        #expect(failures.contains { $0.contains("[REDACTED]@h.invalid") && $0.contains("token=[REDACTED]") }, "\(failures)")
        for planSecret in ["plan-given-pw", "plan-signature-0001"] {
            #expect(!events.contains { $0.contains(planSecret) } && !logs.contains { $0.contains(planSecret) })
            #expect(!failures.contains { $0.contains(planSecret) }, "\(failures)")
        }
        // What the executor logged did arrive, masked.
        #expect(sink.all.contains { $0.contains("fetching https://huggingface.co/org/model/resolve/main/x.safetensors?token=[REDACTED]") })
        redis.stop()
    }
}
