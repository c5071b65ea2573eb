import Aggregator
import ArgumentParser
import Foundation
import HealthServer
import JobQueue
import Logging
import RedisClient
import Scheduler
import ServiceLifecycle
import UnixSignals
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
/// up`): the event publisher, a watch that announces flips whose announcer died, the health server
/// (step 12), ComfyUI's supervisor and the pool of worker processes, as `Service`s of one
/// `ServiceGroup`. Worker processes may die and restart; these stay. The group stops them in
/// reverse order: the pool drains first, then ComfyUI (its last events still go out), the
/// publisher last (a final flush).
final class MachineServices: Sendable {
    let healthPort: Int?
    /// ComfyUI's supervisor (steps 9-13, 19-21).
    let supervisor: MachineServiceSupervisor?
    private let group: ServiceGroup
    private let running: Task<Void, any Error>
    private let client: RedisClient
    private let publisher: EventPublisher?

    private init(
        healthPort: Int?, supervisor: MachineServiceSupervisor?, group: ServiceGroup, running: Task<Void, any Error>, client: RedisClient,
        publisher: EventPublisher?
    ) {
        self.healthPort = healthPort
        self.supervisor = supervisor
        self.group = group
        self.running = running
        self.client = client
        self.publisher = publisher
    }

    /// Starts the services, and `workers` (the pool) once the health server listens; returns then.
    /// When it cannot listen (a port in use) and `healthRequired`, everything started is stopped
    /// once and the error thrown, and the workers never start; otherwise the others go on without
    /// it. `signals` shut the group down gracefully.
    static func start(
        redisURL: String, keys: MachineKeys, telemetry: TelemetryOptions, health: HealthOptions, workersConfig: String,
        logger: Logger, services: ServicesOptions? = nil, workspace: String? = nil, stateDir: String? = nil,
        healthRequired: Bool = true, workers: (any Service)? = nil, signals: [UnixSignal] = []
    ) async throws -> MachineServices {
        let redis = try RedisConfiguration(url: redisURL)
        // One connection for the events, the announcement watch and the health server: a fleet of
        // machines must fit Redis' maxclients (protocols/redis.md §10).
        let client = RedisClient(configuration: redis, label: "machine")
        let context = EventContext.fromEnvironment(machineID: keys.machine, defaultWorkersConfig: workersConfig)
        let publisher = telemetry.events
            ? EventPublisher(redis: client, keys: keys, context: context, redactor: processRedactor)
            : nil
        let announcer: FlipAnnouncer
        do {
            announcer = try FlipAnnouncer(
                redis: client, keys: keys, publisher: publisher, context: context,
                redactor: processRedactor, claimant: "supervisor-\(ProcessInfo.processInfo.hostName)-\(getpid())", logger: logger)
        } catch {
            publisher?.close()
            client.close()
            throw error
        }
        var supervisor: MachineServiceSupervisor?
        if let services, services.enabled, let workspace {
            supervisor = MachineServiceSupervisor(
                shared: client, keys: keys, options: services, workspace: workspace, stateDir: stateDir, publisher: publisher, logger: logger)
        }

        var members: [ServiceGroupConfiguration.ServiceConfiguration] = []
        if let publisher {
            members.append(.init(service: LoopService(name: "events") { await publisher.run() }))
        }
        members.append(.init(service: LoopService(name: "flip announcer") { await announcer.watch() }))
        let (listening, report) = AsyncStream.makeStream(of: Result<Int, HealthServerError>.self)
        // The workers' copy of the outcome: they start once the server listens (or is not wanted).
        let (ready, reportReady) = AsyncStream.makeStream(of: Bool.self)
        if health.healthPort != 0 {
            let monitor = MachineMonitor(redis: client, keys: keys, stallAfter: telemetry.stallDuration)
            let server = HealthServer(
                monitor: monitor, configuration: .init(host: health.healthHost, port: health.healthPort), logger: logger,
                services: supervisor.map { supervisor in
                    HealthServer.Services(problem: { supervisor.problem }, metrics: { supervisor.prometheus })
                })
            let host = health.healthHost
            let wanted = health.healthPort
            // The step-12 event is emitted before this service ends, so the publisher (stopped after
            // it) still sends it.
            let listener = server.service { outcome in
                switch outcome {
                case .success(let port):
                    publisher?.emit(HealthServer.startEvent(host: host, port: port))
                    logger.info("health server listening", metadata: ["address": "\(host):\(port)"])
                case .failure(let failure) where failure != .stopped:
                    publisher?.emit(HealthServer.startEvent(host: host, port: wanted, failure: failure))
                case .failure:
                    break
                }
                report.yield(outcome)
                if case .failure(let failure) = outcome, failure != .stopped, healthRequired {
                    reportReady.yield(false)
                } else {
                    reportReady.yield(true)
                }
            }
            members.append(
                .init(service: listener, successTerminationBehavior: .gracefullyShutdownGroup,
                      failureTerminationBehavior: healthRequired ? .gracefullyShutdownGroup : .ignore))
        } else {
            report.yield(.failure(.stopped))
            reportReady.yield(true)
        }
        if let supervisor {
            members.append(.init(service: LoopService(name: "services") { await supervisor.run() }))
        }
        // Last, so the group's shutdown stops them first: the workers drain while events still go out.
        if let workers {
            members.append(
                .init(service: AfterListening(ready: ready, service: workers), successTerminationBehavior: .gracefullyShutdownGroup,
                      failureTerminationBehavior: .gracefullyShutdownGroup))
        }
        let group = ServiceGroup(configuration: .init(services: members, gracefulShutdownSignals: signals, logger: logger))
        let running = Task {
            defer {
                report.finish()
                reportReady.finish()
            }
            try await group.run()
        }

        var port: Int?
        for await outcome in listening {
            switch outcome {
            case .success(let bound): port = bound
            case .failure(.stopped): break
            case .failure(let failure):
                if healthRequired {
                    // The group is already stopping (the listener failed): wait for it, once.
                    _ = await running.result
                    await publisher?.flush()
                    publisher?.close()
                    client.close()
                    throw UserFacingError(failure)
                }
                say("the health server could not start (\(failure)); going on without it")
            }
            break
        }
        await publisher?.flush()
        return MachineServices(
            healthPort: port, supervisor: supervisor, group: group, running: running, client: client, publisher: publisher)
    }

    /// Stops every service in reverse order (the workers first) and closes their connection;
    /// throws what ended a service with an error.
    func stop() async throws {
        await group.triggerGracefulShutdown()
        try await finished()
    }

    /// Returns once the group has ended (a signal, the workers' end), with their connection closed.
    func finished() async throws {
        let result = await running.result
        publisher?.close()
        client.close()
        try result.get()
    }
}

/// Runs `service` once the health server listens (or is not wanted); does nothing when it could
/// not listen, since the group is stopping then.
struct AfterListening: Service {
    let ready: AsyncStream<Bool>
    let service: any Service

    func run() async throws {
        for await listening in ready {
            if listening { try await service.run() }
            return
        }
    }
}

/// A loop that runs until its task is cancelled, as a `Service` that the group's graceful shutdown
/// cancels (then it ends its own way: a last flush, records removed).
struct LoopService: Service, CustomStringConvertible {
    let name: String
    let body: @Sendable () async -> Void

    init(name: String, _ body: @escaping @Sendable () async -> Void) {
        self.name = name
        self.body = body
    }

    var description: String { name }

    func run() async {
        await cancelWhenGracefulShutdown(body)
    }
}

/// Runs one worker process with its telemetry: step events and progress (unless `events` is off)
/// and the flip announcement (always: the fleet must learn the flip even without events), as one
/// `ServiceGroup` that SIGTERM and SIGINT shut down gracefully: the worker drains first, the
/// announcer's watch and the publisher (a last flush) stop after it. `extra` services run beside
/// (the supervisor watch); one that ends shuts the group down gracefully.
func runWorkerProcess(
    redis: RedisConfiguration, keys: MachineKeys, registry: ExecutorRegistry, configuration: WorkerConfiguration,
    events: Bool, logger: Logger, extra: [any Service] = []
) async throws {
    let context = EventContext.fromEnvironment(
        machineID: keys.machine, defaultWorkersConfig: "processes=1,concurrency=\(configuration.concurrency)")
    // The process's one connection: claims, heartbeats, completions, events and the announcement.
    let client = RedisClient(configuration: Worker.connection(redis, configuration), label: "worker")
    defer { client.close() }
    var observers: [any WorkerObserver] = []
    var publisher: EventPublisher?
    if events {
        let created = EventPublisher(redis: client, keys: keys, context: context, redactor: processRedactor)
        publisher = created
        observers.append(StepEventObserver(publisher: created))
    }
    defer { publisher?.close() }
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
    var members: [ServiceGroupConfiguration.ServiceConfiguration] = []
    if let publisher { members.append(.init(service: LoopService(name: "events") { await publisher.run() })) }
    members.append(.init(service: LoopService(name: "flip announcer") { await announcer.watch() }))
    members.append(
        .init(service: runner, successTerminationBehavior: .gracefullyShutdownGroup, failureTerminationBehavior: .gracefullyShutdownGroup))
    for service in extra {
        members.append(.init(service: service, successTerminationBehavior: .gracefullyShutdownGroup))
    }
    let group = ServiceGroup(configuration: .init(services: members, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
    try await group.run()
}
