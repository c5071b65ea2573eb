import Foundation
import JobQueue
import Logging
import RedisClient
import ServiceLifecycle
import Synchronization

/// How one worker process behaves.
package struct WorkerConfiguration: Sendable {
    package var workerID: String
    /// Jobs run at once in this process.
    package var concurrency: Int
    /// On shutdown, how long running jobs may take to finish before their leases are released.
    package var drainTimeout: Duration = .seconds(30)
    /// The longest single `BLPOP` on the wake list of an idle worker; it claims again only on a
    /// marker or when the last claim said upkeep (a retry, a lease deadline) is due.
    package var idleWaitSeconds = 5
    /// Heartbeat pace when no job is running (the worker's own liveness): with two processes an idle
    /// machine makes one script call every 7.5 s, and stays well within the 30 s stall judgement.
    package var idleHeartbeat: Duration = .seconds(15)
    /// Applied to every error message and result before it is sent to Redis (secrets out).
    package var redact: @Sendable (String) -> String = { $0 }
    /// Whether the others sharing the worker's connection (its event publisher) have nothing to
    /// send, so that an idle `BLPOP` would not hold them back.
    package var connectionIsQuiet: @Sendable () -> Bool = { true }

    package init(workerID: String, concurrency: Int) {
        self.workerID = workerID
        self.concurrency = max(1, concurrency)
    }

    /// `host-pid-random`, unique across restarts and machines.
    package static func makeWorkerID() -> String {
        let host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "host"
        let random = String(UInt32.random(in: 0...UInt32.max), radix: 36)
        return "\(host)-\(getpid())-\(random)"
    }
}

/// One worker process: claims the machine's jobs into at most `concurrency` slots, keeps their
/// leases alive, reports each outcome, and drains when its `ServiceGroup` shuts down gracefully.
package final class Worker: Service {
    package let configuration: WorkerConfiguration
    private let queue: JobQueue
    private let ownsClient: Bool
    private let registry: ExecutorRegistry
    private let logger: Logger
    private let observers: [any WorkerObserver]
    private let active = ActiveJobs()
    /// Retries this process scheduled: a wait whose upkeep time was computed before one of them
    /// must claim again to learn when the retry is due.
    private let retriesScheduled = Atomic<Int>(0)
    /// Jobs between claim and the end of their report (announcing a flip included). A slot is
    /// handed over before its job's report ends, so the slots alone cannot say that the connection
    /// is free for a blocking wait.
    private let executing = Atomic<Int>(0)
    private let completions: CompletionBatcher

    /// The process's one connection for claims, heartbeats, completions and the idle wait: a fleet
    /// of thousands of machines must fit Redis' `maxclients`. The wait blocks it only while no job
    /// runs, so it never delays a heartbeat that holds a lease.
    package convenience init(
        redis: RedisConfiguration, machine: String, prefix: String = "provision", registry: ExecutorRegistry,
        configuration: WorkerConfiguration, logger: Logger, observers: [any WorkerObserver] = []
    ) throws(JobQueueError) {
        try self.init(
            client: RedisClient(configuration: Self.connection(redis, configuration), label: "worker"), machine: machine,
            prefix: prefix, registry: registry, configuration: configuration, logger: logger, observers: observers,
            ownsClient: true)
    }

    /// A worker on a connection the caller shares with the process's events and announcer (made
    /// with `connection(_:_:)`, whose command timeout covers the idle wait).
    package convenience init(
        client: RedisClient, machine: String, prefix: String = "provision", registry: ExecutorRegistry,
        configuration: WorkerConfiguration, logger: Logger, observers: [any WorkerObserver] = []
    ) throws(JobQueueError) {
        try self.init(
            client: client, machine: machine, prefix: prefix, registry: registry, configuration: configuration,
            logger: logger, observers: observers, ownsClient: false)
    }

    private init(
        client: RedisClient, machine: String, prefix: String, registry: ExecutorRegistry,
        configuration: WorkerConfiguration, logger: Logger, observers: [any WorkerObserver], ownsClient: Bool
    ) throws(JobQueueError) {
        self.configuration = configuration
        self.queue = try JobQueue(redis: client, machine: machine, prefix: prefix)
        self.ownsClient = ownsClient
        self.completions = CompletionBatcher(queue: queue)
        self.registry = registry
        self.logger = logger
        self.observers = observers
    }

    /// `redis` with a command timeout that outlasts the idle `BLPOP`.
    package static func connection(_ redis: RedisConfiguration, _ configuration: WorkerConfiguration) -> RedisConfiguration {
        var blocking = redis
        blocking.commandTimeout = max(redis.commandTimeout, .seconds(configuration.idleWaitSeconds + 5))
        return blocking
    }

    /// The most jobs that ran at once in this process.
    package var peakConcurrency: Int { get async { await active.peak } }

    /// Runs until the surrounding `ServiceGroup` shuts down gracefully, then drains and returns. A
    /// cancelled task stops it too, without the Redis calls of a drain (they are cancelled).
    package func run() async throws {
        let stop = StopLatch()
        try await withTaskCancellationHandler {
            try await withGracefulShutdownHandler {
                try await run(until: stop)
            } onGracefulShutdown: {
                stop.request()
            }
        } onCancel: {
            stop.request()
        }
    }

    private func run(until shutdown: StopLatch) async throws(JobQueueError) {
        try await queue.register(worker: configuration.workerID, infoJSON: registrationJSON())
        logger.info("worker registered", metadata: ["worker": "\(configuration.workerID)", "concurrency": "\(configuration.concurrency)"])
        for observer in observers {
            await observer.workerRegistered(workerID: configuration.workerID, concurrency: configuration.concurrency, kinds: registry.kinds)
        }
        await completions.setRefill(
            CompletionBatcher.Refill(
                workerID: configuration.workerID, wanted: { !shutdown.isRequested },
                handOver: { [self] retiring, claimed, flip in
                    if let flip { await flipped(flip, job: nil, logger) }
                    await active.handOver(retiring: retiring, to: claimed) { job in await self.execute(job) }
                },
                claimFailed: { [logger] error in logger.error("claiming failed", metadata: ["error": "\(error)"]) }))
        let heartbeats = Task { await heartbeatLoop(until: shutdown) }
        let wakeOnStop = Task { [active, queue, logger] in
            await shutdown.wait()
            await active.wakeAll()
            await Self.pushWakeMarker(queue: queue, logger: logger)
        }
        await claimLoop(until: shutdown)
        await drain()
        heartbeats.cancel()
        wakeOnStop.cancel()
        _ = await heartbeats.value
        for observer in observers { await observer.workerStopping(workerID: configuration.workerID) }
        try? await queue.unregister(worker: configuration.workerID)
        if ownsClient { queue.redis.close() }
        logger.info("worker stopped", metadata: ["worker": "\(configuration.workerID)"])
    }

    private func claimLoop(until shutdown: StopLatch) async {
        var failures = 0
        while !shutdown.isRequested {
            await active.waitForSlot(capacity: configuration.concurrency)
            if shutdown.isRequested { break }
            let free = configuration.concurrency - (await active.count)
            if free <= 0 { continue }
            do {
                let claimed = try await queue.claimWithUpkeep(worker: configuration.workerID, count: free)
                failures = 0
                if let flip = claimed.flip { await flipped(flip, job: nil, logger) }
                if claimed.jobs.isEmpty {
                    try await waitForWork(upkeepIn: claimed.nextUpkeepMilliseconds, until: shutdown)
                    continue
                }
                for job in claimed.jobs {
                    await active.launch(job) { [self] in await execute(job) }
                }
            } catch {
                failures += 1
                logger.error("claiming failed", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: .milliseconds(min(5000, 100 * (1 << min(failures, 6)))))
            }
        }
    }

    /// Waits until a claim may find work: a wake marker (a script made jobs ready), the upkeep the
    /// last claim announced (a retry due, a lease to take back), or shutdown. With no job running or
    /// reporting it blocks in `BLPOP` (no script call while idle); otherwise it looks at the wake list
    /// without blocking every 250 ms, so heartbeats, completions and a flip's announcement on the
    /// shared connection never wait behind the blocking call.
    private func waitForWork(upkeepIn: Int?, until shutdown: StopLatch) async throws(RedisError) {
        let clock = ContinuousClock()
        let due = upkeepIn.map { clock.now + .milliseconds($0) }
        let retries = retriesScheduled.load(ordering: .relaxed)
        while !shutdown.isRequested {
            if retriesScheduled.load(ordering: .relaxed) != retries { return }
            var wait = Duration.seconds(configuration.idleWaitSeconds)
            if let due {
                if clock.now >= due { return }
                wait = min(wait, due - clock.now)
            }
            if executing.load(ordering: .relaxed) == 0, configuration.connectionIsQuiet() {
                let seconds = max(0.01, Double(wait / .milliseconds(1)) / 1000)
                let reply = try await queue.redis.send("BLPOP", queue.keys.wake, String(format: "%.3f", seconds))
                if reply.array != nil { return }
            } else {
                if try await queue.redis.send("LPOP", queue.keys.wake).string != nil { return }
                // Checked locally every 25 ms: once the last job ends, the blocking wait takes over at
                // once (a plan enqueued then starts in milliseconds, not at the next look).
                let until = clock.now + min(wait, .milliseconds(250))
                while clock.now < until, executing.load(ordering: .relaxed) > 0 || !configuration.connectionIsQuiet(),
                    !shutdown.isRequested
                {
                    try? await Task.sleep(for: .milliseconds(25))
                }
                if await active.count < configuration.concurrency { continue }
                return
            }
        }
    }

    /// On shutdown, a marker ends the `BLPOP` of an idle process on this machine at once (another
    /// process may take it: each one stopping pushes its own). A connection of its own, briefly,
    /// because the worker's is the one blocked.
    private static func pushWakeMarker(queue: JobQueue, logger: Logger) async {
        var configuration = queue.redis.configuration
        configuration.reconnectWindow = .seconds(1)
        let client = RedisClient(configuration: configuration, label: "wake-on-stop")
        defer { client.close() }
        do {
            _ = try await client.pipeline([["LPUSH", queue.keys.wake, "1"], ["EXPIRE", queue.keys.wake, "60"]])
        } catch {
            logger.debug("could not push a wake marker on shutdown", metadata: ["error": "\(error)"])
        }
    }

    private func execute(_ job: ClaimedJob) async {
        executing.add(1, ordering: .relaxed)
        defer { executing.subtract(1, ordering: .relaxed) }
        let log = JobLog(base: logger, job: job)
        let started = ContinuousClock.now
        for observer in observers { observer.jobStarted(job, workerID: configuration.workerID) }
        guard let executor = registry[job.kind] else {
            await report(job, .failure(JobFailure(type: "unknown_kind", message: "this worker has no executor for job kind '\(job.kind)'", retryable: false)), started, log)
            return
        }
        // The adapter between the queue and the executors: the payload decoded once, no lease handed on.
        let prepared: PreparedJob
        do throws(JobFailure) {
            prepared = try executor.prepare(
                id: job.id, plan: job.plan, generation: job.generation, attempt: job.attempt, maxAttempts: job.maxAttempts, payload: job.payload)
        } catch {
            await report(job, .failure(error), started, log)
            return
        }
        log.debug("job started", metadata: ["attempt": "\(job.attempt)/\(job.maxAttempts)"])
        let observers = self.observers
        let context = JobContext(workerID: configuration.workerID, makeLogger: { log.logger }) { progress in
            for observer in observers { observer.jobProgress(job, progress) }
        }
        var outcome: Result<String, any Error>
        do {
            outcome = .success(try await prepared.run(context: context))
        } catch {
            outcome = .failure(error)
        }
        // A drain or a timeout cancels the job's task; its report must still reach Redis.
        let cancelled = Task.isCancelled
        await withoutCancellation { [self, outcome] in await settle(job, outcome, cancelled: cancelled, started: started, log: log) }
    }

    /// Hands the job back (cancelled by the drain) or reports its outcome.
    private func settle(_ job: ClaimedJob, _ outcome: Result<String, any Error>, cancelled: Bool, started: ContinuousClock.Instant, log: JobLog) async {
        var outcome = outcome
        let fate = await active.fate(of: job.lease)
        if fate.overdue { outcome = .failure(TimeoutError()) }
        if fate.lost {
            log.warning("lease lost; the result of this attempt is dropped")
            return
        }
        if case .failure(let error) = outcome, !(error is TimeoutError), cancelled {
            // Cancelled by the drain: hand the job back for another worker, attempt not counted.
            let released = (try? await queue.release(job.lease)) ?? false
            log.notice("job released during shutdown", metadata: ["released": "\(released)"])
            return
        }
        // Redis away for longer than the client's reconnect window (or answering LOADING all that
        // time): the outcome is offered again while the lease may still hold, so a finished job is
        // not run a second time only because its report was late.
        let leaseEnd = ContinuousClock.now + .milliseconds(job.leaseMilliseconds)
        while await !report(job, outcome, started, log, final: ContinuousClock.now >= leaseEnd) {
            try? await Task.sleep(for: .seconds(1))
        }
    }

    /// Reports the outcome; false when Redis could not be reached and `final` is not set (try again).
    @discardableResult
    private func report(_ job: ClaimedJob, _ outcome: Result<String, any Error>, _ started: ContinuousClock.Instant, _ log: JobLog, final: Bool = true) async -> Bool {
        let ended = ContinuousClock.now
        var outcome = outcome
        // queue.lua refuses a result over 1 MiB, and would refuse the whole batch carrying it: such a
        // result is this attempt's failure, and no retry makes it smaller.
        if case .success(let result) = outcome, result.utf8.count > Self.maxResultBytes {
            outcome = .failure(
                JobFailure(
                    type: "result_too_large",
                    message: "job '\(job.id)' returned a result of \(result.utf8.count) bytes, more than the \(Self.maxResultBytes) the queue keeps",
                    retryable: false))
        }
        do {
            switch outcome {
            case .success(let result):
                let (status, flip) = try await completions.complete(job.lease, resultJSON: configuration.redact(result))
                let sinceEnd = ContinuousClock.now - ended
                for observer in observers {
                    observer.jobSucceeded(job, outcome: status, duration: ended - started, sinceEnd: sinceEnd)
                }
                log.debug("job succeeded", metadata: ["outcome": "\(status.rawValue)"])
                if status == .stale { log.warning("completion refused: the lease is stale") }
                if let flip { await flipped(flip, job: job, log.logger) }
            case .failure(let error):
                var failure = Self.classify(error, job: job)
                failure.message = configuration.redact(failure.message)
                failure.type = configuration.redact(failure.type)
                let (status, flip) = try await queue.fail(
                    job.lease, errorType: failure.type, message: failure.message, retryable: failure.retryable)
                if case .retry = status { retriesScheduled.add(1, ordering: .relaxed) }
                let sinceEnd = ContinuousClock.now - ended
                for observer in observers {
                    observer.jobFailed(job, failure: failure, outcome: status, duration: ended - started, sinceEnd: sinceEnd)
                }
                log.warning("job failed", metadata: ["error_type": "\(failure.type)", "error": "\(failure.message)", "outcome": "\(status)"])
                if let flip { await flipped(flip, job: job, log.logger) }
            }
        } catch {
            if !final, case .redis(let redis) = error, redis.isRetryable {
                log.warning("could not report the job's outcome yet; trying again while its lease holds", metadata: ["error": "\(error)"])
                return false
            }
            // The lease will expire and another worker will run the job again.
            log.error("could not report the job's outcome", metadata: ["error": "\(error)"])
        }
        return true
    }

    /// This worker's call flipped the machine: tell the observers (the announcement is theirs).
    private func flipped(_ flip: MachineFlip, job: ClaimedJob?, _ log: Logger) async {
        log.notice("machine flipped", metadata: ["state": "\(flip.rawValue)"])
        for observer in observers { await observer.machineFlipped(flip, job: job) }
    }

    /// The largest result `queue.lua` stores (protocols/redis.md §11).
    static let maxResultBytes = 1_048_576

    static func classify(_ error: any Error, job: ClaimedJob) -> JobFailure {
        if let failure = error as? JobFailure { return failure }
        if error is TimeoutError {
            return JobFailure(type: "timeout", message: "job '\(job.id)' ran longer than its timeout of \(job.timeoutMilliseconds) ms", retryable: true)
        }
        return JobFailure(type: "error", message: "\(error)", retryable: true)
    }

    /// Renews leases a third of the way into the shortest one held (checked every 100 ms, so a
    /// job claimed mid-pause is covered in time), and beats at `idleHeartbeat` otherwise. The same
    /// tick stops jobs that ran past their timeout.
    private func heartbeatLoop(until shutdown: StopLatch) async {
        let clock = ContinuousClock()
        var lastBeat = clock.now
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(100))
            if Task.isCancelled { break }
            await active.cancelOverdue(now: clock.now)
            let shortest = await active.shortestLeaseMilliseconds
            let pace = shortest.map { Duration.milliseconds(max(100, $0 / 3)) } ?? configuration.idleHeartbeat
            guard clock.now - lastBeat >= min(pace, configuration.idleHeartbeat) else { continue }
            lastBeat = clock.now
            let leases = await active.leases
            do {
                let lost = try await queue.heartbeat(worker: configuration.workerID, leases: leases)
                for lease in lost where await active.loseLease(lease) {
                    logger.warning("lease lost", metadata: ["job": "\(lease.job)", "plan": "\(lease.plan)"])
                }
            } catch {
                if Task.isCancelled { break }
                logger.error("heartbeat failed", metadata: ["error": "\(error)"])
            }
        }
    }

    private func drain() async {
        let running = await active.count
        if running > 0 {
            logger.notice("draining", metadata: ["running": "\(running)", "timeout": "\(configuration.drainTimeout)"])
        }
        let finished = Task { [active] in await active.waitUntilEmpty() }
        let deadline = Task { [active, configuration] in
            try await Task.sleep(for: configuration.drainTimeout)
            await active.cancelAll()
        }
        await finished.value
        deadline.cancel()
    }

    private func registrationJSON() -> String {
        let info: [String: Any] = [
            "id": configuration.workerID, "host": ProcessInfo.processInfo.hostName, "pid": Int(getpid()),
            "capabilities": registry.kinds, "concurrency": configuration.concurrency,
            "started_at": Int(Date().timeIntervalSince1970 * 1000),
        ]
        let data = (try? JSONSerialization.data(withJSONObject: info, options: [.sortedKeys])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}

struct TimeoutError: Error {}

/// Set once when the worker should stop claiming (its group shuts down), awaited by the loops that
/// wind down then.
final class StopLatch: Sendable {
    private let state = Mutex<(requested: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    var isRequested: Bool { state.withLock { $0.requested } }

    func request() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            guard !state.requested else { return [] }
            state.requested = true
            defer { state.waiters = [] }
            return state.waiters
        }
        waiters.forEach { $0.resume() }
    }

    /// Returns once a stop was requested.
    func wait() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLock { state -> Bool in
                if state.requested { return true }
                state.waiters.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }
}

/// A job's log: the job's metadata is put on a logger only for a message that is written, because
/// setting metadata on a `Logger` copies its handler, which thousands of jobs a second notice.
struct JobLog: Sendable {
    let base: Logger
    let job: ClaimedJob

    var logger: Logger { base.with(job) }

    func log(_ level: Logger.Level, _ message: @autoclosure () -> Logger.Message, metadata: @autoclosure () -> Logger.Metadata? = nil) {
        guard base.logLevel <= level else { return }
        logger.log(level: level, message(), metadata: metadata())
    }

    func debug(_ message: @autoclosure () -> Logger.Message, metadata: @autoclosure () -> Logger.Metadata? = nil) {
        log(.debug, message(), metadata: metadata())
    }

    func notice(_ message: @autoclosure () -> Logger.Message, metadata: @autoclosure () -> Logger.Metadata? = nil) {
        log(.notice, message(), metadata: metadata())
    }

    func warning(_ message: @autoclosure () -> Logger.Message, metadata: @autoclosure () -> Logger.Metadata? = nil) {
        log(.warning, message(), metadata: metadata())
    }

    func error(_ message: @autoclosure () -> Logger.Message, metadata: @autoclosure () -> Logger.Metadata? = nil) {
        log(.error, message(), metadata: metadata())
    }
}

extension Logger {
    func with(_ job: ClaimedJob) -> Logger {
        var copy = self
        copy[metadataKey: "job"] = "\(job.id)"
        copy[metadataKey: "kind"] = "\(job.kind)"
        copy[metadataKey: "plan"] = "\(job.plan)"
        return copy
    }
}
