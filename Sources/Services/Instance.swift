import Foundation

/// One ComfyUI process to run: what the seed's PM2 ecosystem file held per `comfyui-gpu{i}` app.
package struct ComfyUIInstance: Sendable, Equatable, Codable {
    /// `comfyui-gpu{i}` (`comfyui-cpu` without a GPU).
    package var name: String
    /// The instance's number, also its worker id's (`comfyui-{index}`).
    package var index: Int
    /// The GPU it is bound to; nil for the CPU instance.
    package var gpu: Int?
    package var host: String
    package var port: Int
    package var executable: String
    package var arguments: [String]
    package var workingDirectory: String
    /// Set on top of the supervisor's own environment (`CUDA_VISIBLE_DEVICES`).
    package var environment: [String: String]

    /// The worker the seed registered for this instance (`comfyui-0`).
    package var workerID: String { "comfyui-\(index)" }

    enum CodingKeys: String, CodingKey {
        case name, index, gpu, host, port, executable, arguments, workingDirectory = "cwd", environment = "env"
    }
}

/// Turns the hardware and `WORKERS` into the instance list (steps 10 and 13).
package struct InstancePlanner: Sendable {
    /// The workspace's ComfyUI folder (main.py, custom_nodes/).
    package var comfyUIDirectory: String
    /// The workspace venv's python.
    package var python: String
    /// main.py, relative to `comfyUIDirectory` or absolute (tests point it at the stand-in).
    package var mainScript = "main.py"
    package var host = "127.0.0.1"
    package var basePort = 8188
    /// `COMFYUI_ARGS`, split on spaces.
    package var extraArguments: [String] = []

    package init(comfyUIDirectory: String, python: String) {
        self.comfyUIDirectory = comfyUIDirectory
        self.python = python
    }

    /// One instance per GPU and per `comfyui` count of `WORKERS`; one `--cpu` instance without GPUs.
    package func instances(hardware: Hardware, workers: WorkersSpec) throws(ServicesError) -> [ComfyUIInstance] {
        let perGPU = workers.comfyUIPerGPU
        guard perGPU > 0 else { return [] }
        var result: [ComfyUIInstance] = []
        if hardware.gpus.isEmpty {
            result.append(make(name: "comfyui-cpu", index: 0, gpu: nil))
        } else {
            for gpu in hardware.gpus {
                for copy in 0..<perGPU {
                    let index = result.count
                    let name = perGPU == 1 ? "comfyui-gpu\(gpu.index)" : "comfyui-gpu\(gpu.index)-\(copy)"
                    result.append(make(name: name, index: index, gpu: gpu.index))
                }
            }
        }
        guard let last = result.last, last.port <= 65535, basePort > 0 else { throw .invalidBasePort(basePort) }
        return result
    }

    private func make(name: String, index: Int, gpu: Int?) -> ComfyUIInstance {
        var arguments = [mainScript, "--listen", host, "--port", String(basePort + index)]
        if gpu == nil && !extraArguments.contains("--cpu") { arguments.append("--cpu") }
        arguments += extraArguments
        var environment: [String: String] = [:]
        // Without a GPU no device is visible, so a stray CUDA_VISIBLE_DEVICES cannot leak in.
        environment["CUDA_VISIBLE_DEVICES"] = gpu.map(String.init) ?? ""
        // Python buffers a redirected stdout: import failures and "To see the GUI" must reach the log
        // before the probe judges the instance by it.
        environment["PYTHONUNBUFFERED"] = "1"
        return ComfyUIInstance(
            name: name, index: index, gpu: gpu, host: host, port: basePort + index, executable: python,
            arguments: arguments, workingDirectory: comfyUIDirectory, environment: environment)
    }

    /// The instance list as the seed's ecosystem file showed it, for `provision services --dry-run`.
    package static func describe(_ instances: [ComfyUIInstance], hardware: Hardware) -> String {
        var lines = ["hardware: \(hardware.mode.rawValue), \(hardware.gpus.count) GPU(s)" + (hardware.note.map { " (\($0))" } ?? "")]
        for instance in instances {
            lines.append("\(instance.name):")
            lines.append("  gpu: \(instance.gpu.map(String.init) ?? "none (--cpu)")")
            lines.append("  port: \(instance.port)")
            lines.append("  cwd: \(instance.workingDirectory)")
            lines.append("  command: \(([instance.executable] + instance.arguments).joined(separator: " "))")
            lines.append("  env: " + instance.environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
            lines.append("  worker: \(instance.workerID) (connectors [\"comfyui\"])")
        }
        if instances.isEmpty { lines.append("no ComfyUI instance (WORKERS names no comfyui)") }
        return lines.joined(separator: "\n")
    }
}
