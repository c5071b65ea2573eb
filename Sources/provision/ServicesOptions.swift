import ArgumentParser
import Foundation
import Services

/// How the machine's ComfyUI instances run (steps 9-13, 19-21).
struct ServicesOptions: ParsableArguments {
    @Flag(inversion: .prefixedNo, help: "Run ComfyUI instances when a plan's services job asks for them (env PROVISION_SERVICES=0 turns it off).")
    var services = true

    @Option(help: "Port of the first ComfyUI instance; instance i listens on BASE+i (env COMFYUI_BASE_PORT, default 8188).")
    var comfyuiBasePort: Int?

    @Option(help: "Address ComfyUI listens on (env COMFYUI_LISTEN, default 127.0.0.1).")
    var comfyuiListen: String?

    @Option(help: "Extra arguments for every ComfyUI instance, split on spaces (env COMFYUI_ARGS).")
    var comfyuiArgs: String?

    @Option(help: "The Python that runs ComfyUI (env PROVISION_COMFYUI_PYTHON; default the workspace venv's).")
    var comfyuiPython: String?

    @Option(help: "ComfyUI's folder (default WORKSPACE/ComfyUI).")
    var comfyuiDir: String?

    @Option(help: "ComfyUI's main script, relative to its folder or absolute (env PROVISION_COMFYUI_MAIN, default main.py).")
    var comfyuiMain: String?

    @Option(help: "Folder of the instances' log files (default STATE_DIR/services; env PROVISION_SERVICES_LOG_DIR).")
    var servicesLogDir: String?

    @Option(help: "Seconds between liveness probes of a serving instance (default 5).")
    var livenessInterval: Double = 5

    @Option(help: "Seconds an instance may take to drain on SIGTERM before SIGKILL (default 10).")
    var serviceStopTimeout: Double = 10

    @Option(help: "Seconds between an idle supervisor's looks for a services request when no services job woke it (default 30; a job in one of this process's workers wakes it at once, so this is only a fallback).")
    var servicesLookInterval: Double = 30

    func validate() throws {
        if let port = comfyuiBasePort, !(1...65535).contains(port) {
            throw ValidationError("--comfyui-base-port must be between 1 and 65535.")
        }
        guard (0.1...3600).contains(livenessInterval) else { throw ValidationError("--liveness-interval must be between 0.1 and 3600 seconds.") }
        guard (0.1...86400).contains(servicesLookInterval) else { throw ValidationError("--services-look-interval must be between 0.1 and 86400 seconds.") }
        guard (0.1...600).contains(serviceStopTimeout) else { throw ValidationError("--service-stop-timeout must be between 0.1 and 600 seconds.") }
    }

    var enabled: Bool { services && ProcessInfo.processInfo.environment["PROVISION_SERVICES"] != "0" }

    /// The planner of instance commands, for a workspace.
    func planner(workspace: String) throws -> InstancePlanner {
        let environment = ProcessInfo.processInfo.environment
        var planner = InstancePlanner(
            comfyUIDirectory: comfyuiDir ?? workspace + "/ComfyUI",
            python: Self.setting(comfyuiPython, "PROVISION_COMFYUI_PYTHON") ?? workspace + "/venv/bin/python")
        if let main = Self.setting(comfyuiMain, "PROVISION_COMFYUI_MAIN") { planner.mainScript = main }
        planner.host = Self.setting(comfyuiListen, "COMFYUI_LISTEN") ?? "127.0.0.1"
        if let text = environment["COMFYUI_BASE_PORT"], comfyuiBasePort == nil {
            guard let port = Int(text), (1...65535).contains(port) else { throw ValidationError("COMFYUI_BASE_PORT must be a port number.") }
            planner.basePort = port
        } else if let comfyuiBasePort {
            planner.basePort = comfyuiBasePort
        }
        planner.extraArguments = (Self.setting(comfyuiArgs, "COMFYUI_ARGS") ?? "").split(separator: " ").map(String.init)
        return planner
    }

    /// `WORKERS`, or one ComfyUI per GPU when unset.
    func workers() throws -> WorkersSpec {
        let text = ProcessInfo.processInfo.environment["WORKERS"] ?? ""
        return text.isEmpty ? WorkersSpec(entries: [("comfyui", 1)]) : try WorkersSpec(parsing: text)
    }

    func logDirectory(stateDir: String?) -> String {
        let environment = ProcessInfo.processInfo.environment
        if let given = Self.setting(servicesLogDir, "PROVISION_SERVICES_LOG_DIR") { return given }
        let base = stateDir ?? environment["PROVISION_STATE_DIR"]
            ?? ((environment["XDG_STATE_HOME"] ?? (NSHomeDirectory() + "/.local/state")) + "/provision")
        return base + "/services"
    }

    /// An option's value when given, else the environment variable's when set and not empty.
    private static func setting(_ option: String?, _ variable: String) -> String? {
        if let option { return option }
        guard let value = ProcessInfo.processInfo.environment[variable], !value.isEmpty else { return nil }
        return value
    }

    func policy(logDirectory: String) -> SupervisionPolicy {
        var policy = SupervisionPolicy(logDirectory: logDirectory)
        policy.livenessInterval = .milliseconds(Int(livenessInterval * 1000))
        policy.livenessTimeout = min(.seconds(3), max(.milliseconds(200), policy.livenessInterval))
        policy.stopTimeout = .milliseconds(Int(serviceStopTimeout * 1000))
        return policy
    }
}
