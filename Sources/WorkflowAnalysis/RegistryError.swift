import ComponentSpec
import Foundation
import GitClient
import JobCore

/// Why the node registry cannot be read, parsed or fetched, naming the file, entry or command (URLs
/// with credentials masked), as one sentence.
package enum RegistryError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The registry file is missing, not a regular file, too large or unreadable (why).
    case unreadable(path: String, reason: String)
    /// The file is not JSON; where the reader stopped.
    case notJSON(source: String, problem: JSONParseError)
    /// The document's top level is not an object of repositories but `kind` ("an array", …).
    case notAMap(source: String, kind: String)
    /// One repository's entry is not `[[names], {…}]`.
    case malformedEntry(source: String, repository: String)
    /// The cache folder cannot be made.
    case cacheUnwritable(directory: String, reason: String)
    /// `pip download comfyui-manager` failed or timed out (its last line, or the timeout).
    case fetchFailed(reason: String)
    /// pip ran but left no comfyui-manager wheel.
    case noWheel(directory: String)
    /// The wheel does not hold a readable extension-node-map.json.
    case wheelUnreadable(wheel: String, reason: String)
    /// A program the fetch needs (Python) could not be started.
    case commandFailed(reason: String)

    package var description: String {
        switch self {
        case .unreadable(let path, let reason): return "The node registry \(path) \(reason)."
        case .notJSON(let source, let problem): return "The node registry \(source) is not valid JSON: \(problem)."
        case .notAMap(let source, let kind):
            return "The node registry \(source) is not an extension-node-map: it is \(kind), not an object of repositories."
        case .malformedEntry(let source, let repository):
            return "The node registry \(source) is not an extension-node-map: the entry for \(GitSourcePolicy.withoutCredentials(repository)) is not [[names], {…}]."
        case .cacheUnwritable(let directory, let reason): return "The registry cache \(directory) cannot be created: \(reason)."
        case .fetchFailed(let reason):
            return "The node registry could not be fetched from PyPI (pip download comfyui-manager): \(GitSourcePolicy.withoutCredentials(reason)); pass --registry FILE with an extension-node-map.json."
        case .noWheel(let directory): return "pip download comfyui-manager produced no wheel in \(directory)."
        case .wheelUnreadable(let wheel, let reason): return "The registry could not be read from \(wheel): \(reason)."
        case .commandFailed(let reason): return "The node registry could not be fetched: \(reason)."
        }
    }

    /// The file at `path` refused in one sentence when it is missing, not a regular file or over `limit` bytes.
    static func check(path: String, limit: Int) throws(RegistryError) {
        var info = stat()
        guard stat(path, &info) == 0 else { throw .unreadable(path: path, reason: "cannot be read: \(String(cString: strerror(errno)))") }
        guard (info.st_mode & S_IFMT) == S_IFREG else { throw .unreadable(path: path, reason: "is not a regular file") }
        guard Int(info.st_size) <= limit else {
            throw .unreadable(path: path, reason: "is \(info.st_size) bytes, more than the limit of \(limit)")
        }
    }
}
