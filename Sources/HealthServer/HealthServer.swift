import Aggregator
import Foundation
import Hummingbird
import JobQueue
import Logging
import ServiceLifecycle
import Synchronization
import Telemetry

/// The machine's HTTP endpoints (startup step 12), on Hummingbird: `/health` answers 200 only when
/// the machine is ready and 503 with a JSON reason otherwise; `/status` is the status JSON with
/// running jobs and their progress; `/metrics` is the Prometheus text format. Every answer is read
/// from Redis at request time; nothing is cached.
package final class HealthServer: Sendable {
    /// Where to listen.
    package struct Configuration: Sendable {
        /// Loopback by default: binding elsewhere is the operator's decision.
        package var host = "127.0.0.1"
        package var port = 9090

        package init(host: String = "127.0.0.1", port: Int = 9090) {
            self.host = host
            self.port = port
        }
    }

    /// What this process knows beyond Redis: the ComfyUI instances it supervises.
    package struct Services: Sendable {
        /// Why not every instance serves, or nil when they all do (or none is asked for).
        package var problem: @Sendable () -> String?
        /// Prometheus lines of the instances.
        package var metrics: @Sendable () -> String

        package init(problem: @escaping @Sendable () -> String?, metrics: @escaping @Sendable () -> String) {
            self.problem = problem
            self.metrics = metrics
        }
    }

    package let configuration: Configuration
    private let monitor: MachineMonitor
    private let logger: Logger
    private let services: Services?
    /// The server's own group when started with `start()` (tests, tools), not in a caller's group.
    private let running = Mutex<(group: ServiceGroup, task: Task<Void, Never>)?>(nil)

    package init(monitor: MachineMonitor, configuration: Configuration = Configuration(), logger: Logger, services: Services? = nil) {
        self.monitor = monitor
        self.configuration = configuration
        self.logger = logger
        self.services = services
    }

    /// The server as a `Service` for the caller's `ServiceGroup`: it serves until the group's
    /// graceful shutdown. `listening` is told the bound port once connections are accepted, or the
    /// reason it could not bind (then `run()` throws it too).
    package func service(listening: @escaping @Sendable (Result<Int, HealthServerError>) -> Void) -> some Service {
        Listener(server: self, listening: listening)
    }

    private struct Listener: Service {
        let server: HealthServer
        let listening: @Sendable (Result<Int, HealthServerError>) -> Void

        func run() async throws {
            var serverLogger = server.logger
            serverLogger.logLevel = max(server.logger.logLevel, .warning)
            let address = "\(server.configuration.host):\(server.configuration.port)"
            let app = Application(
                router: server.makeRouter(),
                configuration: .init(
                    address: .hostname(server.configuration.host, port: server.configuration.port), serverName: "provision"),
                onServerRunning: { [listening] channel in listening(.success(channel.localAddress?.port ?? 0)) },
                logger: serverLogger)
            do {
                try await app.run()
            } catch {
                let failure = HealthServerError.cannotListen(address: address, reason: "\(error)")
                listening(.failure(failure))
                throw failure
            }
            listening(.failure(.stopped))
        }
    }

    /// Starts listening in a group of its own; returns the bound port once connections are
    /// accepted. Throws `HealthServerError.cannotListen` when the address cannot be bound.
    package func start() async throws(HealthServerError) -> Int {
        let (outcomes, report) = AsyncStream.makeStream(of: Result<Int, HealthServerError>.self)
        let group = ServiceGroup(
            configuration: .init(
                services: [service(listening: { report.yield($0) })], gracefulShutdownSignals: [], logger: logger))
        let task = Task {
            try? await group.run()
            report.yield(.failure(.stopped))
            report.finish()
        }
        running.withLock { $0 = (group, task) }
        for await outcome in outcomes { return try outcome.get() }
        throw .stopped
    }

    /// Stops a server started with `start()` (gracefully: requests in flight are answered) and
    /// returns once it is down.
    package func stop() async {
        guard let (group, task) = running.withLock({ state -> (ServiceGroup, Task<Void, Never>)? in
            defer { state = nil }
            return state
        }) else { return }
        await group.triggerGracefulShutdown()
        await task.value
    }

    func makeRouter() -> Router<BasicRequestContext> {
        let router = Router()
        let monitor = self.monitor
        let services = self.services
        router.get("/health") { _, _ -> Response in
            do {
                let snapshot = try await monitor.snapshot()
                // A ready machine whose ComfyUI does not serve right now is not healthy (degraded).
                let problem = snapshot.condition == .ready ? services?.problem() : nil
                let healthy = snapshot.condition == .ready && problem == nil
                var body = JSONObjectWriter()
                body.add("status", problem == nil ? snapshot.condition.rawValue : "degraded")
                body.add("machine_id", snapshot.status.machineID)
                body.add("plan_id", snapshot.status.planID)
                body.add("generation", Int64(snapshot.status.generation))
                body.add("ready", healthy)
                if let reason = problem ?? snapshot.reason { body.add("reason", reason) }
                return Self.json(healthy ? .ok : .serviceUnavailable, body.finish())
            } catch {
                return Self.unavailable(error)
            }
        }
        router.get("/status") { _, _ -> Response in
            do {
                return Self.json(.ok, try await monitor.snapshot().json)
            } catch {
                return Self.unavailable(error)
            }
        }
        router.get("/metrics") { _, _ -> Response in
            do {
                let snapshot = try await monitor.snapshot()
                let counters = try await monitor.counters()
                return Response(
                    status: .ok, headers: [.contentType: PrometheusText.contentType],
                    body: .init(byteBuffer: ByteBuffer(string: PrometheusText.render(snapshot, counters: counters) + (services?.metrics() ?? ""))))
            } catch {
                return Self.unavailable(error)
            }
        }
        return router
    }

    private static func json(_ status: HTTPResponse.Status, _ text: String) -> Response {
        Response(
            status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: text + "\n")))
    }

    /// Redis could not be read: not healthy, and say why (the error text never holds a password).
    private static func unavailable(_ error: any Error) -> Response {
        var body = JSONObjectWriter()
        body.add("status", "unavailable")
        body.add("ready", false)
        body.add("reason", "the machine's status cannot be read: \(error)")
        return json(.serviceUnavailable, body.finish())
    }

    /// The step-12 event: `machine.health_server.start`, or a `machine.step.failure` when binding failed.
    package static func startEvent(host: String, port: Int, failure: HealthServerError? = nil) -> StepEvent {
        let step = Step.healthServer
        var attributes: [(key: String, value: EventValue)] = [("host", .string(host)), ("port", .int(Int64(port)))]
        if let failure {
            attributes += [
                ("error_type", .string("port_in_use")), ("error_message", .string(failure.description)),
                ("retry_attempt", .int(0)),
            ]
        }
        return StepEvent(
            name: failure == nil ? step.event : EventName.failure, step: step, traceID: nil, spanID: step.spanID,
            parentSpanID: nil, durationMilliseconds: failure == nil ? nil : 0, attributes: attributes)
    }
}

/// Why the health server is not serving.
package enum HealthServerError: Error, Sendable, Equatable, CustomStringConvertible {
    case cannotListen(address: String, reason: String)
    case stopped

    package var description: String {
        switch self {
        case .cannotListen(let address, let reason):
            return "The health server cannot listen on \(address) (\(reason)); choose another --health-port, or 0 to run without it."
        case .stopped:
            return "The health server stopped before it was listening."
        }
    }
}
