import Foundation
import JobQueue
import Logging
import RedisClient

/// How one worker process behaves.
public struct WorkerConfiguration: Sendable {
    public var workerID: String
    /// Jobs run at once in this process.
    public var concurrency: Int
    /// On shutdown, how long running jobs may take to finish before their leases are released.
    public var drainTimeout: Duration = .seconds(30)
    /// How long an idle worker blocks on the wake list before claiming again (promotes retries).
    public var idleWaitSeconds = 1
    /// Heartbeat pace when no job is running (the worker's own liveness).
    public var idleHeartbeat: Duration = .seconds(5)
    /// Applied to every error message and result before it is sent to Redis (secrets out).
    public var redact: @Sendable (String) -> String = { $0 }

    public init(workerID: String, concurrency: Int) {
        self.workerID = workerID
        self.concurrency = max(1, concurrency)
    }

    /// `host-pid-random`, unique across restarts and machines.
    public static func makeWorkerID() -> String {
        let host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "host"
        let random = String(UInt32.random(in: 0...UInt32.max), radix: 36)
        return "\(host)-\(getpid())-\(random)"
    }
}

/// One worker process: claims the machine's jobs into at most `concurrency` slots, keeps their
/// leases alive, reports each outcome, and drains on shutdown.
public final class Worker: Sendable {
    public let configuration: WorkerConfiguration
    private let queue: JobQueue
    private let beats: JobQueue
    private let waker: RedisClient
    private let registry: ExecutorRegistry
    private let logger: Logger
    private let observers: [any WorkerObserver]
    private let active = ActiveJobs()
    private let completions: CompletionBatcher

    /// Each role gets its own connection: a blocking wait or a slow reply on one never delays
    /// heartbeats on another.
    public init(
        redis: RedisConfiguration, machine: String, prefix: String = "provision", registry: ExecutorRegistry,
        configuration: WorkerConfiguration, logger: Logger, observers: [any WorkerObserver] = []
    ) throws(JobQueueError) {
        self.configuration = configuration
        self.queue = try JobQueue(redis: RedisClient(configuration: redis, label: "commands"), machine: machine, prefix: prefix)
        self.beats = try JobQueue(redis: RedisClient(configuration: redis, label: "heartbeats"), machine: machine, prefix: prefix)
        self.completions = CompletionBatcher(
            queue: try JobQueue(redis: RedisClient(configuration: redis, label: "completions"), machine: machine, prefix: prefix))
        var blocking = redis
        blocking.commandTimeout = max(redis.commandTimeout, .seconds(configuration.idleWaitSeconds + 5))
        self.waker = RedisClient(configuration: blocking, label: "wake")
        self.registry = registry
        self.logger = logger
        self.observers = observers
    }

    /// The most jobs that ran at once in this process.
    public var peakConcurrency: Int { get async { await active.peak } }

    /// Runs until `shutdown` is requested, then drains and returns.
    public func run(until shutdown: Shutdown) async throws(JobQueueError) {
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
        let wakeOnStop = Task { [active] in
            await shutdown.wait()
            await active.wakeAll()
        }
        await claimLoop(until: shutdown)
        await drain()
        heartbeats.cancel()
        wakeOnStop.cancel()
        _ = await heartbeats.value
        for observer in observers { await observer.workerStopping(workerID: configuration.workerID) }
        try? await queue.unregister(worker: configuration.workerID)
        [queue.redis, beats.redis, waker].forEach { $0.close() }
        completions.close()
        logger.info("worker stopped", metadata: ["worker": "\(configuration.workerID)"])
    }

    private func claimLoop(until shutdown: Shutdown) async {
        var failures = 0
        while !shutdown.isRequested {
            await active.waitForSlot(capacity: configuration.concurrency)
            if shutdown.isRequested { break }
            let free = configuration.concurrency - (await active.count)
            if free <= 0 { continue }
            do {
                let (jobs, flip) = try await queue.claim(worker: configuration.workerID, count: free)
                failures = 0
                if let flip { await flipped(flip, job: nil, logger) }
                if jobs.isEmpty {
                    // Sleep until a script pushes a wake marker, or a second passes (due retries).
                    _ = try await waker.send("BLPOP", queue.keys.wake, String(configuration.idleWaitSeconds))
                    continue
                }
                for job in jobs {
                    await active.launch(job) { [self] in await execute(job) }
                }
            } catch {
                failures += 1
                logger.error("claiming failed", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: .milliseconds(min(5000, 100 * (1 << min(failures, 6)))))
            }
        }
    }

    private func execute(_ job: ClaimedJob) async {
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
        let fate = await active.fate(of: job.lease)
        if fate.overdue { outcome = .failure(TimeoutError()) }
        if fate.lost {
            log.warning("lease lost; the result of this attempt is dropped")
            return
        }
        if case .failure(let error) = outcome, !(error is TimeoutError), Task.isCancelled {
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
                let sinceEnd = ContinuousClock.now - ended
                for observer in observers {
                    observer.jobFailed(job, failure: failure, outcome: status, duration: ended - started, sinceEnd: sinceEnd)
                }
                log.warning("job failed", metadata: ["error_type": "\(failure.type)", "error": "\(failure.message)", "outcome": "\(status)"])
                if let flip { await flipped(flip, job: job, log.logger) }
            }
        } catch {
            if !final, case .redis(let redis) = error as? JobQueueError, redis.isRetryable {
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
    private func heartbeatLoop(until shutdown: Shutdown) async {
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
                let lost = try await beats.heartbeat(worker: configuration.workerID, leases: leases)
                for lease in lost where await active.loseLease(lease) {
                    logger.warning("lease lost", metadata: ["job": "\(lease.job)", "plan": "\(lease.plan)"])
                }
            } catch {
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
