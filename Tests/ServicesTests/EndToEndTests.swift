import Foundation
import ProcessControl
import RedisClient
import Services
import Testing
import TestSupport

/// `provision worker` / `provision up` with a real redis-server and the stand-in ComfyUI: the
/// services job, the flip, the fleet, the health server, SIGTERM.
@Suite("Services end to end: provision worker/up, Redis, stand-in ComfyUI", .serialized)
struct ServicesEndToEndTests {
    let base = "provision:{m1}"

    func plan(_ id: String, nodes: [String], classTypes: [String] = []) -> String {
        var payload: [String: Any] = ["nodes": nodes, "deadline_s": 30]
        if !classTypes.isEmpty { payload["class_types"] = classTypes }
        let plan: [String: Any] = [
            "version": 1, "plan_id": id,
            "jobs": [
                ["id": "node:install", "kind": "noop", "payload": [String: Any]()],
                ["id": "services", "kind": "services", "payload": payload, "depends_on": ["node:install"]],
            ],
        ]
        return String(decoding: try! JSONSerialization.data(withJSONObject: plan), as: UTF8.self)
    }

    func fleetTypes(_ client: RedisClient) async throws -> [String] {
        let entries = try await client.send("XRANGE", "provision:fleet:events", "-", "+").array ?? []
        return entries.compactMap { entry -> String? in
            guard let fields = entry.array?.last?.array?.compactMap(\.string) else { return nil }
            return stride(from: 0, to: fields.count - 1, by: 2).first { fields[$0] == "type" }.map { fields[$0 + 1] }
        }
    }

    func records(_ client: RedisClient, _ key: String) async throws -> [String: [String: Any]] {
        let hash = try await client.send("HGETALL", key).hash ?? [:]
        return hash.compactMapValues { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    @Test("worker: mock 2 GPUs serve, machine_ready once; a crash and a hang are machine_degraded then machine_recovered, /health 503 meanwhile; SIGTERM leaves no process")
    func workerLifecycle() async throws {
        let redis = try await TestRedis()
        defer { redis.stop() }
        let client = try redis.client()
        let comfy = try makeComfyUI(["good": goodNode])
        let control = try makeTemporaryDirectory("control")
        let ports = try freePorts(2)
        let healthPort = try freeLoopbackPort()
        let planFile = comfy.deletingLastPathComponent().appendingPathComponent("plan.json")
        try plan("p1", nodes: ["good"], classTypes: ["GoodNode", "KSampler"]).write(to: planFile, atomically: true, encoding: .utf8)
        let environment = [
            "REDIS_URL": redis.url, "MACHINE_ID": "m1", "GPU_MODE": "mock", "MOCK_GPU_NUM": "2", "WORKERS": "comfyui:1",
            "FAKE_COMFYUI_CONTROL_DIR": control.path,
        ]
        let worker = try TestProcess.provision(
            ["worker", "--processes", "1", "--health-port", String(healthPort), "--workspace", comfy.deletingLastPathComponent().path,
             "--comfyui-python", testPython(), "--comfyui-base-port", String(ports), "--liveness-interval", "0.3", "--service-stop-timeout", "3",
             // No look at Redis for the request in the test's time: the services job's signal must wake it.
             "--services-look-interval", "3600",
             "--services-log-dir", comfy.deletingLastPathComponent().appendingPathComponent("logs").path],
            environment: environment)
        defer { worker.terminate() }
        let enqueued = try await run(provisionExecutable(), ["enqueue", "--plan", planFile.path], environment: environment)
        #expect(enqueued.status == 0, "\(enqueued.output)")

        let ready = await eventually(timeout: .seconds(60)) { (try? await client.send("HGET", base + ":status", "state").string) == "ready" }
        #expect(ready, "\(worker.output)")
        let instances = try await records(client, base + ":services")
        #expect(instances["comfyui-gpu0"]?["state"] as? String == "serving" && instances["comfyui-gpu1"]?["state"] as? String == "serving")
        #expect(instances["comfyui-gpu1"]?["port"] as? Int == ports + 1)
        let workers = try await records(client, base + ":comfyui-workers")
        #expect(workers.keys.sorted() == ["comfyui-0", "comfyui-1"])
        #expect(workers["comfyui-1"]?["connectors"] as? [String] == ["comfyui"] && workers["comfyui-1"]?["gpu"] as? Int == 1)
        #expect(workers["comfyui-0"]?["machine_id"] as? String == "m1" && workers["comfyui-0"]?["status"] as? String == "ready")
        let stats = try await LoopbackHTTP.get(host: "127.0.0.1", port: ports + 1, path: "/system_stats", timeout: .seconds(5))
        #expect(stats.text.contains(#""cuda_visible_devices": "1""#))
        #expect(await eventually { (try? await httpGet("http://127.0.0.1:\(healthPort)/health").status) == 200 })
        let metrics = try await httpGet("http://127.0.0.1:\(healthPort)/metrics").body
        #expect(metrics.contains(#"provision_comfyui_up{instance="comfyui-gpu1",gpu="1",port="\#(ports + 1)"} 1"#), "\(metrics)")
        let listed = try await run(provisionExecutable(), ["services"], environment: environment)
        #expect(listed.status == 0 && listed.output.contains("comfyui-gpu1") && listed.output.contains("serving"), "\(listed.output)")
        #expect(try await fleetTypes(client) == ["machine_ready"])

        // A crash after ready: degraded, restarted, recovered; the machine stays ready, announced once.
        try "crash".write(to: control.appendingPathComponent(String(ports)), atomically: true, encoding: .utf8)
        let recovered = await eventually(timeout: .seconds(60)) { (try? await fleetTypes(client)) == ["machine_ready", "machine_degraded", "machine_recovered"] }
        let types = try await fleetTypes(client)
        #expect(recovered, "\(types)")
        let after = try await records(client, base + ":services")
        #expect(after["comfyui-gpu0"]?["restarts"] as? Int == 1 && after["comfyui-gpu0"]?["state"] as? String == "serving")
        #expect(try await client.send("HGET", base + ":status", "state").string == "ready")

        // A hang (SIGSTOP): /health says degraded (503) until the instance is replaced and serves again.
        let frozenPID = try #require(after["comfyui-gpu1"]?["pid"] as? Int)
        let frozen = Int32(frozenPID)
        kill(frozen, SIGSTOP)
        let unhealthy = await eventually(timeout: .seconds(30), every: .milliseconds(20)) {
            guard let answer = try? await httpGet("http://127.0.0.1:\(healthPort)/health") else { return false }
            return answer.status == 503 && answer.body.contains(#""status":"degraded""#) && answer.body.contains("comfyui-gpu1 is restarting")
        }
        #expect(unhealthy)
        #expect(await eventually(timeout: .seconds(60)) {
            (try? await fleetTypes(client)) == ["machine_ready", "machine_degraded", "machine_recovered", "machine_degraded", "machine_recovered"]
        })
        #expect(await eventually { (try? await httpGet("http://127.0.0.1:\(healthPort)/health").status) == 200 })
        #expect(!processExists(frozen))
        let replaced = try await records(client, base + ":services")

        // The runtime steps are in the machine's event stream, each valid against event.schema.json.
        let events = try await run(provisionExecutable(), ["events", "--format", "json"], environment: environment)
        let lines = events.output.split(separator: "\n").map(String.init).filter { $0.hasPrefix("{") }
        for name in ["machine.pm2.hardware.detect", "machine.comfyui.service.start", "machine.comfyui.server.complete",
                     "machine.worker.connection.start", "machine.comfyui.service.degraded", "machine.comfyui.service.recovered"] {
            #expect(lines.contains { $0.contains("\"event\":\"\(name)\"") }, "\(name)")
        }
        let (valid, report) = try await validateJSONLines(lines, schema: "event.schema.json")
        #expect(valid, "\(report)")

        // SIGTERM: every ComfyUI process ends with the worker (checked by pid).
        let pids = replaced.filter { $0.key != "_supervisor" }.values.compactMap { $0["pid"] as? Int }.map(Int32.init)
        #expect(pids.count == 2 && pids.allSatisfy(processExists))
        worker.signal(SIGTERM)
        #expect(await worker.wait(timeout: .seconds(60)) == 0, "\(worker.output)")
        #expect(pids.allSatisfy { !processExists($0) }, "still running: \(pids.filter(processExists))")
    }

    @Test("up: a node whose __init__.py raises fails the machine naming it and the exception; no machine_ready")
    func importFailureFailsMachine() async throws {
        let redis = try await TestRedis()
        defer { redis.stop() }
        let client = try redis.client()
        let comfy = try makeComfyUI(["good": goodNode, "broken-node": badNode])
        let ports = try freePorts(2)
        let planFile = comfy.deletingLastPathComponent().appendingPathComponent("plan.json")
        try plan("p2", nodes: ["good", "broken-node"]).write(to: planFile, atomically: true, encoding: .utf8)
        let environment = ["MACHINE_ID": "m1", "GPU_MODE": "mock", "MOCK_GPU_NUM": "2"]
        let up = try await run(
            provisionExecutable(),
            ["up", "--redis", redis.url, "--plan", planFile.path, "--processes", "1", "--health-port", "0",
             "--workspace", comfy.deletingLastPathComponent().path, "--comfyui-python", testPython(),
             "--comfyui-base-port", String(ports), "--services-log-dir", comfy.deletingLastPathComponent().appendingPathComponent("logs").path],
            environment: environment)
        #expect(up.status == 1, "\(up.output)")
        #expect(up.output.contains("✗ services: custom_node_import_failed: Custom node broken-node failed to import in ComfyUI: ValueError: boom: missing weights file."), "\(up.output)")
        #expect(try await client.send("HGET", base + ":status", "state").string == "failed")
        #expect(try await fleetTypes(client) == ["machine_failed"])
        let events = try await client.send("XRANGE", base + ":events", "-", "+").array ?? []
        let failures = events.compactMap { $0.array?.last?.array?.last?.string }.filter {
            $0.contains(#""event":"machine.step.failure""#) && $0.contains(#""step_number":19"#) && $0.contains(#""node":"broken-node""#)
        }
        #expect(!failures.isEmpty)
    }
}
