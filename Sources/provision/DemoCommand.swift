import ArgumentParser
import Downloader
import Fixtures
import Foundation
import ComponentSpec
import Planning
import RedisClient
import RedisServerProcess
import Services

struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Provision a sample machine end to end with no network: a private Redis, a loopback origin serving model files, local git repositories for ComfyUI and custom nodes, workers, ready.")

    @OptionGroup var queue: QueueOptions
    @OptionGroup var pool: PoolOptions
    @OptionGroup var telemetry: TelemetryOptions
    @OptionGroup var health: HealthOptions
    @OptionGroup var services: ServicesOptions

    @Option(help: "Where the demo keeps its Redis, origin files, repositories and workspace.")
    var stateDir: String?

    @Option(help: "Total size of the generated model files, in MiB.")
    var modelsMib = 288

    @Option(help: "Per-connection rate cap of the origin, in MiB/s (like a CDN's), so that parallel chunks matter.")
    var rateMib = 24

    func validate() throws {
        guard (4...8192).contains(modelsMib) else { throw ValidationError("--models-mib must be between 4 and 8192.") }
        guard (1...10_000).contains(rateMib) else { throw ValidationError("--rate-mib must be between 1 and 10000.") }
    }

    func run() async throws {
        try await reportingErrors {
            let environment = ProcessInfo.processInfo.environment
            let base = stateDir ?? environment["PROVISION_STATE_DIR"].map { $0 + "/demo" }
                ?? ((environment["XDG_STATE_HOME"] ?? (NSHomeDirectory() + "/.local/state")) + "/provision/demo")
            let root = URL(fileURLWithPath: base)
            let fixtures = DemoFixtures(root: root, modelsMiB: modelsMib)
            say("preparing the demo in \(root.path)")
            let models = try fixtures.models()
            let repositories = try await fixtures.repositories()
            let origin = try await LoopbackOrigin.nginx(root: root.appendingPathComponent("origin"), prefix: root.appendingPathComponent("nginx"), rateMiB: rateMib)
            defer { origin.stop() }
            say("loopback origin on http://127.0.0.1:\(origin.port) (nginx, \(rateMib) MiB/s per connection); \(models.count) model files, \(formatBytes(models.reduce(0) { $0 + $1.size }))")

            // A fresh workspace each run, so the demo shows the whole bootstrap.
            let workspace = root.appendingPathComponent("workspace")
            try? FileManager.default.removeItem(at: workspace)
            let spec = Spec(
                comfyui: ComfyUISource(url: repositories.comfyUI, tag: "v0.3.0"),
                customNodes: repositories.nodes.enumerated().map { index, node in
                    CustomNode(name: node.name, url: node.url, branch: index == 0 ? "main" : nil, requirements: true,
                               env: index == 1 ? ["DEMO_REGION": "${DEMO_REGION}"] : nil, installOrder: index < 2 ? index + 1 : nil)
                },
                models: models.map { ModelFile(url: "http://127.0.0.1:\(origin.port)/\($0.name)", directory: $0.directory, filename: $0.name, sha256: $0.sha256, size: $0.size) })
            var builder = PlanBuilder(planID: "demo-\(Int(Date().timeIntervalSince1970 * 1000))", machineID: (try? queue.machineID) ?? "local", source: "provision demo")
            // The demo ends like a real machine: ComfyUI (the stand-in) must serve every node before ready.
            builder.services = PlanBuilder.ServicesJob(deadlineSeconds: 60)
            let plan = builder.plan(for: spec)
            var services = self.services
            if services.comfyuiBasePort == nil && environment["COMFYUI_BASE_PORT"] == nil {
                // Another ComfyUI (or demo) may hold 8188 on this machine: take free loopback ports.
                services.comfyuiBasePort = try Self.freeBasePort(count: 8)
            }
            var pool = self.pool
            pool.executors = try ExecutorOptions.parse([
                "--workspace", workspace.path, "--allow-local-sources", "--allow-loopback-origins",
                "--download-connections", "8", "--expose-env", "DEMO_REGION",
            ])
            setenv("DEMO_REGION", environment["DEMO_REGION"] ?? "demo-region-1", 0)
            let started = Date()
            try await bringUp(
                queue: queue, pool: pool, telemetry: telemetry, health: health, planJSON: PlanBuilder.encode(plan, pretty: false),
                stateDir: root.path, timeout: 600, serve: false, healthRequired: false, servicesOptions: services)
            let seconds = Date().timeIntervalSince(started)
            let bytes = models.reduce(0) { $0 + $1.size }
            say(String(format: "demo: ComfyUI, %d custom nodes and %d model files (%@) ready in %.1f s; workspace: %@", repositories.nodes.count, models.count, formatBytes(bytes), seconds, workspace.path))
        }
    }

    /// A port with `count` free loopback ports from it on.
    static func freeBasePort(count: Int) throws -> Int {
        for _ in 0..<50 {
            let base = try LocalRedisServer.freeLoopbackPort()
            if base + count < 65535, (0..<count).allSatisfy({ LoopbackHTTP.canBind(host: "127.0.0.1", port: base + $0) }) { return base }
        }
        throw UserFacingError(message: "No free loopback ports for the demo's ComfyUI.")
    }
}

/// What the demo serves and clones: generated model files and local git repositories, made once
/// and reused by later runs.
struct DemoFixtures {
    let root: URL
    let modelsMiB: Int

    struct Model {
        var name: String
        var directory: String
        var size: Int64
        var sha256: String
    }

    struct Repositories {
        var comfyUI: String
        var nodes: [(name: String, url: String)]
    }

    /// Pseudo-random files (so nothing compresses) whose sizes split the total 1 : 2 : 3 : 4 : 6.
    func models() throws -> [Model] {
        let folder = root.appendingPathComponent("origin")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let shares: [(String, String, Int)] = [
            ("demo-vae.safetensors", "vae", 1), ("demo-lora.safetensors", "loras", 2),
            ("demo-controlnet.safetensors", "controlnet", 3), ("demo-upscaler.pth", "upscale_models", 4),
            ("demo-checkpoint.safetensors", "checkpoints", 6),
        ]
        let unit = Int64(modelsMiB) * (1 << 20) / 16
        var result: [Model] = []
        for (index, (name, directory, share)) in shares.enumerated() {
            let size = unit * Int64(share) + Int64(index * 4099)  // not a multiple of any chunk size
            let path = folder.appendingPathComponent(name).path
            let sidecar = path + ".sha256"
            if let known = try? String(contentsOfFile: sidecar, encoding: .utf8), fileSize(path) == size {
                result.append(Model(name: name, directory: directory, size: size, sha256: known))
                continue
            }
            var hasher = SHA256Hasher()
            try PseudoRandomBytes.write(path, size: size, seed: UInt64(index + 1)) { hasher.update($0) }
            let sha = hasher.finalize()
            try sha.write(toFile: sidecar, atomically: true, encoding: .utf8)
            result.append(Model(name: name, directory: directory, size: size, sha256: sha))
        }
        return result
    }

    /// ComfyUI and six custom nodes as bare repositories (one with a submodule, one with install.py).
    func repositories() async throws -> Repositories {
        // repos-2: the demo's ComfyUI became the stand-in and its nodes got node classes; older caches lack both.
        let folder = root.appendingPathComponent("repos-2")
        let names = ["ComfyUI-Manager", "ComfyUI-Impact-Pack", "was-node-suite-comfyui", "ComfyUI-KJNodes", "rgthree-comfy", "ComfyUI-VideoHelperSuite"]
        let core = try await bareRepo(folder, "ComfyUI", files: ["main.py": StandInComfyUI.source, "requirements.txt": "# the demo keeps ComfyUI's requirements empty: no network\n", "models/checkpoints/put_checkpoints_here": ""], tag: "v0.3.0")
        var nodes: [(String, String)] = []
        for (index, name) in names.enumerated() {
            let node = "Demo" + name.filter { $0.isLetter || $0.isNumber }
            var files = ["__init__.py": "class \(node):\n    pass\n\nNODE_CLASS_MAPPINGS = {\"\(node)\": \(node)}\n", "README.md": "# \(name) (demo)\n"]
            if index == 2 { files["install.py"] = "import pathlib\npathlib.Path('installed.flag').write_text('ok')\n" }
            nodes.append((name, try await bareRepo(folder, name, files: files, tag: nil)))
        }
        return Repositories(comfyUI: core, nodes: nodes)
    }

    private func bareRepo(_ folder: URL, _ name: String, files: [String: String], tag: String?) async throws -> String {
        let bare = folder.appendingPathComponent("\(name).git").path
        if FileManager.default.fileExists(atPath: bare + "/HEAD") { return "file://" + bare }
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        return try await makeGitRepo(in: folder, name: name, commits: [files], tags: tag.map { [$0: 0] } ?? [:], identity: .demo).url
    }

    private func fileSize(_ path: String) -> Int64 {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.int64Value ?? -1
    }
}
