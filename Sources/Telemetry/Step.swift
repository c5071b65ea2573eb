import JobCore

/// One numbered step of a machine's startup flow (seed 002), as carried by every event.
public struct Step: Sendable, Hashable {
    public let number: Int
    public let name: String
    /// The phase of the startup flow the step belongs to (`service_startup`, `component_installation`, …).
    public let phase: String
    /// The seed's event name for the step; job events append an action (`.start`, `.complete`, `.progress`).
    public let event: String
    /// `event` with each job action appended, made once (job events are the hot path).
    public let startEvent: String
    public let completeEvent: String
    public let progressEvent: String

    public init(number: Int, name: String, phase: String, event: String) {
        self.number = number
        self.name = name
        self.phase = phase
        self.event = event
        startEvent = event + EventName.start
        completeEvent = event + EventName.complete
        progressEvent = event + EventName.progress
    }

    public static let healthServer = Step(
        number: 12, name: "Health Server Start", phase: "service_startup", event: "machine.health_server.start")
    public static let customNodes = Step(
        number: 17, name: "Custom Nodes Installation", phase: "component_installation", event: "machine.custom_nodes.install")
    public static let models = Step(
        number: 18, name: "Models Installation", phase: "component_installation", event: "machine.models.install")
    public static let comfyUIServer = Step(
        number: 19, name: "ComfyUI Server Start", phase: "comfyui_ready", event: "machine.comfyui.server")
    public static let workerConnection = Step(
        number: 20, name: "Worker Connection", phase: "comfyui_ready", event: "machine.worker.connection.start")
    public static let machineReady = Step(
        number: 21, name: "Machine Ready", phase: "comfyui_ready", event: "machine.ready.complete")

    /// The step a job belongs to (protocols/events.md): the step its kind declares (`JobPayload.step`:
    /// `node`, `comfyui`, `python-deps`, `install-scripts` → 17; `download`, `verify` → 18;
    /// `services` → 19). The
    /// stand-in kinds `noop` and `sleep` take the step of the job they stand in for, from the id:
    /// `model:…`, `models:…`, `download:…`, `verify`, `verify:…` → 18, else 17.
    public static func forJob(kind: String, id: String) -> Step {
        if kind != NoopPayload.kind, kind != SleepPayload.kind, let declared = JobKinds.step(of: kind) {
            switch declared {
            case .customNodes: return .customNodes
            case .models: return .models
            case .comfyUIServer: return .comfyUIServer
            }
        }
        if id.hasPrefix("model:") || id.hasPrefix("models:") || id.hasPrefix("download:") || id == "verify" || id.hasPrefix("verify:") {
            return .models
        }
        return .customNodes
    }

    /// The span id of this step inside a plan's trace (`step/17`); job spans are its children.
    public var spanID: String { "step/\(number)" }

    /// What a job works on, for people: the node or file name after a `node:` / `model:` / `download:`
    /// prefix of its id, else the id itself.
    public static func component(ofJob id: String) -> String {
        for prefix in ["node:", "model:", "models:", "download:"] where id.hasPrefix(prefix) && id.count > prefix.count {
            return String(id.dropFirst(prefix.count))
        }
        return id
    }
}

/// Event names that are not a step's own name plus an action.
public enum EventName {
    /// Every failure, of a job attempt or of the machine (step 21), with `error_type` and `error_message`.
    public static let failure = "machine.step.failure"
    public static let start = ".start"
    public static let complete = ".complete"
    public static let progress = ".progress"
}
