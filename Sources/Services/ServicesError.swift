/// Why the services could not be planned or started, as one sentence for the user.
package enum ServicesError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalidWorkers(String)
    case portInUse(instance: String, host: String, port: Int)
    case cannotStart(instance: String, reason: String)
    case invalidBasePort(Int)

    package var description: String {
        switch self {
        case .invalidWorkers(let text):
            return "WORKERS '\(text)' is not a list of name:count pairs such as comfyui:1."
        case .portInUse(let instance, let host, let port):
            return "Port \(port) on \(host) for \(instance) is already in use by another process; stop it or choose another base port (--comfyui-base-port)."
        case .cannotStart(let instance, let reason):
            return "\(instance) could not be started: \(reason)"
        case .invalidBasePort(let port):
            return "The ComfyUI base port \(port) leaves no room for the instances (ports must stay below 65536)."
        }
    }
}
