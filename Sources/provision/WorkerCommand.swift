import ArgumentParser
import Foundation
import JobQueue
import Logging
import RedisClient
import Scheduler

/// Options of a worker pool.
struct PoolOptions: ParsableArguments {
    @Option(help: "Worker processes to run (each restarted if it dies).")
    var processes = 2

    @Option(help: "Jobs each worker process runs at once.")
    var concurrency = 4

    @Option(help: "Seconds running jobs may take to finish on shutdown before they are handed back.")
    var drainTimeout = 30

    func validate() throws {
        guard (1...64).contains(processes) else { throw ValidationError("--processes must be between 1 and 64.") }
        guard (1...1024).contains(concurrency) else { throw ValidationError("--concurrency must be between 1 and 1024.") }
        guard (0...3600).contains(drainTimeout) else { throw ValidationError("--drain-timeout must be between 0 and 3600 seconds.") }
    }

    /// A supervisor that runs `processes` copies of `provision worker-process`. The Redis URL goes
    /// to the children through the environment, so a password never shows in `ps`.
    func supervisor(
        redisURL: String, machine: String, prefix: String, logLevel: String?, events: Bool = true, logger: Logger
    ) -> Supervisor {
        var environment = ProcessInfo.processInfo.environment
        environment["PROVISION_REDIS_URL"] = redisURL
        environment["PROVISION_WORKERS_CONFIG"] = workersConfig
        var arguments = [
            "worker-process", "--machine", machine, "--prefix", prefix, "--concurrency", String(concurrency),
            "--drain-timeout", String(drainTimeout), "--supervisor-pid", String(getpid()),
        ]
        if let logLevel { arguments += ["--log-level", logLevel] }
        if !events { arguments.append("--no-events") }
        var configuration = Supervisor.Configuration(
            executable: currentExecutable(), arguments: arguments, environment: environment, processes: processes)
        configuration.stopTimeout = .seconds(drainTimeout + 15)
        // The children log where the supervisor logs: /proc/self/fd/2, opened in the child at spawn
        // time, is the standard error it inherited from this process.
        configuration.outputPath = "/proc/self/fd/2"
        return Supervisor(configuration: configuration, logger: logger)
    }

    /// `workers_config` of the events: `WORKERS` when set (e.g. `comfyui:2`), else the pool's shape.
    var workersConfig: String {
        let given = ProcessInfo.processInfo.environment["WORKERS"] ?? ""
        return given.isEmpty ? "processes=\(processes),concurrency=\(concurrency)" : given
    }
}

struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Run a pool of worker processes for one machine, with its health server; SIGTERM drains them and exits 0.")

    @OptionGroup var queue: QueueOptions
    @OptionGroup var pool: PoolOptions
    @OptionGroup var telemetry: TelemetryOptions
    @OptionGroup var health: HealthOptions

    func run() async throws {
        try await reportingErrors {
            let logger = queue.bootstrapLogging(label: "provision.supervisor")
            let url = try queue.redisURL
            let machine = try queue.machineID
            // Fail fast on a bad URL or machine id rather than in every child.
            _ = try RedisConfiguration(url: url)
            let keys = try MachineKeys(prefix: queue.keyPrefix, machine: machine)
            let shutdown = Shutdown()
            let signals = shutdown.onSignals()
            defer { signals.forEach { $0.cancel() } }
            let services = try await MachineServices.start(
                redisURL: url, keys: keys, telemetry: telemetry, health: health, workersConfig: pool.workersConfig,
                logger: logger)
            do {
                try await pool.supervisor(
                    redisURL: url, machine: machine, prefix: queue.keyPrefix, logLevel: queue.logLevel,
                    events: telemetry.events, logger: logger
                ).run(until: shutdown)
            } catch {
                await services.stop()
                throw error
            }
            await services.stop()
        }
    }
}

struct WorkerProcessCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker-process",
        abstract: "Run one worker process (started by `provision worker`).",
        shouldDisplay: false)

    @OptionGroup var queue: QueueOptions

    @Option(help: "Jobs run at once.")
    var concurrency = 4

    @Option(help: "Seconds running jobs may take to finish on shutdown.")
    var drainTimeout = 30

    @Option(help: "Exit when this process is no longer the parent.")
    var supervisorPid: Int32?

    @Flag(inversion: .prefixedNo, help: "Publish step events.")
    var events = true

    func run() async throws {
        try await reportingErrors {
            let logger = queue.bootstrapLogging(label: "provision.worker")
            let redis = try RedisConfiguration(url: try queue.redisURL)
            var configuration = WorkerConfiguration(workerID: WorkerConfiguration.makeWorkerID(), concurrency: concurrency)
            configuration.drainTimeout = .seconds(drainTimeout)
            configuration.supervisorPID = supervisorPid
            let keys = try MachineKeys(prefix: queue.keyPrefix, machine: try queue.machineID)
            let shutdown = Shutdown()
            let signals = shutdown.onSignals()
            defer { signals.forEach { $0.cancel() } }
            try await runWorkerProcess(
                redis: redis, keys: keys, configuration: configuration, events: events, logger: logger, until: shutdown)
        }
    }
}
