import Foundation
import JobQueue
import RedisClient
import Synchronization

/// Buffers a process's step events, job progress and metric counts, and writes them to Redis in
/// batches from a background task: one `events.lua` call per flush (per 500 events) appends the
/// events to `B:events` (`XADD`, then `XTRIM MAXLEN ~ N`), sets or clears `B:progress` records and
/// adds to the `B:metrics` counters. Recording is a lock and an append, so the job path never waits
/// for Redis. Entries of one process keep their order in the stream.
public final class EventPublisher: Sendable {
    /// How a publisher batches and caps.
    public struct Configuration: Sendable {
        /// `MAXLEN ~` of the machine's event stream.
        public var maxLength = 10_000
        /// How often buffered records are written.
        public var flushInterval: Duration = .milliseconds(25)
        /// Events kept while Redis is unreachable; older ones are dropped (and counted) beyond it.
        public var maxBuffered = 100_000
        /// How long a job's progress record lives without an update (a crashed worker's is not removed).
        public var progressTTLSeconds = 86_400
        /// Events per `events.lua` call (a flush with more makes several calls, in one round trip).
        public var batchSize = 500

        public init() {}
    }

    private struct Pending {
        var events: [String] = []
        /// job id -> progress JSON, or nil to delete it.
        var progress: [String: String?] = [:]
        var counters: [String: Int64] = [:]
        var dropped: Int64 = 0
    }

    public let keys: MachineKeys
    public let context: EventContext
    public let redactor: Redactor
    public let configuration: Configuration
    private let redis: RedisClient
    private let pending = Mutex(Pending())
    private let writer = FlushWriter()
    /// The fixed fields of each step's events, encoded once.
    private let fixed: [Int: String]

    public init(
        redis: RedisClient, keys: MachineKeys, context: EventContext, redactor: Redactor,
        configuration: Configuration = Configuration()
    ) {
        self.redis = redis
        self.keys = keys
        self.context = context
        self.redactor = redactor
        self.configuration = configuration
        var fixed: [Int: String] = [:]
        for step in [Step.healthServer, .customNodes, .models, .workerConnection, .machineReady] {
            fixed[step.number] = StepEvent.fixedFields(step: step, context: context)
        }
        self.fixed = fixed
    }

    /// Records an event (encoded and redacted now, written at the next flush).
    public func emit(_ event: StepEvent) {
        let fields = fixed[event.step.number] ?? StepEvent.fixedFields(step: event.step, context: context)
        append(redactor.scrub(event.json(fixed: fields)))
    }

    /// Records an event whose further attributes `attributes` writes straight into the JSON: the
    /// job path's way, with no intermediate attribute list.
    public func emit(
        name: String, step: Step, timestamp: Int64 = StepEvent.now(), traceID: String?, spanID: String,
        parentSpanID: String?, durationMilliseconds: Double? = nil, attributes: (inout JSONObjectWriter) -> Void
    ) {
        var out = JSONObjectWriter(capacity: 640)
        out.add("event", name)
        out.add("timestamp", timestamp)
        out.appendFields(fixed[step.number] ?? StepEvent.fixedFields(step: step, context: context))
        out.add("trace_id", traceID)
        out.add("span_id", spanID)
        out.add("parent_span_id", parentSpanID)
        if let durationMilliseconds { out.add("duration_ms", durationMilliseconds) }
        attributes(&out)
        append(redactor.scrub(out.finish()))
    }

    private func append(_ json: String) {
        pending.withLock { state in
            state.events.append(json)
            Self.trim(&state, to: configuration.maxBuffered)
        }
    }

    /// Records the latest progress of a running job (JSON object text); only the newest per flush is written.
    public func setProgress(job: String, json: String) {
        let scrubbed = redactor.scrub(json)
        pending.withLock { $0.progress[job] = .some(scrubbed) }
    }

    /// Removes a job's progress record (the attempt ended).
    public func clearProgress(job: String) {
        pending.withLock { $0.progress[job] = .some(nil) }
    }

    /// Adds to a counter of `B:metrics` (coalesced per flush).
    public func count(_ field: String, by amount: Int64 = 1) {
        guard amount != 0 else { return }
        pending.withLock { $0.counters[field, default: 0] += amount }
    }

    /// Adds to several counters at once.
    public func count(_ amounts: [(field: String, amount: Int64)]) {
        pending.withLock { state in
            for (field, amount) in amounts where amount != 0 { state.counters[field, default: 0] += amount }
        }
    }

    /// Records still waiting to be written.
    public var bufferedEvents: Int { pending.withLock { $0.events.count } }

    /// Writes everything recorded so far; returns once Redis has it (or the write failed and the
    /// events were put back for the next flush).
    public func flush() async {
        await writer.serialized { [self] in await write() }
    }

    /// Flushes every `flushInterval` until the surrounding task is cancelled, then flushes once more.
    public func run() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.flushInterval)
            await flush()
        }
        await flush()
    }

    private func write() async {
        let batch = pending.withLock { state -> Pending in
            let taken = state
            state = Pending()
            return taken
        }
        var counters = batch.counters
        if batch.dropped > 0 { counters[MetricField.eventsDropped, default: 0] += batch.dropped }
        if batch.events.isEmpty && batch.progress.isEmpty && counters.isEmpty { return }
        // One events.lua call per batch of at most `batchSize` events (long scripts would hold Redis up).
        let keys = [keys.events, keys.progress, keys.metrics]
        let header = [String(configuration.maxLength), String(configuration.progressTTLSeconds)]
        var calls: [(script: RedisScript, keys: [String], arguments: [String])] = []
        var start = 0
        repeat {
            let end = min(batch.events.count, start + configuration.batchSize)
            var arguments = header
            arguments.reserveCapacity(end - start + 4 + (start == 0 ? 2 * (batch.progress.count + counters.count) : 0))
            arguments.append(String(end - start))
            arguments.append(contentsOf: batch.events[start..<end])
            if start == 0 {
                arguments.append(String(batch.progress.count))
                for (job, json) in batch.progress {
                    arguments.append(job)
                    arguments.append(json ?? "")
                }
                for (field, amount) in counters.sorted(by: { $0.key < $1.key }) {
                    arguments.append(field)
                    arguments.append(String(amount))
                }
            } else {
                arguments.append("0")
            }
            calls.append((QueueScript.events, keys, arguments))
            start = end
        } while start < batch.events.count
        do {
            let replies = try await redis.evalPipeline(calls)
            // A refused call (a bug, or keys of the wrong type) loses its events: count them.
            var lost: Int64 = 0
            for (index, reply) in replies.enumerated() {
                if case .error = reply, let count = calls[index].arguments.dropFirst(2).first.flatMap({ Int64($0) }) {
                    lost += count
                }
            }
            if lost > 0 { pending.withLock { $0.dropped += lost } }
        } catch {
            // Redis is away: keep the events for the next flush (bounded), merge the rest back.
            pending.withLock { state in
                state.events.insert(contentsOf: batch.events, at: 0)
                Self.trim(&state, to: configuration.maxBuffered)
                for (job, json) in batch.progress where state.progress[job] == nil { state.progress[job] = json }
                for (field, amount) in counters { state.counters[field, default: 0] += amount }
            }
        }
    }

    /// Over the cap, the oldest quarter goes at once (dropping one at a time would move the whole
    /// buffer for every new event).
    private static func trim(_ state: inout Pending, to cap: Int) {
        guard state.events.count > cap else { return }
        let excess = state.events.count - cap + cap / 4
        state.events.removeFirst(excess)
        state.dropped += Int64(excess)
    }

    /// Closes the publisher's connection (after a final `flush`).
    public func close() {
        redis.close()
    }
}

/// Runs flushes one at a time, so batches reach Redis in the order they were taken (an actor alone
/// would interleave them at the `await`).
private actor FlushWriter {
    private var busy = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    func serialized(_ body: @Sendable () async -> Void) async {
        while busy { await withCheckedContinuation { waiters.append($0) } }
        busy = true
        await body()
        busy = false
        if !waiters.isEmpty { waiters.removeFirst().resume() }
    }
}
