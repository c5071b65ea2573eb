import Aggregator
import Foundation
import JobQueue
import Logging
import ProcessControl
import RedisClient
import Scheduler
import Synchronization
import Telemetry
import TestSupport
import Testing

func claimedJob(_ id: String, kind: String, plan: String = "p1", attempt: Int = 1, token: String = "7") -> ClaimedJob {
    ClaimedJob(
        id: id, kind: kind, payload: "{}", attempt: attempt, maxAttempts: 3, lease: Lease(plan: plan, job: id, token: token),
        leaseMilliseconds: 30_000, timeoutMilliseconds: 60_000, generation: 1, label: "")
}

/// Log lines collected in memory, for tests that search every line.
final class CapturedLog: Sendable {
    let lines = Mutex<[String]>([])
    var all: [String] { lines.withLock { $0 } }
}

struct CapturingLogHandler: LogHandler {
    let sink: CapturedLog
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:]) { $1 }
        let line = "\(event.level) \(event.message) \(merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))"
        sink.lines.withLock { $0.append(line) }
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
}

@Suite("Telemetry: event names, encoding, redaction, throttling, OTLP")
struct TelemetryTests {
    @Test func jobsMapToTheDocumentedSteps() {
        #expect(Step.forJob(kind: "node", id: "node:x").number == 17)
        #expect(Step.forJob(kind: "comfyui", id: "comfyui").number == 17)
        #expect(Step.forJob(kind: "python-deps", id: "python-deps").number == 17)
        #expect(Step.forJob(kind: "download", id: "anything").number == 18)
        #expect(Step.forJob(kind: "verify", id: "check").number == 18)
        #expect(Step.forJob(kind: "sleep", id: "model:sdxl.safetensors").number == 18)
        #expect(Step.forJob(kind: "noop", id: "verify").number == 18)
        #expect(Step.forJob(kind: "noop", id: "node:ComfyUI-Manager").number == 17)
        #expect(Step.forJob(kind: "sleep", id: "comfyui").number == 17)
        #expect(Step.component(ofJob: "node:ComfyUI-Manager") == "ComfyUI-Manager")
        #expect(Step.component(ofJob: "model:sdxl.safetensors") == "sdxl.safetensors")
        #expect(Step.component(ofJob: "python-deps") == "python-deps")
        #expect(Step.models.event + EventName.start == "machine.models.install.start")
        #expect(Step.machineReady.number == 21 && Step.workerConnection.number == 20 && Step.healthServer.number == 12)
    }

    @Test func eventsAreFlatJSONWithTheRequiredAttributes() throws {
        let context = EventContext(machineID: "m1", gpuMode: "mock", gpuCount: 2, workersConfig: "comfyui:2")
        let event = StepEvent(
            name: EventName.failure, step: .customNodes, timestamp: 1_700_000_000_123_456_789, traceID: "plan-1",
            spanID: "node:a", parentSpanID: "step/17", durationMilliseconds: 12.5,
            attributes: [
                ("error_message", .string("quote \" backslash \\ newline \n tab \t bell \u{07} é 漢")),
                ("retry_attempt", .int(2)), ("will_retry", .bool(true)),
            ])
        let json = event.json(context: context)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        #expect(object["event"] as? String == "machine.step.failure")
        #expect((object["timestamp"] as? NSNumber)?.int64Value == 1_700_000_000_123_456_789)
        #expect(object["machine_id"] as? String == "m1" && object["gpu_mode"] as? String == "mock")
        #expect(object["gpu_count"] as? Int == 2 && object["workers_config"] as? String == "comfyui:2")
        #expect(object["step_number"] as? Int == 17 && object["step_name"] as? String == "Custom Nodes Installation")
        #expect(object["phase"] as? String == "component_installation")
        #expect(object["trace_id"] as? String == "plan-1" && object["span_id"] as? String == "node:a")
        #expect(object["parent_span_id"] as? String == "step/17" && object["duration_ms"] as? Double == 12.5)
        #expect(object["error_message"] as? String == "quote \" backslash \\ newline \n tab \t bell \u{07} é 漢")
        let decoded = try #require(StepEvent.decode(json))
        #expect(decoded["retry_attempt"] == .int(2) && decoded["will_retry"] == .bool(true))

        let outside = StepEvent(name: Step.workerConnection.event, step: .workerConnection, traceID: nil, spanID: "step/20/w", parentSpanID: nil)
        let plain = try #require(try JSONSerialization.jsonObject(with: Data(outside.json(context: context).utf8)) as? [String: Any])
        #expect(plain["trace_id"] is NSNull && plain["parent_span_id"] is NSNull)
    }

    @Test func contextComesFromTheSeedEnvironment() {
        let mock = EventContext.fromEnvironment(
            machineID: "m", environment: ["GPU_MODE": "mock", "MOCK_GPU_NUM": "4", "WORKERS": "comfyui:2"], defaultWorkersConfig: "x")
        #expect(mock.gpuMode == "mock" && mock.gpuCount == 4 && mock.workersConfig == "comfyui:2")
        let plain = EventContext.fromEnvironment(machineID: "m", environment: [:], defaultWorkersConfig: "processes=2,concurrency=4")
        #expect(plain.gpuMode == "auto" && plain.workersConfig == "processes=2,concurrency=4")
    }

    @Test func redactorMasksSecretValuesURLUserInfoAndSecretQueryParameters() {
        let redactor = Redactor(environment: [
            "HF_TOKEN": "hf_abcdefghijklmnop", "MY_SERVICE_PASSWORD": "pa$$/word\"42", "AWS_SECRET_ACCESS_KEY": "AKIAxyzxyzxyz",
            "REDIS_URL": "redis://:redis-secret-pw@10.0.0.1:6379/0", "HOME": "/root", "SHORT_TOKEN": "abc",
        ])
        let text = "token hf_abcdefghijklmnop and pa$$/word\"42 and AKIAxyzxyzxyz; redis-secret-pw"
        let scrubbed = redactor.scrub(text)
        for secret in ["hf_abcdefghijklmnop", "pa$$/word\"42", "AKIAxyzxyzxyz", "redis-secret-pw"] {
            #expect(!scrubbed.contains(secret), "\(scrubbed)")
        }
        #expect(scrubbed.contains("[REDACTED]"))
        // JSON-escaped and percent-encoded forms are masked too.
        #expect(!redactor.scrub(#"{"m":"pa$$/word\"42"}"#).contains(#"pa$$/word\"42"#))
        #expect(!redactor.scrub("x?q=pa%24%24%2Fword%2242").contains("pa%24%24%2Fword%2242"))
        // URLs: user info and secret query values, whatever their origin.
        #expect(
            redactor.scrub("GET https://bob:s3cr3t-value@example.invalid/f.bin?download=1&token=abcdef123&sig=zz99#x failed")
                == "GET https://[REDACTED]@example.invalid/f.bin?download=1&token=[REDACTED]&sig=[REDACTED]#x failed")
        #expect(redactor.scrub("git clone https://ghp_tokenvalue@github.com/a/b") == "git clone https://[REDACTED]@github.com/a/b")
        #expect(redactor.scrub(#"{"url":"https://h/x?X-Amz-Signature=abc&X-Amz-Credential=def&part=2"}"#)
            == #"{"url":"https://h/x?X-Amz-Signature=[REDACTED]&X-Amz-Credential=[REDACTED]&part=2"}"#)
        // Ordinary text and short values are left alone.
        #expect(redactor.scrub("nothing secret here: /root abc") == "nothing secret here: /root abc")
        #expect(Redactor.looksSecret(name: "CIVITAI_TOKEN") && Redactor.looksSecret(name: "api_key") && !Redactor.looksSecret(name: "MACHINE_ID"))
    }

    @Test func redactorFindsSecretsAnywhereInBytes() {
        // A secret that starts with JSON punctuation is sought by its first other byte.
        let redactor = Redactor(environment: ["API_TOKEN": ":colon-first-secret", "OTHER_KEY": "plain-secret-value"])
        let colons = String(repeating: #""a":1,"#, count: 40)
        for text in [
            ":colon-first-secret", "x:colon-first-secret", colons + ":colon-first-secret", ":colon-first-secret" + colons,
            "plain-secret-value", colons + "plain-secret-value" + colons,
        ] {
            let scrubbed = String(decoding: redactor.scrub(bytes: Array(text.utf8)), as: UTF8.self)
            #expect(!scrubbed.contains("colon-first-secret") && !scrubbed.contains("plain-secret-value"), "\(scrubbed)")
            #expect(scrubbed.contains(Redactor.mask))
        }
        // Near misses are left alone, and clean text comes back as it was.
        for text in [":colon-first-secre", "colon-first-secret", colons, "plain-secret-valu", ""] {
            #expect(redactor.scrub(bytes: Array(text.utf8)) == Array(text.utf8))
            #expect(redactor.scrub(text) == text)
        }
        #expect(redactor.scrub(bytes: Array(#"{"u":"https://x:pw@h/f"}"#.utf8)) == Array(#"{"u":"https://[REDACTED]@h/f"}"#.utf8))
    }

    @Test func numbersAreWrittenWithAtMostThreeDecimals() {
        let cases: [(Double, String)] = [
            (0, "0"), (12, "12"), (-3, "-3"), (0.033, "0.033"), (0.1, "0.1"), (0.05, "0.05"), (1.25, "1.25"),
            (2.0004, "2"), (0.0999, "0.1"), (-2.5, "-2.5"), (-0.0004, "0"), (123456.789, "123456.789"),
            (.nan, "0"), (.infinity, "0"), (2e13, "20000000000000"), (1e15 + 0.5, "1000000000000001"),
        ]
        for (value, text) in cases { #expect(JSONObjectWriter.number(value) == text, "\(value)") }
    }

    @Test func logHandlerMasksMessagesMetadataAndErrors() {
        let sink = CapturedLog()
        let redactor = Redactor(environment: ["CIVITAI_TOKEN": "civitai-secret-123456"])
        let logger = Logger(label: "t") { _ in RedactingLogHandler(wrapping: CapturingLogHandler(sink: sink), redactor: redactor) }
        logger.info("fetching https://civitai.com/api/download/1?token=civitai-secret-123456", metadata: [
            "url": "https://u:civitai-secret-123456@h/x", "nested": ["a": .array([.string("civitai-secret-123456")])],
        ])
        let text = sink.all.joined(separator: "\n")
        #expect(!text.contains("civitai-secret-123456"), "\(text)")
        #expect(text.contains("token=[REDACTED]"))
    }

    @Test func progressIsPublishedAtMostOncePerSecondPerJob() async throws {
        let redis = try await TestRedis()
        let keys = try MachineKeys(machine: "m1")
        let publisher = EventPublisher(
            redis: try redis.client(label: "events"), keys: keys,
            context: EventContext(machineID: "m1", workersConfig: "test"), redactor: Redactor(environment: [:]))
        let observer = StepEventObserver(publisher: publisher)
        let flusher = Task { await publisher.run() }
        defer { flusher.cancel() }
        let job = claimedJob("model:big.safetensors", kind: "download")
        let other = claimedJob("model:small.safetensors", kind: "download", token: "8")
        observer.jobStarted(job, workerID: "w")
        let clock = ContinuousClock()
        let start = clock.now
        var reports = 0
        // ~2.3 s of reports every 10 ms, for two jobs at once.
        while clock.now - start < .milliseconds(2300) {
            let fraction = (clock.now - start) / .milliseconds(2300)
            observer.jobProgress(job, JobProgress(bytesDone: Int64(fraction * 1_000_000), bytesTotal: 1_000_000))
            observer.jobProgress(other, JobProgress(bytesDone: Int64(fraction * 500), bytesTotal: 500))
            reports += 1
            try await Task.sleep(for: .milliseconds(10))
        }
        await publisher.flush()
        // While it runs, the latest progress is readable for /status.
        let record = try #require(try await redis.client().send("HGET", keys.progress, job.id).string)
        #expect(record.contains("\"bytes_total\":1000000") && record.contains("\"plan\":\"p1\""))
        observer.jobProgress(job, JobProgress(bytesDone: 1_000_000, bytesTotal: 1_000_000))
        observer.jobSucceeded(job, outcome: .ok, duration: .milliseconds(2300), sinceEnd: .milliseconds(1))
        await publisher.flush()

        let client = try redis.client()
        let entries = try await client.send("XRANGE", keys.events, "-", "+").array ?? []
        let events = entries.compactMap { $0.array?[1].hash?["event"] }.compactMap(StepEvent.decode)
        let progress = events.filter { $0["event"]?.string == "machine.models.install.progress" && $0["job_id"]?.string == job.id }
        #expect(reports >= 10)
        // First report at once, then at most one a second: 3 in 2.3 s (at 0, 1, 2 s).
        #expect((2...3).contains(progress.count), "\(progress.count) progress events for \(reports) reports")
        let times = progress.compactMap { $0["timestamp"]?.int }
        for (a, b) in zip(times, times.dropFirst()) { #expect(b - a >= 999_000_000) }
        #expect(progress.dropFirst().allSatisfy { ($0["bytes_per_second"]?.double ?? 0) > 0 })
        let complete = try #require(events.first { $0["event"]?.string == "machine.models.install.complete" })
        #expect(complete["bytes_done"] == .int(1_000_000) && complete["duration_ms"]?.double == 2300)
        // The record is gone with the attempt; the bytes are counted once.
        #expect(try await client.send("HEXISTS", keys.progress, job.id).int == 0)
        #expect(try await client.send("HGET", keys.metrics, MetricField.bytesDownloaded).int ?? 0 >= 1_000_000)
        #expect(try await client.send("HGET", keys.metrics, "job_duration_count|download").int == 1)
        publisher.close()
    }

    /// A publisher for machine `m1` on `redis`, with no secrets to mask.
    private func publisher(
        on redis: TestRedis, reconnectWindow: Duration = .seconds(5), _ configure: (inout EventPublisher.Configuration) -> Void
    ) throws -> (EventPublisher, MachineKeys) {
        let keys = try MachineKeys(machine: "m1")
        var configuration = EventPublisher.Configuration()
        configure(&configuration)
        let publisher = EventPublisher(
            redis: try redis.client(label: "events", reconnectWindow: reconnectWindow), keys: keys,
            context: EventContext(machineID: "m1", workersConfig: "t"), redactor: Redactor(environment: [:]),
            configuration: configuration)
        return (publisher, keys)
    }

    /// The `span_id` of each stream entry in `entries` (an XRANGE reply).
    private func spanIDs(_ entries: [RedisReply]) -> [String] {
        entries.compactMap { $0.array?[1].hash?["event"] }.compactMap(StepEvent.decode).compactMap { $0["span_id"]?.string }
    }

    @Test func publisherBatchesKeepsOrderAndCapsTheStream() async throws {
        let redis = try await TestRedis()
        let (publisher, keys) = try publisher(on: redis) { $0.maxLength = 1000 }
        let client = try redis.client()
        for index in 0..<5000 {
            publisher.emit(StepEvent(name: Step.customNodes.event + ".start", step: .customNodes, traceID: "p", spanID: "j\(index)", parentSpanID: "step/17"))
        }
        #expect(publisher.bufferedEvents == 5000)
        await publisher.flush()
        #expect(publisher.bufferedEvents == 0)
        let length = try #require(try await client.send("XLEN", keys.events).int)
        #expect(length >= 1000 && length < 1200, "MAXLEN ~ 1000 kept \(length)")
        let last = try await client.send("XREVRANGE", keys.events, "+", "-", "COUNT", "3").array ?? []
        #expect(spanIDs(last) == ["j4999", "j4998", "j4997"])

        // The stored text is exactly the event's own JSON (the publisher encodes at the flush).
        let event = StepEvent(
            name: EventName.failure, step: .models, traceID: "p", spanID: "download:x", parentSpanID: "step/18",
            durationMilliseconds: 12.345, attributes: [("error_type", .string("http")), ("retry_attempt", .int(2)), ("will_retry", .bool(true))])
        publisher.emit(event)
        await publisher.flush()
        let stored = try await client.send("XREVRANGE", keys.events, "+", "-", "COUNT", "1").array?.first?.array?[1].hash?["event"]
        #expect(stored == event.json(context: publisher.context))
        publisher.close()
    }

    /// `run` sleeps while nothing is recorded (an idle supervisor's publisher must not look 40 times
    /// a second): each record wakes it, and a cancellation ends it while it waits.
    @Test(.timeLimit(.minutes(1))) func aWaitingPublisherIsWokenByEachRecordAndEndsWhenCancelled() async throws {
        let redis = try await TestRedis()
        let (publisher, keys) = try publisher(on: redis) { _ in }
        let client = try redis.client()
        let flusher = Task { await publisher.run() }
        for round in 1...3 {
            // No flush from here: only the waiting `run` can write these.
            publisher.emit(StepEvent(name: Step.customNodes.event + ".start", step: .customNodes, traceID: "p", spanID: "quiet\(round)", parentSpanID: "step/17"))
            publisher.count("quiet_total")
            while try await client.send("HGET", keys.metrics, "quiet_total").int != Int64(round) { try await Task.sleep(for: .milliseconds(10)) }
        }
        publisher.setProgress(job: "j", json: #"{"bytes_done":1}"#)
        while try await client.send("HEXISTS", keys.progress, "j").int != 1 { try await Task.sleep(for: .milliseconds(10)) }
        #expect(spanIDs(try await client.send("XRANGE", keys.events, "-", "+").array ?? []) == ["quiet1", "quiet2", "quiet3"])
        flusher.cancel()
        await flusher.value
        #expect(publisher.bufferedEvents == 0)
        publisher.close()
    }

    @Test func backgroundThreadRunsWorkInOrderAtALowerPriority() async {
        let thread = BackgroundThread(name: "test-background", nice: 10)
        let seen = Mutex<[Int]>([])
        let niceness = await withCheckedContinuation { (continuation: CheckedContinuation<Int32, Never>) in
            for index in 0..<100 { thread.run { seen.withLock { $0.append(index) } } }
            // On Linux PRIO_PROCESS with 0 names the calling thread.
            thread.run { continuation.resume(returning: getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0)) }
        }
        #expect(niceness == 10)
        #expect(seen.withLock { $0 } == Array(0..<100))
        // After stop, work runs at once on the caller's thread, so nobody waits forever.
        thread.stop()
        let ranInline = Mutex(false)
        thread.run { ranInline.withLock { $0 = getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0) != 10 } }
        #expect(ranInline.withLock { $0 })
    }

    @Test func publisherKeepsEventsWhileRedisIsAwayAndCountsWhatItDrops() async throws {
        let redis = try await TestRedis()
        let (publisher, keys) = try publisher(on: redis, reconnectWindow: .milliseconds(200)) { $0.maxBuffered = 40 }
        func emit(_ range: Range<Int>) {
            for index in range {
                publisher.emit(
                    name: Step.customNodes.event + EventName.start, step: .customNodes, traceID: "p", spanID: "j\(index)",
                    parentSpanID: "step/17") { $0.add("job_id", "j\(index)") }
            }
        }
        redis.server.stop()
        emit(0..<30)
        publisher.count("custom_total", by: 2)
        await publisher.flush()  // Redis is away: everything is kept
        #expect(publisher.bufferedEvents == 30)
        // The 41st event is over the cap: the oldest quarter of the cap and the excess go (j0…j10).
        emit(30..<50)
        #expect(publisher.bufferedEvents == 39)
        try await redis.server.start()
        await publisher.flush()
        #expect(publisher.bufferedEvents == 0)
        let client = try redis.client()
        let entries = try await client.send("XRANGE", keys.events, "-", "+").array ?? []
        #expect(spanIDs(entries) == (11..<50).map { "j\($0)" })
        #expect(try await client.send("HGET", keys.metrics, MetricField.eventsDropped).int == 11)
        #expect(try await client.send("HGET", keys.metrics, "custom_total").int == 2)
        publisher.close()
    }

    @Test func otlpExportIsAcceptedByTheOpenTelemetryProtoParser() async throws {
        let context = EventContext(machineID: "m1", gpuMode: "mock", gpuCount: 1, workersConfig: "comfyui:1")
        let events = [
            StepEvent(name: Step.customNodes.event + EventName.start, step: .customNodes, traceID: "plan-7", spanID: "node:a", parentSpanID: "step/17",
                      attributes: [("job_id", .string("node:a")), ("attempt", .int(1))]),
            StepEvent(name: EventName.failure, step: .customNodes, traceID: "plan-7", spanID: "node:a", parentSpanID: "step/17",
                      durationMilliseconds: 1.5, attributes: [("error_type", .string("x")), ("will_retry", .bool(false))]),
            StepEvent(name: Step.machineReady.event, step: .machineReady, traceID: "plan-7", spanID: "step/21", parentSpanID: nil, durationMilliseconds: 99),
        ].compactMap { StepEvent.decode($0.json(context: context)) }
        let request = OTLPLogs.request(events: events)
        let result = try await checkOTLPLogs(request)
        #expect(result.status == 0, "\(result.output)")
        #expect(result.output.contains("records 3"), "\(result.output)")
        #expect(OTLPLogs.traceID("plan-7").count == 32 && OTLPLogs.spanID(trace: "plan-7", span: "node:a").count == 16)
        #expect(OTLPLogs.spanID(trace: "plan-7", span: "node:a") != OTLPLogs.spanID(trace: "plan-7", span: "node:b"))
    }
}

