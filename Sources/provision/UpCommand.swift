import Aggregator
import ArgumentParser
import Foundation
import JobQueue
import Logging
import RedisClient
import RedisServerProcess
import Scheduler
import Synchronization
import UnixSignals
import Telemetry

struct UpCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "up",
        abstract: "Bring a machine up: enqueue a plan, run the workers, and wait for ready. Without --redis a private redis-server is started.")

    @OptionGroup var queue: QueueOptions
    @OptionGroup var pool: PoolOptions
    @OptionGroup var telemetry: TelemetryOptions
    @OptionGroup var health: HealthOptions
    @OptionGroup var services: ServicesOptions

    @OptionGroup var source: PlanSource

    @Option(help: "Where the private redis-server keeps its data (env PROVISION_STATE_DIR).")
    var stateDir: String?

    @Option(help: "Give up after this many seconds.")
    var timeout: Double = 24 * 3600

    @Flag(help: "Keep the workers running after the machine is ready, until SIGTERM.")
    var serve = false

    func validate() throws {
        guard timeout.isFinite, timeout >= 0, timeout <= 366 * 86400 else {
            throw ValidationError("--timeout must be between 0 and 31622400 seconds.")
        }
    }

    func run() async throws {
        try await reportingErrors {
            let planText = try await source.planJSON(machine: (try? queue.machineID) ?? "local")
            try await bringUp(
                queue: queue, pool: pool, telemetry: telemetry, health: health, planJSON: planText, stateDir: stateDir,
                timeout: timeout, serve: serve, servicesOptions: services)
        }
    }
}

/// The main job: optional private Redis, enqueue, worker pool, progress until the machine settles.
func bringUp(
    queue: QueueOptions, pool: PoolOptions, telemetry: TelemetryOptions, health: HealthOptions, planJSON: String?,
    stateDir: String?, timeout: Double, serve: Bool, healthRequired: Bool = true, servicesOptions: ServicesOptions? = nil
) async throws {
    let logger = queue.bootstrapLogging(label: "provision.up")
    let machine = (try? queue.machineID) ?? "local"

    // Signals are caught before anything is started, so a Ctrl-C at any point ends in the ordered
    // stop below: workers drain, then the private Redis stops (and is waited for), then the summary.
    let signals = await SignalWatch.start()
    defer { signals.cancel() }

    var privateRedis: LocalRedisServer?
    let url: String
    if let given = try? queue.redisURL {
        url = given
    } else {
        let directory = PrivateRedis(stateDir: stateDir).directory
        // A unix socket under the state directory: no TCP port, nothing reachable from outside.
        let server = LocalRedisServer(directory: directory, listen: .socket(path: directory.appendingPathComponent("redis.sock").path))
        try await server.start()
        privateRedis = server
        url = server.url
        say("started a private redis-server (data in \(directory.path))")
    }
    defer { privateRedis?.stop() }
    if let signal = signals.received {
        privateRedis?.stop()
        say("interrupted by \(signalName(signal)) before anything ran")
        throw ExitCode(128 + signal)
    }

    let jobQueue = try JobQueue(redis: try RedisClient(url: url, label: "up"), machine: machine, prefix: queue.keyPrefix)
    let clock = ContinuousClock()
    let started = clock.now
    if let planJSON {
        let enqueued = try await jobQueue.enqueue(planJSON: planJSON, replace: true)
        say("enqueued \(enqueued.jobs) jobs for machine \(machine) (generation \(enqueued.generation))")
    }

    let supervisor = pool.supervisor(
        redisURL: url, machine: machine, prefix: queue.keyPrefix, logLevel: queue.logLevel, events: telemetry.events,
        logger: logger)
    // One group for the machine's services and the workers; `up` shuts it down itself (below), so
    // that the private Redis stops after it and the summary comes last.
    let services = try await MachineServices.start(
        redisURL: url, keys: jobQueue.keys, telemetry: telemetry, health: health, workersConfig: pool.workersConfig,
        logger: logger, services: servicesOptions, workspace: pool.executors.resolvedWorkspace, stateDir: stateDir,
        healthRequired: healthRequired, workers: supervisor)
    if let port = services.healthPort { say("health server on http://\(health.healthHost):\(port)/health") }
    say("running \(pool.processes) worker processes × \(pool.concurrency) slots")

    // A Redis that stays unreachable beyond the client's reconnect window ends the wait; the stop
    // below still runs in order, and the error is reported after it.
    var lost: (any Error)?
    var status = MachineStatus(machineID: machine, hash: [:], reasons: [])
    do { status = try await jobQueue.status() } catch { lost = error }
    var lastLine = ""
    let deadline = started + .milliseconds(Int(timeout * 1000))
    while lost == nil && signals.received == nil && (planJSON == nil || !(status.isSettled || status.state == .failed)) && clock.now < deadline {
        try? await Task.sleep(for: .milliseconds(planJSON == nil ? 1000 : 200))
        do { status = try await jobQueue.status() } catch { lost = error }
        let line = "  \(status.state.rawValue): \(status.count("succeeded"))/\(status.count("total")) succeeded · \(status.count("active")) active · \(status.count("failed") + status.count("dead")) failed"
        if line != lastLine && status.planID != nil {
            say(line)
            lastLine = line
        }
    }
    let elapsed = clock.now - started
    let monitor = MachineMonitor(redis: jobQueue.redis, keys: jobQueue.keys, stallAfter: telemetry.stallDuration)
    func instanceLines() -> [String] {
        (services.supervisor?.statuses ?? []).map { status in
            "  \(status.instance.name): \(status.state.rawValue) on http://\(status.instance.host):\(status.instance.port) (pid \(status.pid.map(String.init) ?? "-"), log \(status.log))"
        }
    }
    var summaryShown = false
    if lost == nil && serve && status.state == .ready && signals.received == nil {
        if let snapshot = try? await monitor.snapshot() { say(StatusText.summary(snapshot)) }
        for line in instanceLines() { say(line) }
        summaryShown = true
        say("ready; serving until SIGTERM")
        await signals.wait()
    }
    let signal = signals.received
    if let signal, !summaryShown { say("\(signalName(signal)) received: letting the workers drain") }
    let instances = summaryShown ? [] : instanceLines()
    // The workers drain first, then ComfyUI, the health server, the announcer and the publisher stop.
    var stopped: Result<Void, any Error> = .success(())
    do { try await services.stop() } catch { stopped = .failure(error) }
    let snapshot = lost == nil && !summaryShown ? try? await monitor.snapshot() : nil
    jobQueue.redis.close()
    if let server = privateRedis {
        server.stop()
        privateRedis = nil
        say("stopped the private redis-server")
        let stateRoot = server.directory.deletingLastPathComponent().path
        say("the machine's state stays in \(server.directory.path): `provision status --state-dir \(stateRoot) --offline --jobs` reads it")
    }
    if let snapshot { say(StatusText.summary(snapshot)) }
    for line in instances { say(line) }
    say("elapsed: \(elapsed.formatted(.units(allowed: [.seconds], fractionalPart: .show(length: 2))))")
    if let lost { throw lost }
    try stopped.get()
    switch status.state {
    case .ready: return
    case .failed, .cancelled: throw ExitCode(1)
    default:
        // Without a plan `up` only runs workers: stopping them is its normal end, as for `worker`.
        if planJSON == nil { return }
        if let signal {
            say("interrupted by \(signalName(signal)) before the machine was ready")
            throw ExitCode(128 + signal)
        }
        throw ExitCode(2)
    }
}

/// `SIGINT`, `SIGTERM`, or the number.
func signalName(_ number: Int32) -> String {
    switch number {
    case SIGINT: return "SIGINT"
    case SIGTERM: return "SIGTERM"
    default: return "signal \(number)"
    }
}

/// The first SIGTERM or SIGINT this process received, trapped from `start()` on (so a Ctrl-C at any
/// point of `up` ends in its ordered stop, and its exit code names the signal).
final class SignalWatch: Sendable {
    private let first = Mutex<Int32?>(nil)
    private let task = Mutex<Task<Void, Never>?>(nil)

    private init() {}

    static func start() async -> SignalWatch {
        let watch = SignalWatch()
        let signals = await UnixSignalsSequence(trapping: .sigterm, .sigint)
        watch.task.withLock {
            $0 = Task {
                for await signal in signals {
                    watch.first.withLock { if $0 == nil { $0 = signal.rawValue } }
                }
            }
        }
        return watch
    }

    var received: Int32? { first.withLock { $0 } }

    /// Returns once a signal was received (or the task is cancelled).
    func wait() async {
        while received == nil && !Task.isCancelled { try? await Task.sleep(for: .milliseconds(100)) }
    }

    func cancel() { task.withLock { $0?.cancel() } }
}
