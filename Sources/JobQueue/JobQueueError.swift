import RedisClient

/// Why a queue operation was refused or could not be carried out, in one sentence.
public enum JobQueueError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalidMachineID(String)
    case invalidPrefix(String)
    /// The plan was refused at enqueue; nothing was written.
    case planRejected(String)
    /// The machine still runs another plan.
    case busy(String)
    /// The machine's keys were written by another protocol version of `queue.lua`.
    case protocolMismatch(String)
    /// `retire` refused: the machine still runs a plan.
    case retireRefused(machine: String, reason: String)
    /// A reply from the queue script did not have the documented shape.
    case protocolViolation(String)
    case redis(RedisError)

    public var description: String {
        switch self {
        case .invalidMachineID(let id):
            return "The machine id '\(id.prefix(80))' is not 1-64 letters, digits, '.', '_' or '-'."
        case .invalidPrefix(let prefix):
            return "The key prefix '\(prefix.prefix(80))' is not 1-64 letters, digits, '.', '_', ':' or '-'."
        case .planRejected(let reason):
            return "The plan was refused: \(reason)."
        case .busy(let reason):
            return "The plan was refused: \(reason)."
        case .protocolMismatch(let reason):
            return "The queue script was refused: \(reason)."
        case .retireRefused(let machine, let reason):
            return "Machine '\(machine)' was not retired: \(reason)."
        case .protocolViolation(let what):
            return "The queue script answered in an unexpected shape: \(what)."
        case .redis(let error):
            return error.description
        }
    }
}
