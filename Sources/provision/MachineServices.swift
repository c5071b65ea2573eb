import Aggregator
import ArgumentParser
import Foundation
import HealthServer
import JobQueue
import Logging
import RedisClient
import Scheduler
import Telemetry

/// Secrets of this process's environment, masked in every log line, event and value sent to Redis.
let processRedactor = Redactor()

/// Options of step events and of the stall judgement.
struct TelemetryOptions: ParsableArguments {
    @Flag(inversion: .prefixedNo, help: "Publish step events to the machine's event stream (B:events).")
    var events = true

    @Option(help: "Seconds without a worker heartbeat after which a pending or running machine is reported stalled (env PROVISION_STALL_AFTER, default 30).")
    var stallAfter: Double?

    var stallDuration: Duration {
        let seconds = stallAfter ?? ProcessInfo.processInfo.environment["PROVISION_STALL_AFTER"].flatMap(Double.init) ?? 30
        return .milliseconds(Int(max(0.1, seconds) * 1000))
    }

    func validate() throws {
        if let stallAfter, !(0.1...86_400).contains(stallAfter) {
            throw ValidationError("--stall-after must be between 0.1 and 86400 seconds.")
        }
    }
}

/// Where the health server listens.
struct HealthOptions: ParsableArguments {
    @Option(help: "Port of the health server (/health, /status, /metrics); 0 runs without it.")
    var healthPort = 9090

    @Option(help: "Address the health server binds; loopback unless you choose otherwise.")
    var healthHost = "127.0.0.1"

    func validate() throws {
        guard (0...65535).contains(healthPort) else { throw ValidationError("--health-port must be between 0 and 65535.") }
    }
}

/// The machine-level services of a long-lived process (`provision worker`'s supervisor, `provision
/// up`): the health server (step 12), a watch that announces flips whose announcer died, and a
/// publisher for its own events. Workers may die and restart; these stay.
final class MachineServices: Sendable {
    let health: HealthServer?
    let healthPort: Int?
    private let publisher: EventPublisher?
    private let tasks: [Task<Void, Never>]
    /// ComfyUI's supervisor (steps 9-13, 19-21); stopped first, so its last events still go out.
    let supervisor: MachineServiceSupervisor?
    private let supervisorTask: Task<Void, Never>?

    private init(
        health: HealthServer?, healthPort: Int?, publisher: EventPublisher?, tasks: [Task<Void, Never>],
        supervisor: MachineServiceSupervisor? = nil, supervisorTask: Task<Void, Never>? = nil
    ) {
        self.health = health
        self.healthPort = healthPort
        self.publisher = publisher
        self.tasks = tasks
        self.supervisor = supervisor
        self.supervisorTask = supervisorTask
    }

    static func start(
        redisURL: String, keys: MachineKeys, telemetry: TelemetryOptions, health: HealthOptions, workersConfig: String,
        logger: Logger, services: ServicesOptions? = nil, workspace: String? = nil, stateDir: String? = nil
    ) async throws -> MachineServices {
        let redis = try RedisConfiguration(url: redisURL)
        // One connection for the events, the announcement watch and the health server: a fleet of
        // machines must fit Redis' maxclients (protocols/redis.md §10).
        let client = RedisClient(configuration: redis, label: "machine")
        let context = EventContext.fromEnvironment(machineID: keys.machine, defaultWorkersConfig: workersConfig)
        let publisher = telemetry.events
            ? EventPublisher(redis: client, keys: keys, context: context, redactor: processRedactor)
            : nil
        var tasks: [Task<Void, Never>] = []
        if let publisher { tasks.append(Task { await publisher.run() }) }
        let announcer = try FlipAnnouncer(
            redis: client, keys: keys, publisher: publisher, context: context,
            redactor: processRedactor, claimant: "supervisor-\(ProcessInfo.processInfo.hostName)-\(getpid())", logger: logger)
        tasks.append(Task { await announcer.watch() })

        var supervisor: MachineServiceSupervisor?
        if let services, services.enabled, let workspace {
            supervisor = MachineServiceSupervisor(
                redis: redis, keys: keys, options: services, workspace: workspace, stateDir: stateDir, publisher: publisher, logger: logger)
        }

        var server: HealthServer?
        var port: Int?
        if health.healthPort != 0 {
            let monitor = MachineMonitor(redis: client, keys: keys, stallAfter: telemetry.stallDuration)
            let candidate = HealthServer(
                monitor: monitor, configuration: .init(host: health.healthHost, port: health.healthPort), logger: logger,
                services: supervisor.map { supervisor in
                    HealthServer.Services(problem: { supervisor.problem }, metrics: { supervisor.prometheus })
                })
            do {
                let bound = try await candidate.start()
                server = candidate
                port = bound
                publisher?.emit(HealthServer.startEvent(host: health.healthHost, port: bound))
                logger.info("health server listening", metadata: ["address": "\(health.healthHost):\(bound)"])
            } catch {
                publisher?.emit(HealthServer.startEvent(host: health.healthHost, port: health.healthPort, failure: error))
                await publisher?.flush()
                tasks.forEach { $0.cancel() }
                throw UserFacingError(error)
            }
        }
        await publisher?.flush()
        let supervisorTask = supervisor.map { supervisor in Task { await supervisor.run() } }
        return MachineServices(
            health: server, healthPort: port, publisher: publisher, tasks: tasks, supervisor: supervisor, supervisorTask: supervisorTask)
    }

    func stop() async {
        supervisorTask?.cancel()
        await supervisorTask?.value
        await health?.stop()
        for task in tasks {
            task.cancel()
            await task.value
        }
        publisher?.close()
    }
}

/// Runs one worker process with its telemetry: step events and progress (unless `events` is off)
/// and the flip announcement (always: the fleet must learn the flip even without events).
func runWorkerProcess(
    redis: RedisConfiguration, keys: MachineKeys, registry: ExecutorRegistry, configuration: WorkerConfiguration,
    events: Bool, logger: Logger, until shutdown: Shutdown
) async throws {
    let context = EventContext.fromEnvironment(
        machineID: keys.machine, defaultWorkersConfig: "processes=1,concurrency=\(configuration.concurrency)")
    // The process's one connection: claims, heartbeats, completions, events and the announcement.
    let client = RedisClient(configuration: Worker.connection(redis, configuration), label: "worker")
    var observers: [any WorkerObserver] = []
    var publisher: EventPublisher?
    if events {
        let created = EventPublisher(redis: client, keys: keys, context: context, redactor: processRedactor)
        publisher = created
        observers.append(StepEventObserver(publisher: created))
    }
    let announcer = try FlipAnnouncer(
        redis: client, keys: keys, publisher: publisher, context: context,
        redactor: processRedactor, claimant: configuration.workerID, logger: logger)
    observers.append(announcer)
    var worker = configuration
    worker.redact = { processRedactor.scrub($0) }
    worker.connectionIsQuiet = { [publisher] in publisher?.isQuiet ?? true }
    let runner = try Worker(
        client: client, machine: keys.machine, prefix: keys.prefix, registry: registry, configuration: worker,
        logger: logger, observers: observers)
    let flusher = publisher.map { publisher in Task { await publisher.run() } }
    let watch = Task { await announcer.watch() }
    try await runner.run(until: shutdown)
    watch.cancel()
    await watch.value
    flusher?.cancel()
    await flusher?.value
    publisher?.close()
}
