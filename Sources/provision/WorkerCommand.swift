import ArgumentParser
import Foundation
import JobQueue
import Logging
import RedisClient
import ProcessControl
import Scheduler
import ServiceLifecycle
import Downloader
import ComponentSpec
import Verification
import NodeInstaller

/// Options of a worker pool.
struct PoolOptions: ParsableArguments {
    @Option(help: "Worker processes to run (each restarted if it dies).")
    var processes = 2

    @Option(help: "Jobs each worker process runs at once.")
    var concurrency = 4

    @Option(help: "Seconds running jobs may take to finish on shutdown before they are handed back.")
    var drainTimeout = 30

    @OptionGroup var executors: ExecutorOptions

    func validate() throws {
        guard (1...64).contains(processes) else { throw ValidationError("--processes must be between 1 and 64.") }
        guard (1...1024).contains(concurrency) else { throw ValidationError("--concurrency must be between 1 and 1024.") }
        guard (0...3600).contains(drainTimeout) else { throw ValidationError("--drain-timeout must be between 0 and 3600 seconds.") }
    }

    /// A supervisor that runs `processes` copies of `provision worker-process`. The Redis URL goes
    /// to the children through the environment, so a password never shows in `ps`.
    func supervisor(
        redisURL: String, machine: String, prefix: String, logLevel: String?, events: Bool = true, logger: Logger
    ) -> Scheduler.Supervisor {
        var environment = ProcessInfo.processInfo.environment
        environment["PROVISION_REDIS_URL"] = redisURL
        environment["PROVISION_WORKERS_CONFIG"] = workersConfig
        var arguments = [
            "worker-process", "--machine", machine, "--prefix", prefix, "--concurrency", String(concurrency),
            "--drain-timeout", String(drainTimeout), "--supervisor-pid", String(getpid()),
        ]
        if let logLevel { arguments += ["--log-level", logLevel] }
        if !events { arguments.append("--no-events") }
        arguments += executors.arguments
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
    @OptionGroup var services: ServicesOptions

    func run() async throws {
        try await reportingErrors {
            let logger = queue.bootstrapLogging(label: "provision.supervisor")
            let url = try queue.redisURL
            let machine = try queue.machineID
            // Fail fast on a bad URL or machine id rather than in every child.
            _ = try RedisConfiguration(url: url)
            let keys = try MachineKeys(prefix: queue.keyPrefix, machine: machine)
            let workers = pool.supervisor(
                redisURL: url, machine: machine, prefix: queue.keyPrefix, logLevel: queue.logLevel,
                events: telemetry.events, logger: logger)
            // One group: SIGTERM or SIGINT drains the workers, then stops ComfyUI, the health
            // server, the announcer's watch and the publisher, in that order.
            let services = try await MachineServices.start(
                redisURL: url, keys: keys, telemetry: telemetry, health: health, workersConfig: pool.workersConfig,
                logger: logger, services: self.services, workspace: pool.executors.resolvedWorkspace,
                workers: workers, signals: [.sigterm, .sigint])
            try await services.finished()
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

    @OptionGroup var executors: ExecutorOptions

    func run() async throws {
        try await reportingErrors {
            let logger = queue.bootstrapLogging(label: "provision.worker")
            let redis = try RedisConfiguration(url: try queue.redisURL)
            var configuration = WorkerConfiguration(workerID: WorkerConfiguration.makeWorkerID(), concurrency: concurrency)
            configuration.drainTimeout = .seconds(drainTimeout)
            let keys = try MachineKeys(prefix: queue.keyPrefix, machine: try queue.machineID)
            var registry = executors.registry()
            registry.register(ServicesExecutor(redis: redis, keys: keys))
            let watch = supervisorPid.map { SupervisorWatch(supervisor: $0, drainTimeout: .seconds(drainTimeout), logger: logger) }
            try await runWorkerProcess(
                redis: redis, keys: keys, registry: registry, configuration: configuration, events: events,
                logger: logger, extra: watch.map { [$0] } ?? [])
        }
    }
}

/// Ends when this process's parent is no longer `supervisor`, which shuts the worker's group down
/// gracefully: a worker whose supervisor died (SIGKILL, the OOM killer) has no one left to stop it,
/// so it drains as on SIGTERM. Since its Redis calls retry for a minute when Redis is gone too, a
/// timer (not a task: the drain may hold the process's tasks) exits once the drain timeout and a
/// grace period have passed; its leases expire and the jobs run elsewhere.
struct SupervisorWatch: Service {
    let supervisor: Int32
    let drainTimeout: Duration
    let logger: Logger

    func run() async {
        do {
            try await cancelWhenGracefulShutdown {
                while getppid() == supervisor { try await Task.sleep(for: .milliseconds(200)) }
            }
        } catch {
            return  // the group is stopping for another reason
        }
        logger.warning("the supervisor is gone; draining", metadata: ["supervisor_pid": "\(supervisor)"])
        let limit = drainTimeout / .seconds(1) + orphanGraceSeconds
        DispatchQueue.global().asyncAfter(deadline: .now() + limit) { [logger] in
            logger.error("the supervisor is gone and this worker did not stop within its drain timeout; exiting")
            exit(1)
        }
    }
}

/// How long an orphaned worker may take beyond its drain timeout (final flushes, unregistering).
let orphanGraceSeconds = 5.0

/// Options of the job executors a worker offers.
struct ExecutorOptions: ParsableArguments {
    @Option(help: "The machine's workspace: ComfyUI, custom nodes, models and the Python environment live here (env PROVISION_WORKSPACE).")
    var workspace: String?

    @Option(help: "Where download jobs place model files (default: WORKSPACE/ComfyUI/models; env PROVISION_MODELS_ROOT).")
    var modelsRoot: String?

    @Option(help: "Parallel connections per download unless the job says otherwise.")
    var downloadConnections = 8

    @Flag(help: "Let download jobs fetch from loopback and private addresses (tests, local mirrors; env PROVISION_ALLOW_LOOPBACK=1).")
    var allowLoopbackOrigins = false

    @Option(name: .customLong("allow-origin"), help: "Let download jobs connect to this one local ADDRESS:PORT, e.g. 127.0.0.1:8080 or [::1]:8080 (repeatable; a local mirror).")
    var allowedOrigins: [String] = []

    @Option(name: .customLong("git-rewrite"), help: "Rewrite git URLs starting with FROM to start with TO, like git's insteadOf (repeatable): FROM=TO.")
    var gitRewrites: [String] = []

    @Flag(help: "Allow file:// and local git sources (mirrors, tests).")
    var allowLocalSources = false

    @Flag(help: "Replace custom nodes or ComfyUI found at another commit or with local changes.")
    var force = false

    @Option(help: "Git operations at once on this machine, across worker processes.")
    var gitSlots = 5

    @Option(help: "The uv executable (env PROVISION_UV).")
    var uv: String?

    @Option(help: "The Python that creates the environment.")
    var python = "python3"

    @Option(help: "A folder of wheels uv may install from (repeatable; offline machines).")
    var findLinks: [String] = []

    @Flag(help: "Install Python packages only from --find-links, never from an index.")
    var noIndex = false

    @Option(name: .customLong("expose-env"), help: "An environment variable plans may use as ${NAME} in headers and node env, and that git, uv and install.py see (repeatable; env PROVISION_EXPOSE_ENV=A,B). The Redis URL is never exposed.")
    var exposeEnv: [String] = []

    /// The worker's environment and the names plans may reach.
    var environmentPolicy: EnvironmentPolicy {
        let environment = ProcessInfo.processInfo.environment
        let listed = (environment["PROVISION_EXPOSE_ENV"] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        return EnvironmentPolicy(environment: environment, exposed: Set(exposeEnv + listed))
    }

    var resolvedWorkspace: String {
        workspace ?? ProcessInfo.processInfo.environment["PROVISION_WORKSPACE"] ?? "/workspace"
    }

    var resolvedModelsRoot: String {
        modelsRoot ?? ProcessInfo.processInfo.environment["PROVISION_MODELS_ROOT"] ?? resolvedWorkspace + "/ComfyUI/models"
    }

    var allowsLoopback: Bool {
        allowLoopbackOrigins || ProcessInfo.processInfo.environment["PROVISION_ALLOW_LOOPBACK"] == "1"
    }

    /// Which download origins are allowed (`validate` has checked the `--allow-origin`s).
    func urlPolicy() throws -> URLPolicy {
        try URLPolicy(allowLoopback: allowsLoopback, allowedOrigins: parseAllowedOrigins(allowedOrigins))
    }

    func validate() throws {
        for rule in gitRewrites where !rule.contains("=") { throw ValidationError("--git-rewrite takes FROM=TO.") }
        _ = try urlPolicy()
        for name in exposeEnv where !EnvironmentTemplate.isIdentifier(name) { throw ValidationError("--expose-env takes a variable name, not '\(name.prefix(60))'.") }
        for name in exposeEnv where EnvironmentPolicy.neverExposed.contains(name) { throw ValidationError("--expose-env cannot expose \(name): it holds the queue's credentials.") }
        guard (1...64).contains(gitSlots) else { throw ValidationError("--git-slots must be between 1 and 64.") }
    }

    /// The same options, for a child worker process.
    var arguments: [String] {
        var list = ["--workspace", resolvedWorkspace, "--models-root", resolvedModelsRoot, "--download-connections", String(downloadConnections),
                    "--git-slots", String(gitSlots), "--python", python]
        if allowsLoopback { list.append("--allow-loopback-origins") }
        for origin in allowedOrigins { list += ["--allow-origin", origin] }
        if allowLocalSources { list.append("--allow-local-sources") }
        if force { list.append("--force") }
        if let uv { list += ["--uv", uv] }
        for folder in findLinks { list += ["--find-links", folder] }
        if noIndex { list.append("--no-index") }
        for rule in gitRewrites { list += ["--git-rewrite", rule] }
        for name in exposeEnv { list += ["--expose-env", name] }
        return list
    }

    func registry() -> ExecutorRegistry {
        var registry = ExecutorRegistry.builtin
        let environmentPolicy = self.environmentPolicy
        registry.register(DownloadExecutor(
            modelsRoot: resolvedModelsRoot, policy: (try? urlPolicy()) ?? URLPolicy(), defaultConnections: downloadConnections, environmentPolicy: environmentPolicy))
        let rewrites = gitRewrites.compactMap { rule -> (from: String, to: String)? in
            guard let equals = rule.firstIndex(of: "=") else { return nil }
            return (String(rule[..<equals]), String(rule[rule.index(after: equals)...]))
        }
        var nodes = NodeInstallerConfiguration(workspace: Workspace(root: resolvedWorkspace), sources: GitSourcePolicy(rewrites: rewrites, allowLocal: allowLocalSources))
        nodes.force = force
        nodes.gitSlots = gitSlots
        nodes.systemPython = python
        nodes.uv = uv ?? ProcessInfo.processInfo.environment["PROVISION_UV"] ?? "uv"
        nodes.findLinks = findLinks
        nodes.noIndex = noIndex
        nodes.environmentPolicy = environmentPolicy
        let environment = ProcessInfo.processInfo.environment
        nodes.gpu = environment["GPU_MODE"] == "mock" ? (Int(environment["MOCK_GPU_NUM"] ?? "1") ?? 1) > 0 : (try? ChildProcess.locate("nvidia-smi")) != nil
        registry.register(NodeExecutor(configuration: nodes))
        registry.register(ComfyUIExecutor(configuration: nodes))
        registry.register(PythonDepsExecutor(configuration: nodes))
        registry.register(InstallScriptsExecutor(configuration: nodes))
        // The verify job looks for the models where this worker's downloads put them.
        registry.register(VerifyExecutor(workspace: resolvedWorkspace, modelsRoot: resolvedModelsRoot))
        return registry
    }
}
