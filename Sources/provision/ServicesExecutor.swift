import Foundation
import JobQueue
import RedisClient
import Scheduler
import Services

/// `services` (steps 19-21): the plan's last job. It asks the machine's service supervisor (in the
/// long-lived `provision worker` / `up` process) to run ComfyUI with what the plan installed, and
/// succeeds once every instance is ready and connected, so the queue's one flip to `ready` happens
/// only then. An import failure, a missing node type or no answer by the deadline fails it, naming
/// the cause; nothing is retried, since the same nodes would fail the same way.
struct ServicesExecutor: JobExecutor {
    let redis: RedisConfiguration
    let keys: MachineKeys
    /// How long to wait for a supervisor to show up before saying none runs.
    var supervisorGrace: Duration = .seconds(10)

    func run(_ job: JobAttempt<ServicesPayload>, context: JobContext) async throws -> String {
        let payload = job.payload
        let keys = ServiceKeys(machine: self.keys)
        let request = ServicesRequest(
            id: "\(job.plan):\(job.generation)", plan: job.plan, generation: job.generation,
            readiness: Readiness(nodes: payload.nodes, classTypes: payload.classTypes ?? [], deadlineSeconds: payload.deadlineSeconds ?? 300))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let text = String(decoding: try encoder.encode(request), as: UTF8.self)
        let client = RedisClient(configuration: redis, label: "services-job")
        defer { client.close() }
        _ = try await client.send(["SET", keys.want, text, "EX", "86400"])
        try await Self.ringSupervisor(client: client, keys: keys)
        let clock = ContinuousClock()
        let started = clock.now
        // The supervisor enforces the readiness deadline; this one only guards against a supervisor that vanished.
        let giveUp = started + .milliseconds(Int((request.readiness.deadlineSeconds + 120) * 1000))
        while true {
            try Task.checkCancellation()
            let hash = try await client.send(["HGETALL", keys.services]).hash ?? [:]
            let supervisor = hash[ServiceKeys.supervisorField].flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
            if supervisor == nil && clock.now - started > supervisorGrace {
                throw JobFailure(
                    type: "no_service_supervisor",
                    message: "No service supervisor runs for machine \(self.keys.machine): run `provision worker` or `provision up` (with services on) so ComfyUI can start.",
                    retryable: false)
            }
            if let supervisor, supervisor["request"] as? String == request.id {
                if let error = supervisor["error"] as? String {
                    throw JobFailure(type: "services_config", message: error, retryable: false)
                }
                let expected = supervisor["instances"] as? Int ?? 0
                let instances = hash.filter { $0.key != ServiceKeys.supervisorField }.compactMap { entry -> [String: Any]? in
                    guard let object = try? JSONSerialization.jsonObject(with: Data(entry.value.utf8)) as? [String: Any],
                        object["request"] as? String == request.id
                    else { return nil }
                    return object
                }
                if let failed = instances.first(where: { $0["state"] as? String == "failed" }) {
                    let failure = failed["failure"] as? [String: Any]
                    throw JobFailure(
                        type: failure?["type"] as? String ?? "service_failed",
                        message: failure?["message"] as? String ?? "\(failed["name"] ?? "an instance") failed.", retryable: false)
                }
                if expected == 0 {
                    return #"{"instances":[]}"#
                }
                if instances.count >= expected, instances.allSatisfy({ $0["state"] as? String == "serving" }) {
                    let summary = instances.map { "\($0["name"] ?? "?")" }.sorted()
                    let data = try JSONSerialization.data(withJSONObject: ["instances": summary], options: [.sortedKeys])
                    return String(decoding: data, as: UTF8.self)
                }
            }
            if clock.now > giveUp {
                throw JobFailure(
                    type: "no_answer",
                    message: "The service supervisor of machine \(self.keys.machine) did not report its ComfyUI instances within \(Int(request.readiness.deadlineSeconds) + 120) s.",
                    retryable: false)
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Wakes the supervisor at once when it is this worker process's parent (the usual case) and
    /// says it takes the signal; otherwise it finds the request at its next look (`--services-look-interval`). Only the
    /// parent is ever signalled, so a stale or foreign record cannot reach another process.
    static func ringSupervisor(client: RedisClient, keys: ServiceKeys) async throws {
        guard let text = try await client.send(["HGET", keys.services, ServiceKeys.supervisorField]).string,
            let record = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
            record["wake"] as? String == "SIGUSR1", let pid = record["pid"] as? Int, pid > 1,
            pid == Int(getppid()) || pid == Int(getpid())
        else { return }
        kill(pid_t(pid), MachineServiceSupervisor.wakeSignal)
    }
}
