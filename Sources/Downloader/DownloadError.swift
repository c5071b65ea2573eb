import Foundation

/// Why a download failed, in one sentence that names the URL without its secrets.
package enum DownloadError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalidURL(String, reason: String)
    case invalidDestination(String, reason: String)
    case http(url: String, status: Int, attempts: Int)
    case transport(url: String, reason: String, attempts: Int)
    case stalled(url: String, seconds: Int, attempts: Int)
    case tooManyRedirects(url: String)
    case badResponse(url: String, reason: String)
    case remoteChanged(url: String)
    case sizeMismatch(path: String, expected: Int64, actual: Int64)
    case hashMismatch(path: String, expected: String, actual: String)
    case insufficientSpace(path: String, needed: Int64, available: Int64)
    case io(path: String, operation: String, reason: String)
    case cancelled

    package var description: String {
        switch self {
        case .invalidURL(let url, let reason):
            return "The URL \(url) cannot be downloaded: \(reason)."
        case .invalidDestination(let path, let reason):
            return "The destination \(path) is refused: \(reason)."
        case .http(let url, let status, let attempts):
            return "Downloading \(url) failed: the server answered HTTP \(status) (after \(attempts) attempt\(attempts == 1 ? "" : "s"))."
        case .transport(let url, let reason, let attempts):
            return "Downloading \(url) failed: \(reason) (after \(attempts) attempt\(attempts == 1 ? "" : "s"))."
        case .stalled(let url, let seconds, let attempts):
            return "Downloading \(url) failed: no data for \(seconds) s (after \(attempts) attempt\(attempts == 1 ? "" : "s"))."
        case .tooManyRedirects(let url):
            return "Downloading \(url) failed: too many redirects."
        case .badResponse(let url, let reason):
            return "Downloading \(url) failed: \(reason)."
        case .remoteChanged(let url):
            return "The file at \(url) changed on the server during the download."
        case .sizeMismatch(let path, let expected, let actual):
            return "The download of \(path) has \(actual) bytes where \(expected) were expected."
        case .hashMismatch(let path, let expected, let actual):
            return "The download of \(path) has SHA-256 \(actual), not the expected \(expected); the partial file was deleted."
        case .insufficientSpace(let path, let needed, let available):
            return "Not enough disk space for \(path): \(needed) bytes needed, \(available) available."
        case .io(let path, let operation, let reason):
            return "Could not \(operation) \(path): \(reason)."
        case .cancelled:
            return "The download was cancelled."
        }
    }

    /// A failed file operation from its `errno`: a name longer than the file system allows is the
    /// destination's fault and fails for good; anything else (a full disk, an I/O error) may pass.
    static func io(path: String, operation: String, errno code: Int32) -> DownloadError {
        if code == ENAMETOOLONG {
            return .invalidDestination(path, reason: "could not \(operation) it: its name is longer than the file system allows")
        }
        return .io(path: path, operation: operation, reason: String(cString: strerror(code)))
    }

    /// Whether running the job again may succeed.
    package var isRetryable: Bool {
        switch self {
        case .http(_, let status, _): return status == 408 || status == 429 || status >= 500
        case .transport, .stalled, .remoteChanged, .hashMismatch, .sizeMismatch, .io, .cancelled: return true
        default: return false
        }
    }

    /// A short machine-readable cause for job failures and events.
    package var type: String {
        switch self {
        case .invalidURL: return "invalid_url"
        case .invalidDestination: return "invalid_destination"
        case .http(_, let status, _): return "http_\(status)"
        case .transport: return "transport"
        case .stalled: return "stalled"
        case .tooManyRedirects: return "too_many_redirects"
        case .badResponse: return "bad_response"
        case .remoteChanged: return "remote_changed"
        case .sizeMismatch: return "size_mismatch"
        case .hashMismatch: return "hash_mismatch"
        case .insufficientSpace: return "insufficient_space"
        case .io: return "io"
        case .cancelled: return "cancelled"
        }
    }
}
