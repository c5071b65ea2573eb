import Foundation
import ComponentSpec
import Planning
import ProcessControl
import ServiceLifecycle
import Services
import Testing
import TestSupport

@Suite("Services: detection, instance list, ComfyUI's log")
struct ServicesPlanningTests {
    @Test("nvidia-smi lines, mock GPUs, and a missing nvidia-smi")
    func detection() async {
        let gpus = Hardware.parseNvidiaSMI("0, GPU-aaa, NVIDIA A100-SXM4-80GB, 81920 MiB\n1, GPU-bbb, NVIDIA A100-SXM4-80GB, 81920 MiB\n\n")
        #expect(gpus.map(\.index) == [0, 1])
        #expect(gpus[1].uuid == "GPU-bbb" && gpus[1].memoryTotal == "81920 MiB")
        let mock = await Hardware.detect(environment: ["GPU_MODE": "mock", "MOCK_GPU_NUM": "3"])
        #expect(mock.mode == .mock && mock.gpus.count == 3)
        let none = await Hardware.detect(environment: [:], nvidiaSMI: "no-such-nvidia-smi")
        #expect(none.mode == .cpu && none.gpus.isEmpty && none.note == "nvidia-smi not found")
    }

    @Test("WORKERS=comfyui:1 on 2 GPUs: comfyui-gpu{i} on BASE+i with CUDA_VISIBLE_DEVICES=i; no GPU: one --cpu instance")
    func instances() throws {
        var planner = InstancePlanner(comfyUIDirectory: "/workspace/ComfyUI", python: "/workspace/venv/bin/python")
        planner.basePort = 9100
        planner.extraArguments = ["--preview-method", "auto"]
        let hardware = Hardware(mode: .mock, gpus: (0..<2).map { GPU(index: $0, uuid: "u\($0)", name: "g", memoryTotal: "mock") })
        let list = try planner.instances(hardware: hardware, workers: try WorkersSpec(parsing: "comfyui:1"))
        #expect(list.map(\.name) == ["comfyui-gpu0", "comfyui-gpu1"])
        #expect(list.map(\.port) == [9100, 9101])
        #expect(list.map { $0.environment["CUDA_VISIBLE_DEVICES"] } == ["0", "1"])
        #expect(list[1].arguments == ["main.py", "--listen", "127.0.0.1", "--port", "9101", "--preview-method", "auto"])
        #expect(list[1].workerID == "comfyui-1" && list[1].workingDirectory == "/workspace/ComfyUI")
        let cpu = try planner.instances(hardware: Hardware(mode: .cpu, gpus: []), workers: try WorkersSpec(parsing: "comfyui:1"))
        #expect(cpu.map(\.name) == ["comfyui-cpu"] && cpu[0].arguments.contains("--cpu"))
        #expect(try planner.instances(hardware: hardware, workers: try WorkersSpec(parsing: "other:2")).isEmpty)
        #expect(throws: ServicesError.self) { try WorkersSpec(parsing: "comfyui:x") }
    }

    @Test("ComfyUI's import failure lines name the node and the traceback's last line")
    func importFailures() {
        let log = """
            Traceback (most recent call last):
              File "/w/ComfyUI/nodes.py", line 2131, in load_custom_node
                module_spec.loader.exec_module(module)
              File "/w/ComfyUI/custom_nodes/ComfyUI-Broken/__init__.py", line 1, in <module>
                import missing_package
            ModuleNotFoundError: No module named 'missing_package'

            Cannot import /w/ComfyUI/custom_nodes/ComfyUI-Broken module for custom nodes: No module named 'missing_package'

            Import times for custom nodes:
               0.0 seconds: /w/ComfyUI/custom_nodes/fine
               0.0 seconds (IMPORT FAILED): /w/ComfyUI/custom_nodes/ComfyUI-Broken
               0.0 seconds (IMPORT FAILED): /w/ComfyUI/custom_nodes/other.py
            """
        let failures = ComfyUILog.importFailures(in: log)
        #expect(failures.map(\.node) == ["ComfyUI-Broken", "other"])
        #expect(failures[0].error == "ModuleNotFoundError: No module named 'missing_package'")
    }

    @Test("an instance's log is copied to .1 (older ones shift, at most `keep`) and emptied when it passes its cap")
    func logRotation() throws {
        let folder = try makeTemporaryDirectory("log")
        let path = folder.appendingPathComponent("comfyui-gpu0.log").path
        let log = RotatingLog(path: path, maxBytes: 4096, keep: 2)
        for round in 0..<3 {
            try String(repeating: "\(round)", count: 5000).write(toFile: path, atomically: false, encoding: .utf8)
            #expect(log.rotateIfNeeded())
        }
        #expect(log.size == 0 && !log.rotateIfNeeded())
        #expect(try String(contentsOfFile: path + ".1", encoding: .utf8).hasPrefix("2"))
        #expect(try String(contentsOfFile: path + ".2", encoding: .utf8).hasPrefix("1"))
        #expect(!FileManager.default.fileExists(atPath: path + ".3"))
    }

    @Test("A workflow's class types missing from /object_info are named")
    func missingClassTypes() {
        let readiness = Readiness(nodes: ["good"], classTypes: ["GoodNode", "KSampler", "FancyUpscale", "MagicMask"])
        let info = ["KSampler": "nodes", "GoodNode": "custom_nodes.good"]
        let failure = readiness.judge(objectInfo: info, log: "")
        #expect(failure?.type == "node_type_missing")
        #expect(failure?.message == "The workflows use node types that ComfyUI does not have: FancyUpscale, MagicMask.")
        #expect(Readiness(nodes: ["good"], classTypes: ["GoodNode"]).judge(objectInfo: info, log: "") == nil)
        #expect(Readiness(nodes: ["good", "absent"]).judge(objectInfo: info, log: "")?.node == "absent")
        // ComfyUI keys a module by the folder's whole name, dots included.
        let dotted = ["DotNode": "custom_nodes.comfyui.dotted"]
        #expect(Readiness(nodes: ["comfyui.dotted"]).judge(objectInfo: dotted, log: "") == nil)
        #expect(Readiness(nodes: ["comfyui"]).judge(objectInfo: dotted, log: "")?.node == "comfyui")
    }
}

@Suite("Services: supervised stand-in ComfyUI processes", .serialized)
struct InstanceSupervisorTests {
    func instances(_ comfy: URL, count: Int, base: Int) throws -> [ComfyUIInstance] {
        var planner = InstancePlanner(comfyUIDirectory: comfy.path, python: testPython())
        planner.basePort = base
        let hardware = Hardware(mode: .mock, gpus: (0..<count).map { GPU(index: $0, uuid: "m\($0)", name: "mock", memoryTotal: "mock") })
        return try planner.instances(hardware: hardware, workers: WorkersSpec(parsing: "comfyui:1"))
    }

    func policy(_ comfy: URL, environment: [String: String] = [:]) -> SupervisionPolicy {
        var policy = SupervisionPolicy(logDirectory: comfy.deletingLastPathComponent().appendingPathComponent("logs").path)
        policy.livenessInterval = .milliseconds(300)
        policy.livenessTimeout = .milliseconds(300)
        policy.backoffBase = .milliseconds(100)
        policy.stopTimeout = .seconds(5)
        for (key, value) in environment { policy.environment[key] = value }
        return policy
    }

    /// Runs supervisors in a ServiceGroup until `body` returns, then shuts the group down.
    func running(
        _ supervisors: [InstanceSupervisor], _ body: () async throws -> Void
    ) async throws {
        let group = ServiceGroup(configuration: .init(services: supervisors, gracefulShutdownSignals: [], logger: .init(label: "test")))
        let task = Task { try await group.run() }
        do { try await body() } catch {
            await group.triggerGracefulShutdown()
            _ = await task.result
            throw error
        }
        await group.triggerGracefulShutdown()
        try await task.value
    }

    @Test("mock 2 GPUs: 2 instances on BASE+i serve, each sees its CUDA_VISIBLE_DEVICES; shutdown leaves no process")
    func twoInstances() async throws {
        let comfy = try makeComfyUI(["good": goodNode])
        let base = try freePorts(2)
        let recorder = Recorder()
        let supervisors = try instances(comfy, count: 2, base: base).map {
            InstanceSupervisor(instance: $0, readiness: Readiness(nodes: ["good"], deadlineSeconds: 30), policy: policy(comfy), observer: recorder)
        }
        var pids: Set<Int32> = []
        try await running(supervisors) {
            #expect(await eventually(timeout: .seconds(30)) { supervisors.allSatisfy { $0.status.state == .serving } })
            for (index, supervisor) in supervisors.enumerated() {
                let stats = try await LoopbackHTTP.get(host: "127.0.0.1", port: base + index, path: "/system_stats", timeout: .seconds(5))
                let object = try JSONSerialization.jsonObject(with: Data(stats.body)) as? [String: Any]
                let seen = (object?["stand_in"] as? [String: Any])?["cuda_visible_devices"] as? String
                #expect(seen == String(index), "instance \(index) saw CUDA_VISIBLE_DEVICES=\(seen ?? "nil")")
                #expect(supervisor.status.instance.name == "comfyui-gpu\(index)")
                #expect(recorder.count(supervisor.status.instance.name) { $0 == .connected } == 1)
            }
            pids = recorder.pids()
            #expect(pids.count == 2 && pids.allSatisfy(processExists))
        }
        #expect(!pids.isEmpty && pids.allSatisfy { !processExists($0) }, "still running: \(pids.filter(processExists))")
        #expect(supervisors.allSatisfy { $0.status.state == .stopped })
    }

    @Test("a node whose __init__.py raises: failed, naming the node and the exception; never serving")
    func importFailure() async throws {
        let comfy = try makeComfyUI(["good": goodNode, "broken-node": badNode])
        let base = try freePorts(1)
        let recorder = Recorder()
        let supervisor = InstanceSupervisor(
            instance: try instances(comfy, count: 1, base: base)[0], readiness: Readiness(nodes: ["good", "broken-node"], deadlineSeconds: 30),
            policy: policy(comfy), observer: recorder)
        try await running([supervisor]) {
            #expect(await eventually(timeout: .seconds(30)) { supervisor.status.state == .failed })
        }
        let failure = recorder.failure("comfyui-gpu0")
        #expect(failure?.type == "custom_node_import_failed")
        #expect(failure?.node == "broken-node")
        #expect(failure?.message == "Custom node broken-node failed to import in ComfyUI: ValueError: boom: missing weights file.")
        #expect(recorder.count("comfyui-gpu0") { $0 == .connected } == 0)
    }

    @Test("a crash after serving: degraded, restarted, recovered; a hang likewise")
    func crashAndHang() async throws {
        let comfy = try makeComfyUI(["good": goodNode])
        let control = try makeTemporaryDirectory("control")
        let base = try freePorts(1)
        let recorder = Recorder()
        let supervisor = InstanceSupervisor(
            instance: try instances(comfy, count: 1, base: base)[0], readiness: Readiness(nodes: ["good"], deadlineSeconds: 30),
            policy: policy(comfy, environment: ["FAKE_COMFYUI_CONTROL_DIR": control.path]), observer: recorder)
        try await running([supervisor]) {
            #expect(await eventually(timeout: .seconds(30)) { supervisor.status.state == .serving })
            let first = supervisor.status.pid
            try "crash".write(to: control.appendingPathComponent(String(base)), atomically: true, encoding: .utf8)
            #expect(await eventually(timeout: .seconds(30)) { recorder.count("comfyui-gpu0") { $0 == .recovered } == 1 })
            #expect(supervisor.status.restarts == 1 && supervisor.status.pid != first)
            #expect(supervisor.status.lastExit == "exit status 3")
            try "hang".write(to: control.appendingPathComponent(String(base)), atomically: true, encoding: .utf8)
            #expect(await eventually(timeout: .seconds(30)) { recorder.count("comfyui-gpu0") { $0 == .recovered } == 2 })
        }
        let degraded = recorder.all("comfyui-gpu0").compactMap { event -> String? in
            if case .degraded(let reason) = event { return reason }
            return nil
        }
        #expect(degraded == ["comfyui-gpu0 exited (exit status 3)", "comfyui-gpu0 stopped answering /system_stats"])
        #expect(recorder.count("comfyui-gpu0") { $0 == .connected } == 1)
    }

    @Test("a slow start is waited for: starting, then serving, with the probes spaced out meanwhile")
    func slowStart() async throws {
        let comfy = try makeComfyUI(["good": goodNode])
        let base = try freePorts(1)
        let recorder = Recorder()
        let supervisor = InstanceSupervisor(
            instance: try instances(comfy, count: 1, base: base)[0], readiness: Readiness(nodes: ["good"], deadlineSeconds: 60),
            policy: policy(comfy, environment: ["FAKE_COMFYUI_START_DELAY": "2"]), observer: recorder)
        let clock = ContinuousClock()
        let started = clock.now
        var waited = Duration.zero
        try await running([supervisor]) {
            #expect(await eventually { supervisor.status.pid != nil })
            #expect(supervisor.status.state == .starting)
            #expect(await eventually(timeout: .seconds(60)) { supervisor.status.state == .serving })
            waited = clock.now - started
        }
        // At most two requests in any second, however long the start took (a rate, not a time limit).
        let seconds = Int((waited / .seconds(1)).rounded(.up))
        #expect(supervisor.requestCount >= 2 && supervisor.requestCount <= 2 * seconds, "\(supervisor.requestCount) requests in \(waited)")
        #expect(recorder.failure("comfyui-gpu0") == nil)
    }

    @Test("a port already taken: one clear sentence, no process started")
    func portTaken() async throws {
        let comfy = try makeComfyUI(["good": goodNode])
        let base = try freePorts(1)
        let squatter = try startPython(
            "import socket,time\ns=socket.socket()\ns.bind(('127.0.0.1',\(base)))\ns.listen()\nprint('listening',flush=True)\ntime.sleep(120)\n")
        defer { squatter.terminate() }
        #expect(await eventually { squatter.output.contains("listening") })
        let recorder = Recorder()
        let supervisor = InstanceSupervisor(
            instance: try instances(comfy, count: 1, base: base)[0], readiness: Readiness(deadlineSeconds: 30), policy: policy(comfy), observer: recorder)
        try await running([supervisor]) {
            #expect(await eventually(timeout: .seconds(30)) { supervisor.status.state == .failed })
        }
        #expect(recorder.failure("comfyui-gpu0")?.message
            == "Port \(base) on 127.0.0.1 for comfyui-gpu0 is already in use by another process; stop it or choose another base port (--comfyui-base-port).")
        #expect(recorder.pids().isEmpty)
    }

    @Test("a workflow node type missing from /object_info is named; a server that never answers fails at the deadline")
    func missingTypeAndDeadline() async throws {
        let comfy = try makeComfyUI(["good": goodNode])
        let base = try freePorts(2)
        let recorder = Recorder()
        let list = try instances(comfy, count: 2, base: base)
        let missing = InstanceSupervisor(
            instance: list[0], readiness: Readiness(nodes: ["good"], classTypes: ["GoodNode", "UltimateSDUpscale"], deadlineSeconds: 30),
            policy: policy(comfy), observer: recorder)
        let hung = InstanceSupervisor(
            instance: list[1], readiness: Readiness(nodes: ["good"], deadlineSeconds: 2), policy: policy(comfy, environment: ["FAKE_COMFYUI_HANG": "1"]),
            observer: recorder)
        try await running([missing, hung]) {
            #expect(await eventually(timeout: .seconds(30)) { missing.status.state == .failed && hung.status.state == .failed })
        }
        #expect(recorder.failure("comfyui-gpu0")?.message == "The workflows use node type that ComfyUI does not have: UltimateSDUpscale.")
        #expect(recorder.failure("comfyui-gpu1")?.message == "comfyui-gpu1 listens on port \(base + 1) but did not answer /system_stats and /object_info within 2 s.")
        #expect(recorder.pids().allSatisfy { !processExists($0) })
    }
}

@Suite("Services: the plan's services job and the CLI's dry run")
struct ServicesPlanTests {
    @Test("PlanBuilder appends a services job after every other job, with the nodes and the workflows' class types")
    func planJob() throws {
        let lock = Lockfile(
            comfyui: LockedRepository(url: "https://example.invalid/ComfyUI.git", commit: String(repeating: "a", count: 40)),
            customNodes: [LockedNode(name: "ComfyUI-KJNodes", url: "https://example.invalid/kj.git", commit: String(repeating: "b", count: 40))],
            workflows: [LockedWorkflow(name: "w", sha256: String(repeating: "c", count: 64), format: .api, nodes: ["ImageResizeKJ"], models: [])])
        var builder = PlanBuilder(planID: "p", machineID: "m")
        #expect(!PlanBuilder.encode(builder.plan(for: lock)).contains(#""kind" : "services""#))
        builder.services = PlanBuilder.ServicesJob(deadlineSeconds: 90)
        let plan = builder.plan(for: lock)
        guard case .array(let jobs)? = plan["jobs"], case .object(let last)? = jobs.last else {
            Issue.record("no jobs")
            return
        }
        #expect(last["kind"] == .string("services"))
        let others = jobs.dropLast().compactMap { job -> String? in
            if case .string(let id)? = job["id"] { return id }
            return nil
        }
        #expect(last["depends_on"] == .array(others.map { .string($0) }))
        #expect(last["payload"] == .object([
            "nodes": .array([.string("ComfyUI-KJNodes")]), "class_types": .array([.string("ImageResizeKJ")]), "deadline_s": .number(90),
        ]))
    }

    @Test("provision plan --with-services ends the plan with the services job")
    func planCommand() async throws {
        let manifest = packageRoot().appendingPathComponent("protocols/examples/manifest-sample.json").path
        let result = try await run(provisionExecutable(), ["plan", manifest, "--with-services", "--services-deadline", "120"])
        #expect(result.status == 0, "\(result.output)")
        let plan = try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any]
        let jobs = plan?["jobs"] as? [[String: Any]] ?? []
        #expect(jobs.last?["kind"] as? String == "services")
        #expect((jobs.last?["depends_on"] as? [String])?.count == jobs.count - 1)
        #expect((jobs.last?["payload"] as? [String: Any])?["deadline_s"] as? Double == 120)
    }

    @Test("provision services --dry-run prints the instances of 2 mock GPUs")
    func dryRun() async throws {
        let result = try await run(
            provisionExecutable(), ["services", "--dry-run", "--workspace", "/srv/ws", "--comfyui-base-port", "9300"],
            environment: ["GPU_MODE": "mock", "MOCK_GPU_NUM": "2", "WORKERS": "comfyui:1", "COMFYUI_ARGS": "--lowvram"])
        #expect(result.status == 0, "\(result.output)")
        #expect(result.output.contains("hardware: mock, 2 GPU(s)"))
        #expect(result.output.contains("comfyui-gpu1:\n  gpu: 1\n  port: 9301\n  cwd: /srv/ws/ComfyUI\n  command: /srv/ws/venv/bin/python main.py --listen 127.0.0.1 --port 9301 --lowvram\n  env: CUDA_VISIBLE_DEVICES=1 PYTHONUNBUFFERED=1\n  worker: comfyui-1"), "\(result.output)")
    }
}

@Suite("Services: a ComfyUI left running by a killed supervisor", .serialized)
struct LeftoverTests {
    @Test("the next supervisor stops the instance named in its pid file, then serves on the port")
    func leftover() async throws {
        let comfy = try makeComfyUI(["good": goodNode])
        let base = try freePorts(1)
        var planner = InstancePlanner(comfyUIDirectory: comfy.path, python: testPython())
        planner.basePort = base
        let instance = try planner.instances(hardware: Hardware(mode: .mock, gpus: [GPU(index: 0, uuid: "u", name: "m", memoryTotal: "m")]), workers: WorkersSpec(parsing: "comfyui:1"))[0]
        var policy = SupervisionPolicy(logDirectory: comfy.deletingLastPathComponent().appendingPathComponent("logs").path)
        policy.stopTimeout = .seconds(5)
        try FileManager.default.createDirectory(atPath: policy.logDirectory, withIntermediateDirectories: true)
        // What a SIGKILLed supervisor leaves: its instance still running, and its pid file.
        let orphan = try ChildProcess(testPython(), instance.arguments, workingDirectory: comfy.path)
        defer { _ = orphan.stop(grace: .seconds(1)) }
        #expect(await eventually { await LoopbackHTTP.isListening(host: "127.0.0.1", port: base) })
        try "\(orphan.pid)\n".write(toFile: policy.logDirectory + "/comfyui-gpu0.pid", atomically: true, encoding: .utf8)

        let recorder = Recorder()
        let supervisor = InstanceSupervisor(instance: instance, readiness: Readiness(nodes: ["good"], deadlineSeconds: 30), policy: policy, observer: recorder)
        let group = ServiceGroup(configuration: .init(services: [supervisor], gracefulShutdownSignals: [], logger: .init(label: "test")))
        let task = Task { try await group.run() }
        #expect(await eventually(timeout: .seconds(30)) { supervisor.status.state == .serving || supervisor.status.state == .failed })
        #expect(supervisor.status.state == .serving, "\(String(describing: supervisor.status.failure))")
        #expect(!orphan.isRunning)
        #expect(supervisor.status.pid != orphan.pid)
        await group.triggerGracefulShutdown()
        try await task.value
        #expect(!FileManager.default.fileExists(atPath: policy.logDirectory + "/comfyui-gpu0.pid"))
    }
}
