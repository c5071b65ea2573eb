import Foundation
import JobQueue
import ProcessControl
import RedisClient
import Synchronization

/// Buffers a process's step events, job progress and metric counts, and writes them to Redis in
/// batches, one round trip per flush: an `XADD B:events * event <json>` per event and one `XTRIM
/// B:events MAXLEN ~ N`, then `HSET`/`HDEL` of `B:progress` records and `HINCRBY` of the `B:metrics`
/// counters. Recording is a lock and an append of a few fields; the JSON is written and sent at the
/// flush on a thread of its own at a lower CPU priority, so the job path neither encodes nor waits
/// for Redis, and telemetry yields the CPU to the jobs. Entries of one process keep their order in
/// the stream.
package final class EventPublisher: Sendable {
    /// How a publisher batches and caps.
    package struct Configuration: Sendable {
        /// `MAXLEN ~` of the machine's event stream.
        package var maxLength = 10_000
        /// Events older than this are trimmed (`XTRIM MINID ~`), and a stream (and `B:metrics`) with
        /// no write for this long expires: an idle or abandoned machine's telemetry does not stay.
        package var maxAge: Duration = .seconds(7 * 24 * 3600)
        /// How often buffered records are written.
        package var flushInterval: Duration = .milliseconds(25)
        /// Events kept while Redis is unreachable; older ones are dropped (and counted) beyond it.
        package var maxBuffered = 100_000
        /// How long a job's progress record lives without an update (a crashed worker's is not removed).
        package var progressTTLSeconds = 86_400
        package init() {}
    }

    /// An event as the job path records it: a few fields and a closure that writes the rest. It is
    /// encoded and redacted at the next flush on the publisher's own queue, so the JSON work runs
    /// beside the jobs instead of in their path.
    private struct Record: Sendable {
        let name: String
        let step: Step
        let timestamp: Int64
        let traceID: String?
        let spanID: String
        let parentSpanID: String?
        let duration: Double?
        let attributes: @Sendable (inout JSONObjectWriter) -> Void
    }

    /// What waits for the next flush: encoded events (from a flush that failed) before records.
    private struct Pending {
        /// Events already encoded, each a whole `XADD` command in RESP, back to back: a flush hands
        /// this buffer to the socket without a String per event.
        var payload: [UInt8] = []
        /// Where each event ends in `payload`.
        var ends: [Int] = []
        /// Events recorded since the last flush, oldest first (they follow `payload`).
        var records: [Record] = []
        /// job id -> progress JSON, or nil to delete it.
        var progress: [String: String?] = [:]
        /// Amounts by counter index (`Counter`).
        var counts: [Int64] = []

        var eventCount: Int { ends.count + records.count }

        var isEmpty: Bool { ends.isEmpty && records.isEmpty && progress.isEmpty && !counts.contains { $0 != 0 } }

        mutating func add(_ amount: Int64, to counter: Counter) {
            if counter.index >= counts.count { counts.append(contentsOf: repeatElement(0, count: counter.index - counts.count + 1)) }
            counts[counter.index] += amount
        }

        /// Over `cap` events, the oldest quarter of the cap goes at once (dropping one at a time
        /// would move the whole buffer for every new event), and is counted.
        mutating func trim(to cap: Int) {
            guard eventCount > cap else { return }
            let count = eventCount - cap + cap / 4
            let encoded = min(count, ends.count)
            if encoded > 0 {
                let cut = ends[encoded - 1]
                payload.removeFirst(cut)
                ends = ends[encoded...].map { $0 - cut }
            }
            records.removeFirst(count - encoded)
            add(Int64(count), to: .eventsDropped)
        }

        /// Puts an unsent batch back in front of what was recorded since.
        mutating func restore(_ batch: Pending) {
            let shift = batch.payload.count
            payload = batch.payload + payload
            ends = batch.ends + ends.map { $0 + shift }
            records = batch.records + records
            for (job, json) in batch.progress where progress[job] == nil { progress[job] = json }
            for (index, amount) in batch.counts.enumerated() where amount != 0 { add(amount, to: Counter(index: index)) }
        }
    }

    /// A `B:metrics` field, numbered once so that counting on the job path is an array update.
    package struct Counter: Sendable, Hashable {
        fileprivate let index: Int
        /// Registered first by every publisher.
        fileprivate static let eventsDropped = Counter(index: 0)
    }

    private struct State {
        var pending = Pending()
        /// A batch is on its way to Redis.
        var writing = false
        /// `run` waiting for the first record after a quiet spell (an idle process has nothing to
        /// flush, so it sleeps instead of looking 40 times a second).
        var flusher: CheckedContinuation<Void, Never>?
        var counterNames: [String] = []
        var counterIndex: [String: Int] = [:]
    }

    package let keys: MachineKeys
    package let context: EventContext
    package let redactor: Redactor
    package let configuration: Configuration
    private let redis: RedisClient
    private let state = Mutex(State())
    private let writer = FlushWriter()
    /// Where recorded events are encoded and sent: an OS thread of its own at a lower priority, so
    /// that telemetry yields the CPU to the jobs and the queue's calls when they compete.
    private let background = BackgroundThread(name: "provision-events", nice: 10)
    /// The fixed fields of each step's events, encoded once.
    private let fixed: [Int: String]
    /// `XADD B:events * event` in RESP: each event is this and its JSON (the stream is trimmed once
    /// per flush: a `MAXLEN` on every `XADD` costs Redis more and sends more bytes).
    private let xaddPrefix: [UInt8]

    package init(
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
        var prefix: [UInt8] = []
        RESP.appendCommandHeader(arguments: 5, to: &prefix)
        for argument in ["XADD", keys.events, "*", "event"] { RESP.appendBulk(argument, to: &prefix) }
        xaddPrefix = prefix
        state.withLock { state in
            state.counterNames = [MetricField.eventsDropped]
            state.counterIndex = [MetricField.eventsDropped: 0]
        }
    }

    /// Records an event (encoded, redacted and written at the next flush; same JSON as `StepEvent.json`).
    package func emit(_ event: StepEvent) {
        emit(
            name: event.name, step: event.step, timestamp: event.timestamp, traceID: event.traceID, spanID: event.spanID,
            parentSpanID: event.parentSpanID, durationMilliseconds: event.durationMilliseconds
        ) { out in
            for (key, value) in event.attributes { out.add(key, value) }
        }
    }

    /// Records an event whose further attributes `attributes` writes straight into the JSON at the
    /// next flush: the job path's way, a lock and an append.
    package func emit(
        name: String, step: Step, timestamp: Int64 = StepEvent.now(), traceID: String?, spanID: String,
        parentSpanID: String?, durationMilliseconds: Double? = nil, attributes: @escaping @Sendable (inout JSONObjectWriter) -> Void
    ) {
        let record = Record(
            name: name, step: step, timestamp: timestamp, traceID: traceID, spanID: spanID, parentSpanID: parentSpanID,
            duration: durationMilliseconds, attributes: attributes)
        changePending { pending in
            pending.records.append(record)
            pending.trim(to: configuration.maxBuffered)
        }
    }

    /// Appends `records` as XADD commands to `payload`, noting where each ends.
    private func encode(_ records: [Record], into payload: inout [UInt8], ends: inout [Int]) {
        payload.reserveCapacity(payload.count + records.count * (xaddPrefix.count + 600))
        ends.reserveCapacity(ends.count + records.count)
        for record in records {
            var out = JSONObjectWriter(capacity: 640)
            out.add(.event, record.name)
            out.add(.timestamp, record.timestamp)
            out.appendFields(fixed[record.step.number] ?? StepEvent.fixedFields(step: record.step, context: context))
            out.add(.traceID, record.traceID)
            out.add(.spanID, record.spanID)
            out.add(.parentSpanID, record.parentSpanID)
            if let duration = record.duration { out.add(.durationMilliseconds, duration) }
            record.attributes(&out)
            payload.append(contentsOf: xaddPrefix)
            RESP.appendBulk(redactor.scrub(bytes: out.finishBytes()), to: &payload)
            ends.append(payload.count)
        }
    }

    /// Records the latest progress of a running job (JSON object text); only the newest per flush is written.
    package func setProgress(job: String, json: String) {
        let scrubbed = redactor.scrub(json)
        changePending { $0.progress[job] = .some(scrubbed) }
    }

    /// Removes a job's progress record (the attempt ended).
    package func clearProgress(job: String) {
        changePending { $0.progress[job] = .some(nil) }
    }

    /// The counter for a `B:metrics` field (the same one for the same name).
    package func counter(_ field: String) -> Counter {
        state.withLock { state in
            if let index = state.counterIndex[field] { return Counter(index: index) }
            let index = state.counterNames.count
            state.counterNames.append(field)
            state.counterIndex[field] = index
            return Counter(index: index)
        }
    }

    /// Adds to a counter of `B:metrics` (coalesced per flush).
    package func count(_ field: String, by amount: Int64 = 1) {
        guard amount != 0 else { return }
        count(counter(field), by: amount)
    }

    /// Adds to a counter of `B:metrics` (coalesced per flush).
    package func count(_ counter: Counter, by amount: Int64 = 1) {
        guard amount != 0 else { return }
        changePending { $0.add(amount, to: counter) }
    }

    /// Adds to several counters at once.
    package func count(_ a: (Counter, Int64), _ b: (Counter, Int64), _ c: (Counter, Int64), _ d: (Counter, Int64)) {
        changePending { pending in
            pending.add(a.1, to: a.0)
            pending.add(b.1, to: b.0)
            pending.add(c.1, to: c.0)
            pending.add(d.1, to: d.0)
        }
    }

    /// Records still waiting to be written.
    package var bufferedEvents: Int { state.withLock { $0.pending.eventCount } }

    /// Nothing buffered and nothing being written: a worker sharing this publisher's connection may
    /// block it (an idle `BLPOP`) without holding events back.
    package var isQuiet: Bool { state.withLock { $0.pending.isEmpty && !$0.writing } }

    /// Writes everything recorded so far; returns once Redis has it (or the write failed and the
    /// events were put back for the next flush).
    package func flush() async {
        await writer.serialized { [self] in await write() }
    }

    /// Flushes `flushInterval` after the first record of each batch until the surrounding task is
    /// cancelled, then flushes once more. With nothing recorded it waits without waking.
    package func run() async {
        while !Task.isCancelled {
            await waitForRecords()
            if Task.isCancelled { break }
            try? await Task.sleep(for: configuration.flushInterval)
            await flush()
        }
        await flush()
    }

    /// A change to what waits for the next flush, waking `run` if it waits for one.
    private func changePending(_ change: (inout Pending) -> Void) {
        let flusher = state.withLock { state -> CheckedContinuation<Void, Never>? in
            change(&state.pending)
            return state.flusher.take()
        }
        flusher?.resume()
    }

    /// Returns once something waits for a flush (at once if something does), or when the task is
    /// cancelled.
    private func waitForRecords() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLock { state -> Bool in
                    if !state.pending.isEmpty || Task.isCancelled { return true }
                    state.flusher = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.flusher.take() }?.resume()
        }
    }

    private func write() async {
        let (batch, names) = state.withLock { state -> (Pending, [String]) in
            let taken = state.pending
            state.pending = Pending()
            state.writing = !taken.isEmpty
            // The next batch is likely as large: growing the array under the lock would stall
            // every job that records an event meanwhile.
            state.pending.records.reserveCapacity(taken.records.count)
            return (taken, state.counterNames)
        }
        if batch.isEmpty { return }
        defer { state.withLock { $0.writing = false } }
        let sent = await withCheckedContinuation { (continuation: CheckedContinuation<(Pending, Result<Int, RedisError>), Never>) in
            background.run { [self] in continuation.resume(returning: send(batch, counterNames: names)) }
        }
        switch sent.1 {
        case .success(let lost):
            if lost > 0 { state.withLock { $0.pending.add(Int64(lost), to: .eventsDropped) } }
        case .failure:
            // Redis is away: keep the events (now encoded) for the next flush, bounded, and merge
            // the rest back.
            state.withLock { state in
                state.pending.restore(sent.0)
                state.pending.trim(to: configuration.maxBuffered)
            }
        }
    }

    /// On the background thread: encodes the batch's records and sends everything in one round
    /// trip. Returns the batch as encoded (to keep on failure) and the events Redis refused.
    private func send(_ batch: Pending, counterNames names: [String]) -> (Pending, Result<Int, RedisError>) {
        var batch = batch
        encode(batch.records, into: &batch.payload, ends: &batch.ends)
        batch.records = []
        var counters: [(field: String, amount: Int64)] = []
        for (index, amount) in batch.counts.enumerated() where amount != 0 { counters.append((names[index], amount)) }
        counters.sort { $0.field < $1.field }

        // The events are already whole XADD commands; the trim, the progress records and the
        // counters follow as commands of their own.
        var tail: [UInt8] = []
        var tailCommands = 0
        func command(_ arguments: [String]) {
            RESP.appendCommand(arguments, to: &tail)
            tailCommands += 1
        }
        let maxAgeMs = Int64(configuration.maxAge / .milliseconds(1))
        if !batch.ends.isEmpty {
            command(["XTRIM", keys.events, "MAXLEN", "~", String(configuration.maxLength)])
            let oldest = max(0, Int64(Date().timeIntervalSince1970 * 1000) - maxAgeMs)
            command(["XTRIM", keys.events, "MINID", "~", String(oldest)])
            command(["PEXPIRE", keys.events, String(maxAgeMs)])
        }
        for (job, json) in batch.progress {
            if let json { command(["HSET", keys.progress, job, json]) } else { command(["HDEL", keys.progress, job]) }
        }
        if batch.progress.values.contains(where: { $0 != nil }) {
            command(["EXPIRE", keys.progress, String(configuration.progressTTLSeconds)])
        }
        for (field, amount) in counters { command(["HINCRBY", keys.metrics, field, String(amount)]) }
        if !counters.isEmpty { command(["PEXPIRE", keys.metrics, String(maxAgeMs)]) }
        do {
            let errors = try redis.sendBlocking(encoded: [batch.payload[...], tail[...]], commands: batch.ends.count + tailCommands, key: keys.events)
            // A refused XADD (keys of the wrong type) loses its event: count them.
            return (batch, .success(errors.filter { $0.index < batch.ends.count }.count))
        } catch {
            return (batch, .failure(error))
        }
    }

    /// Closes the publisher's connection and ends its thread (after a final `flush`).
    package func close() {
        redis.close()
        background.stop()
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
