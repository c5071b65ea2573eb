import CCurl
import CCurlShim
import Foundation

/// What an origin says about a file without sending it: its size, and the SHA-256 it publishes when it
/// publishes one (Hugging Face answers a `/resolve/` URL of an LFS file with `X-Linked-Etag: "<sha256>"`,
/// `X-Linked-Size` and `X-Repo-Commit` on the redirect, before any byte of the file).
package struct RemoteMetadata: Sendable, Equatable {
    /// The URL asked for.
    package var url: String
    /// Size from `X-Linked-Size`, else from the final response's `Content-Range` / `Content-Length`.
    package var size: Int64?
    /// SHA-256 (lowercase hex) from `X-Linked-Etag`, when it is one.
    package var publishedSHA256: String?
    /// The repository commit the URL resolved to (`X-Repo-Commit`), when the origin says.
    package var repositoryCommit: String?
}

/// The body of a metadata request is never wanted.
private let refuseBody: @convention(c) (UnsafeMutablePointer<CChar>?, Int, Int, UnsafeMutableRawPointer?) -> Int = { _, _, _, _ in 0 }

extension Downloader {
    /// Asks the origin about `request.url` with a ranged GET of one byte, following redirects by hand
    /// (credentials only to the URL's own origin) and stopping at the first response that publishes a
    /// SHA-256 and size, so nothing of the file is transferred. Transient failures are retried like a
    /// download's probe.
    package func metadata(_ request: DownloadRequest) async throws(DownloadError) -> RemoteMetadata {
        let cancelled = CancelFlag()
        let result: Result<RemoteMetadata, DownloadError> = await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let thread = Thread {
                    let session = DownloadSession(request: request, cancelled: cancelled, progress: { _ in })
                    var attempt = 0
                    while true {
                        attempt += 1
                        do throws(DownloadError) {
                            continuation.resume(returning: .success(try session.inspect(attempt: attempt)))
                            return
                        } catch {
                            if cancelled.isSet {
                                continuation.resume(returning: .failure(.cancelled))
                                return
                            }
                            guard error.isRetryable, attempt < request.maxAttemptsPerChunk else {
                                continuation.resume(returning: .failure(error))
                                return
                            }
                            let delay = min(request.retryMaxSeconds, request.retryBaseSeconds * pow(2, Double(attempt - 1)))
                            Thread.sleep(forTimeInterval: max(session.lastRetryAfter ?? 0, delay * Double.random(in: 0.5...1)))
                        }
                    }
                }
                thread.name = "provision-metadata"
                thread.stackSize = 1 << 20
                thread.start()
            }
        } onCancel: {
            cancelled.set()
        }
        return try result.get()
    }
}

extension DownloadSession {
    func inspect(attempt: Int) throws(DownloadError) -> RemoteMetadata {
        let handle = try EasyHandle()
        var current = try request.policy.check(request.url)
        let credentialOrigin = Self.origin(of: current)
        var published: String?
        var publishedSize: Int64?
        var commit: String?
        for _ in 0...10 {
            let headers = try rangedHead(current, on: handle, credentialOrigin: credentialOrigin, body: refuseBody, attempt: attempt)
            let shown = URLPolicy.redact(current.absoluteString)
            if let etag = headers["x-linked-etag"].map(Self.unquoted), Self.isSHA256(etag) { published = etag.lowercased() }
            if let size = headers["x-linked-size"].flatMap({ Int64($0) }), size >= 0 { publishedSize = size }
            if let repoCommit = headers["x-repo-commit"], repoCommit.count == 40, repoCommit.allSatisfy(\.isHexDigit) { commit = repoCommit.lowercased() }
            switch headers.status {
            case 301, 302, 303, 307, 308:
                if let published, let publishedSize {
                    return RemoteMetadata(url: request.url, size: publishedSize, publishedSHA256: published, repositoryCommit: commit)
                }
                current = try redirectTarget(headers, from: current)
                continue
            case 200, 206, 416:
                var size = publishedSize
                if size == nil {
                    if let range = headers.contentRange, let total = range.total { size = total }
                    else if headers.status == 200 { size = headers["content-length"].flatMap { Int64($0) } }
                }
                return RemoteMetadata(url: request.url, size: size, publishedSHA256: published, repositoryCommit: commit)
            default:
                throw .http(url: shown, status: headers.status, attempts: attempt)
            }
        }
        throw .tooManyRedirects(url: URLPolicy.redact(request.url))
    }

    static func unquoted(_ value: String) -> String {
        var text = value.trimmingCharacters(in: .whitespaces)
        if text.hasPrefix("W/") { text.removeFirst(2) }
        return text.trimmingCharacters(in: CharacterSet(charactersIn: "\""))
    }

    static func isSHA256(_ text: String) -> Bool {
        text.count == 64 && text.allSatisfy(\.isHexDigit)
    }
}
