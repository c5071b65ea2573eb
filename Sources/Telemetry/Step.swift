import JobCore

/// One numbered step of a machine's startup flow (seed 002), as carried by every event.
package struct Step: Sendable, Hashable {
    package let number: Int
    package let name: String
    /// The phase of the startup flow the step belongs to (`service_startup`, `component_installation`, …).
    package let phase: String
    /// The seed's event name for the step; job events append an action (`.start`, `.complete`, `.progress`).
    package let event: String
    /// `event` with each job action appended, made once (job events are the hot path).
    package let startEvent: String
    package let completeEvent: String
    package let progressEvent: String

    package init(number: Int, name: String, phase: String, event: String) {
        self.number = number
        self.name = name
        self.phase = phase
        self.event = event
        startEvent = event + EventName.start
        completeEvent = event + EventName.complete
        progressEvent = event + EventName.progress
    }

    package static let healthServer = Step(
        number: 12, name: "Health Server Start", phase: "service_startup", event: "machine.health_server.start")
    package static let customNodes = Step(
        number: 17, name: "Custom Nodes Installation", phase: "component_installation", event: "machine.custom_nodes.install")
    package static let models = Step(
        number: 18, name: "Models Installation", phase: "component_installation", event: "machine.models.install")
    package static let comfyUIServer = Step(
        number: 19, name: "ComfyUI Server Start", phase: "comfyui_ready", event: "machine.comfyui.server")
    package static let workerConnection = Step(
        number: 20, name: "Worker Connection", phase: "comfyui_ready", event: "machine.worker.connection.start")
    package static let machineReady = Step(
        number: 21, name: "Machine Ready", phase: "comfyui_ready", event: "machine.ready.complete")

    /// The step a job belongs to (protocols/events.md): the step its kind declares (`JobPayload.step`:
    /// `node`, `comfyui`, `python-deps`, `install-scripts` → 17; `download`, `verify` → 18;
    /// `services` → 19). The
    /// stand-in kinds `noop` and `sleep` take the step of the job they stand in for, from the id:
    /// `model:…`, `models:…`, `download:…`, `verify`, `verify:…` → 18, else 17.
    package static func forJob(kind: String, id: String) -> Step {
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
    package var spanID: String { "step/\(number)" }

    /// What a job works on, for people: the node or file name after a `node:` / `model:` / `download:`
    /// prefix of its id, else the id itself.
    package static func component(ofJob id: String) -> String {
        for prefix in ["node:", "model:", "models:", "download:"] where id.hasPrefix(prefix) && id.count > prefix.count {
            return String(id.dropFirst(prefix.count))
        }
        return id
    }
}

/// Event names that are not a step's own name plus an action.
package enum EventName {
    /// Every failure, of a job attempt or of the machine (step 21), with `error_type` and `error_message`.
    package static let failure = "machine.step.failure"
    package static let start = ".start"
    package static let complete = ".complete"
    package static let progress = ".progress"
}
