import Foundation
import JobQueue
import Logging
import RedisClient
import ServiceLifecycle
import Services
import Synchronization
import Telemetry

/// The Redis keys of a machine's services (protocols/redis.md, "Services").
struct ServiceKeys: Sendable {
    let machine: MachineKeys
    /// Hash: instance name → its status JSON; `_supervisor` → the supervisor's own record.
    var services: String { machine.base + ":services" }
    /// String: the services job's request (JSON), read by the supervisor.
    var want: String { machine.base + ":services:want" }
    /// List a supervisor of protocol 2 blocked on; no longer written, still removed by `retire`.
    var wake: String { machine.base + ":services:wake" }
    /// Hash: worker id (`comfyui-0`) → its registration, as the seed's workers registered.
    var comfyWorkers: String { machine.base + ":comfyui-workers" }
    static let supervisorField = "_supervisor"
    /// Seconds the supervisor's records live without a heartbeat.
    static let ttlSeconds = 15
}

/// What a `services` job asks the machine's supervisor for.
struct ServicesRequest: Codable, Sendable, Equatable {
    /// `<plan>:<generation>`: the same for every attempt of the job, so a retry does not restart ComfyUI.
    var id: String
    var plan: String
    var generation: Int
    var readiness: Readiness
}

/// Steps of the runtime half (seed 002).
enum ServiceSteps {
    static let hardware = Step(number: 9, name: "Hardware Detection", phase: "pm2_ecosystem", event: "machine.pm2.hardware.detect")
    static let serviceStart = Step(number: 13, name: "ComfyUI Service Start", phase: "service_startup", event: "machine.comfyui.service.start")
    static let serverStart = Step.comfyUIServer
}

/// The machine's service supervisor (replaces PM2), living in the long-lived `provision worker` /
/// `up` process: waits for a `services` job's request, detects the hardware, runs one
/// `InstanceSupervisor` per instance in a `ServiceGroup`, and keeps their state in Redis.
final class MachineServiceSupervisor: Sendable {
    /// The process's shared connection (events, announcements, health): the supervisor's records
    /// go through it, so services add one connection (the blocking wait) to a machine, not four.
    private let shared: RedisClient
    private let keys: ServiceKeys
    private let options: ServicesOptions
    private let workspace: String
    private let logDirectory: String
    private let publisher: EventPublisher?
    private let logger: Logger
    /// The request being served, its instances, and why it could not start (then no instance).
    private let running = Mutex<(request: ServicesRequest, supervisors: [InstanceSupervisor], hardware: Hardware, error: String?)?>(nil)

    init(
        shared: RedisClient, keys: MachineKeys, options: ServicesOptions, workspace: String, stateDir: String?,
        publisher: EventPublisher?, logger: Logger
    ) {
        self.shared = shared
        self.keys = ServiceKeys(machine: keys)
        self.options = options
        self.workspace = workspace
        self.logDirectory = options.logDirectory(stateDir: stateDir)
        self.publisher = publisher
        self.logger = logger
    }

    /// The signal a services job in a child worker process sends the supervisor after its request.
    static let wakeSignal = SIGUSR1

    /// Runs until cancelled; then stops every instance and removes its records.
    func run() async {
        // No connection of its own: woken by its child worker running the services job (a signal),
        // it reads the request on the shared connection; an idle machine costs one GET per look.
        let doorbell = Doorbell()
        let source = doorbell.ring(on: Self.wakeSignal)
        let writer = shared
        // Started after the signal is handled: its record (with "wake") is what lets a job signal.
        let heartbeat = Task { await self.heartbeat(writer: self.shared) }
        var current: (request: ServicesRequest, group: ServiceGroup, task: Task<Void, Never>)?
        // The request acted on last, even when it could not start (a bad WORKERS is not retried every second).
        var handled: String?
        while !Task.isCancelled {
            // Only the machine's current plan: a request left by a plan that was superseded since is
            // not acted on (a restarted worker of the current plan brings its ComfyUI back).
            if let text = try? await writer.send(["GET", keys.want]).string,
                let request = try? JSONDecoder().decode(ServicesRequest.self, from: Data(text.utf8)),
                request.id != handled,
                (try? await writer.send(["HGET", keys.machine.status, "plan_id"]).string) == request.plan
            {
                handled = request.id
                if let running = current {
                    await running.group.triggerGracefulShutdown()
                    await running.task.value
                    current = nil
                }
                current = await start(request, writer: writer)
            }
            // A services job in a child worker process rings at once; one elsewhere waits for this look.
            await doorbell.wait(timeout: .milliseconds(Int(options.servicesLookInterval * 1000)))
        }
        // Cancelled: the instances stop and the records go, on calls this cancellation does not reach.
        let keys = self.keys
        await withoutCancellation { [current] in
            if let current {
                await current.group.triggerGracefulShutdown()
                await current.task.value
            }
            heartbeat.cancel()
            await heartbeat.value
            _ = try? await writer.send(["DEL", keys.services, keys.comfyWorkers])
        }
        source.cancel()
    }

    private func start(_ request: ServicesRequest, writer: RedisClient) async -> (ServicesRequest, ServiceGroup, Task<Void, Never>)? {
        let hardware = await Hardware.detect()
        publisher?.emit(StepEvent(
            name: ServiceSteps.hardware.event, step: ServiceSteps.hardware, traceID: request.plan, spanID: ServiceSteps.hardware.spanID,
            parentSpanID: nil, attributes: [
                ("detected_mode", .string(hardware.mode.rawValue)), ("gpu_count", .int(Int64(hardware.gpus.count))),
                ("gpus", .string(hardware.gpus.map { "\($0.index):\($0.name)" }.joined(separator: ","))),
            ] + (hardware.note.map { [("note", EventValue.string($0))] } ?? [])))
        let instances: [ComfyUIInstance]
        do {
            instances = try options.planner(workspace: workspace).instances(hardware: hardware, workers: try options.workers())
        } catch {
            running.withLock { $0 = (request, [], hardware, "\(error)") }
            await recordSupervisor(writer: writer, request: request, hardware: hardware, instances: 0, error: "\(error)")
            return nil
        }
        // Records of an earlier request would read as this one's.
        _ = try? await writer.send(["DEL", keys.services, keys.comfyWorkers])
        let observer = RedisInstanceObserver(
            writer: shared, keys: keys, request: request, publisher: publisher,
            logger: logger)
        let policy = options.policy(logDirectory: logDirectory)
        let supervisors = instances.map { InstanceSupervisor(instance: $0, readiness: request.readiness, policy: policy, observer: observer) }
        running.withLock { $0 = (request, supervisors, hardware, nil) }
        await recordSupervisor(writer: writer, request: request, hardware: hardware, instances: instances.count, error: nil)
        logger.info("starting ComfyUI", metadata: ["instances": "\(instances.map(\.name))", "request": "\(request.id)"])
        let group = ServiceGroup(configuration: .init(services: supervisors, gracefulShutdownSignals: [], logger: logger))
        let task = Task {
            do { try await group.run() } catch { self.logger.error("the service group ended", metadata: ["error": "\(error)"]) }
        }
        return (request, group, task)
    }

    private func recordSupervisor(writer: RedisClient, request: ServicesRequest, hardware: Hardware, instances: Int, error: String?) async {
        var record: [String: Any] = [
            "pid": Int(getpid()), "host": ProcessInfo.processInfo.hostName, "request": request.id, "instances": instances, "wake": "SIGUSR1",
            "heartbeat_at": Int64(Date().timeIntervalSince1970 * 1000), "gpu_mode": hardware.mode.rawValue,
            "gpus": hardware.gpus.map { ["index": $0.index, "name": $0.name, "uuid": $0.uuid, "memory_total": $0.memoryTotal] },
        ]
        if let error { record["error"] = error }
        let text = (try? JSONSerialization.data(withJSONObject: record, options: [.sortedKeys])).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        _ = try? await writer.pipeline([
            ["HSET", keys.services, ServiceKeys.supervisorField, text],
            ["EXPIRE", keys.services, String(ServiceKeys.ttlSeconds)],
        ])
    }

    /// Every 2 s while instances run (the API routes on fresh registrations), every 5 s while idle:
    /// the supervisor's record and the worker registrations stay alive; without it they expire.
    private func heartbeat(writer: RedisClient) async {
        while !Task.isCancelled {
            if let (request, supervisors, hardware, error) = running.withLock({ $0 }) {
                await recordSupervisor(writer: writer, request: request, hardware: hardware, instances: supervisors.count, error: error)
                let now = Int64(Date().timeIntervalSince1970 * 1000)
                var commands: [[String]] = []
                // Instance records are written by the observer at each change (in order); the heartbeat
                // only keeps them and the registrations alive.
                for supervisor in supervisors {
                    let status = supervisor.status
                    if status.state == .serving {
                        commands.append(["HSET", keys.comfyWorkers, status.instance.workerID, RedisInstanceObserver.registration(status, machine: keys.machine.machine, heartbeat: now)])
                    }
                }
                commands.append(["EXPIRE", keys.services, String(ServiceKeys.ttlSeconds)])
                commands.append(["EXPIRE", keys.comfyWorkers, String(ServiceKeys.ttlSeconds)])
                _ = try? await writer.pipeline(commands)
            } else {
                // An idle supervisor still says it is there, so a services job knows someone will act.
                let record = #"{"pid":\#(getpid()),"request":null,"wake":"SIGUSR1","heartbeat_at":\#(Int64(Date().timeIntervalSince1970 * 1000))}"#
                _ = try? await writer.pipeline([
                    ["HSET", keys.services, ServiceKeys.supervisorField, record], ["EXPIRE", keys.services, String(ServiceKeys.ttlSeconds)],
                ])
            }
            let busy = running.withLock { $0.map { !$0.supervisors.isEmpty } ?? false }
            try? await Task.sleep(for: busy ? .seconds(2) : .seconds(5))
        }
    }

    /// The instances' state now (for /metrics and /health of this process).
    var statuses: [InstanceStatus] { running.withLock { $0?.supervisors.map(\.status) ?? [] } }

    /// Why not every instance serves (nil when all do, or when no plan asked for services).
    var problem: String? {
        let notServing = statuses.filter { $0.state != .serving }
        guard !notServing.isEmpty else { return nil }
        return notServing.map { status in
            "\(status.instance.name) is \(status.state.rawValue)" + (status.failure.map { ": \($0.message)" } ?? status.lastExit.map { " (last exit: \($0))" } ?? "")
        }.joined(separator: "; ")
    }

    /// Per instance: up, state, pid, port, GPU, restarts, uptime and probe requests, in Prometheus text.
    var prometheus: String {
        let list = running.withLock { $0?.supervisors.map { ($0.status, $0.requestCount) } ?? [] }
        guard !list.isEmpty else { return "" }
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        var lines = [
            "# HELP provision_comfyui_up 1 while the ComfyUI instance serves (ready and connected).",
            "# TYPE provision_comfyui_up gauge",
        ]
        func labels(_ status: InstanceStatus) -> String {
            "instance=\"\(status.instance.name)\",gpu=\"\(status.instance.gpu.map(String.init) ?? "cpu")\",port=\"\(status.instance.port)\""
        }
        for (status, _) in list { lines.append("provision_comfyui_up{\(labels(status))} \(status.state == .serving ? 1 : 0)") }
        lines += ["# HELP provision_comfyui_state The instance's state (1 for the current one).", "# TYPE provision_comfyui_state gauge"]
        for (status, _) in list { lines.append("provision_comfyui_state{\(labels(status)),state=\"\(status.state.rawValue)\"} 1") }
        lines += ["# HELP provision_comfyui_pid The instance's process id (0 when not running).", "# TYPE provision_comfyui_pid gauge"]
        for (status, _) in list { lines.append("provision_comfyui_pid{\(labels(status))} \(status.pid ?? 0)") }
        lines += ["# HELP provision_comfyui_restarts_total Restarts of the instance.", "# TYPE provision_comfyui_restarts_total counter"]
        for (status, _) in list { lines.append("provision_comfyui_restarts_total{\(labels(status))} \(status.restarts)") }
        lines += ["# HELP provision_comfyui_uptime_seconds Seconds since the instance last began serving.", "# TYPE provision_comfyui_uptime_seconds gauge"]
        for (status, _) in list {
            lines.append("provision_comfyui_uptime_seconds{\(labels(status))} \(status.servingSince.map { Double(now - $0) / 1000 } ?? 0)")
        }
        lines += ["# HELP provision_comfyui_probe_requests_total HTTP requests the supervisor sent the instance (readiness and liveness).", "# TYPE provision_comfyui_probe_requests_total counter"]
        for (status, count) in list { lines.append("provision_comfyui_probe_requests_total{\(labels(status))} \(count)") }
        return lines.joined(separator: "\n") + "\n"
    }
}

/// Writes each instance change to Redis, the machine's events and, after ready, the fleet.
final class RedisInstanceObserver: InstanceObserver {
    private let writer: RedisClient
    private let keys: ServiceKeys
    private let request: ServicesRequest
    private let publisher: EventPublisher?
    private let logger: Logger

    init(writer: RedisClient, keys: ServiceKeys, request: ServicesRequest, publisher: EventPublisher?, logger: Logger) {
        self.writer = writer
        self.keys = keys
        self.request = request
        self.publisher = publisher
        self.logger = logger
    }

    static func json(_ status: InstanceStatus, request: String) -> String {
        var record: [String: Any] = [
            "name": status.instance.name, "index": status.instance.index, "port": status.instance.port,
            "state": status.state.rawValue, "restarts": status.restarts, "request": request, "log": status.log,
            "worker_id": status.instance.workerID, "updated_at": Int64(Date().timeIntervalSince1970 * 1000),
        ]
        record["gpu"] = status.instance.gpu ?? NSNull()
        record["pid"] = status.pid.map { Int($0) } ?? NSNull()
        if let value = status.lastExit { record["last_exit"] = value }
        if let value = status.startedAt { record["started_at"] = value }
        if let value = status.servingSince { record["serving_since"] = value }
        if let failure = status.failure {
            var entry: [String: Any] = ["type": failure.type, "message": failure.message]
            if let node = failure.node { entry["node"] = node }
            if let error = failure.error { entry["error"] = error }
            record["failure"] = entry
        }
        let data = (try? JSONSerialization.data(withJSONObject: record, options: [.sortedKeys])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    static func registration(_ status: InstanceStatus, machine: String, heartbeat: Int64, state: String = "ready") -> String {
        let record: [String: Any] = [
            "id": status.instance.workerID, "connectors": ["comfyui"], "machine_id": machine,
            "gpu": status.instance.gpu ?? NSNull(), "port": status.instance.port, "host": status.instance.host,
            "instance": status.instance.name, "status": state, "heartbeat_at": heartbeat,
            "registered_at": status.servingSince ?? heartbeat,
        ]
        let data = (try? JSONSerialization.data(withJSONObject: record, options: [.sortedKeys])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    func instance(_ event: InstanceEvent, status: InstanceStatus) async {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        var commands: [[String]] = [
            ["HSET", keys.services, status.instance.name, Self.json(status, request: request.id)],
            ["EXPIRE", keys.services, String(ServiceKeys.ttlSeconds)],
        ]
        var attributes: [(key: String, value: EventValue)] = [
            ("component", .string(status.instance.name)), ("instance", .string(status.instance.name)),
            ("port", .int(Int64(status.instance.port))),
        ]
        if let gpu = status.instance.gpu { attributes.append(("gpu", .int(Int64(gpu)))) }
        if let pid = status.pid { attributes.append(("pid", .int(Int64(pid)))) }
        var fleet: (type: String, reason: String?)?
        switch event {
        case .started:
            emit(ServiceSteps.serviceStart.event, ServiceSteps.serviceStart, attributes + [("restarts", .int(Int64(status.restarts)))])
        case .ready(let milliseconds):
            emit(ServiceSteps.serverStart.completeEvent, ServiceSteps.serverStart, attributes, duration: Double(milliseconds))
        case .connected, .recovered:
            emit(Step.workerConnection.event, Step.workerConnection, attributes + [("worker_id", .string(status.instance.workerID))], span: status.instance.workerID)
            commands.append(["HSET", keys.comfyWorkers, status.instance.workerID, Self.registration(status, machine: keys.machine.machine, heartbeat: now)])
            commands.append(["EXPIRE", keys.comfyWorkers, String(ServiceKeys.ttlSeconds)])
            if event == .recovered {
                emit("machine.comfyui.service.recovered", ServiceSteps.serviceStart, attributes + [("restarts", .int(Int64(status.restarts)))])
                fleet = ("machine_recovered", nil)
            }
        case .failed(let failure):
            var failed = attributes + [
                ("error_type", .string(failure.type)), ("error_message", .string(failure.message)), ("retry_attempt", .int(0)),
            ]
            if let node = failure.node { failed[0] = ("component", .string(node)); failed.append(("node", .string(node))) }
            emit(EventName.failure, ServiceSteps.serverStart, failed, duration: 0)
            logger.error("\(failure.message)")
        case .degraded(let reason):
            emit("machine.comfyui.service.degraded", ServiceSteps.serviceStart, attributes + [("reason", .string(reason))])
            commands.append(["HSET", keys.comfyWorkers, status.instance.workerID, Self.registration(status, machine: keys.machine.machine, heartbeat: now, state: "unavailable")])
            fleet = ("machine_degraded", reason)
            logger.warning("\(reason); restarting")
        case .exited(let reason):
            emit("machine.comfyui.service.exited", ServiceSteps.serviceStart, attributes + [("reason", .string(reason)), ("restarts", .int(Int64(status.restarts)))])
        case .stopped:
            commands.append(["HDEL", keys.comfyWorkers, status.instance.workerID])
        }
        if let fleet {
            var message: [String: Any] = [
                "type": fleet.type, "machine_id": keys.machine.machine, "instance": status.instance.name,
                "worker_id": status.instance.workerID, "port": status.instance.port, "restarts": status.restarts, "at": now,
                "plan_id": request.plan, "generation": request.generation,
            ]
            if let reason = fleet.reason { message["reason"] = reason }
            let data = (try? JSONSerialization.data(withJSONObject: message, options: [.sortedKeys])) ?? Data("{}".utf8)
            let text = processRedactor.scrub(String(decoding: data, as: UTF8.self))
            commands.append([
                "XADD", keys.machine.fleetEvents, "MAXLEN", "~", "100000", "*", "type", fleet.type, "machine_id", keys.machine.machine,
                "instance", status.instance.name, "data", text,
            ])
            commands.append(["PUBLISH", keys.machine.fleetChannel, text])
        }
        // The last records (an instance stopped) are written while the supervisor is being cancelled.
        _ = await withoutCancellation { [writer, commands] in try? await writer.pipeline(commands) }
        if case .failed = event { await publisher?.flush() }
    }

    private func emit(_ name: String, _ step: Step, _ attributes: [(key: String, value: EventValue)], duration: Double? = nil, span: String? = nil) {
        publisher?.emit(StepEvent(
            name: name, step: step, traceID: request.plan, spanID: step.spanID + "/" + (span ?? attributes.first?.value.string ?? ""),
            parentSpanID: step.spanID, durationMilliseconds: duration, attributes: attributes))
    }
}
