import Foundation
import Synchronization

/// One file to fetch and where to put it.
package struct DownloadRequest: Sendable {
    package var url: String
    /// The final path (already confined by the caller; see `Destination`).
    package var destination: String
    package var expectedSHA256: String?
    package var expectedSize: Int64?
    /// Parallel connections for one file.
    package var connections = 8
    /// Chunk size; nil picks one from the file size (16-64 MiB).
    package var chunkSize: Int64?
    /// Extra request headers (sent only to the URL's own host, never after a redirect to another).
    package var headers: [(name: String, value: String)] = []
    package var policy = URLPolicy()
    /// Where tokens (HF_TOKEN, CIVITAI_TOKEN) are read from.
    package var environment: [String: String] = ProcessInfo.processInfo.environment
    /// A request that receives nothing for this long is abandoned and retried.
    package var stallSeconds = 30
    package var connectTimeoutSeconds = 30
    /// Attempts per chunk (connection reset, timeout, 5xx, 429) before the download fails.
    package var maxAttemptsPerChunk = 6
    /// How often an expired signed URL (401/403/410 from a redirect target) may be replaced by
    /// probing the original URL again, per download.
    package var maxURLRefreshes = 8
    /// Backoff before the n-th retry of a chunk: base × 2^(n-1), capped, with jitter.
    package var retryBaseSeconds = 0.5
    package var retryMaxSeconds = 30.0
    package var userAgent = "provision/0.1"
    /// A PEM file of the certificates to trust instead of the system's (`CURLOPT_CAINFO`): a private
    /// mirror or a test origin with its own certificate. Verification stays on.
    package var caFile: String?

    package init(url: String, destination: String) {
        self.url = url
        self.destination = destination
    }
}

/// What a finished download did.
package struct DownloadResult: Sendable, Equatable {
    package var path: String
    package var bytes: Int64
    package var sha256: String
    /// The file was already in place with the expected hash: nothing was fetched.
    package var skipped: Bool
    /// Bytes found already downloaded in a partial file and not fetched again.
    package var resumedBytes: Int64
    /// Bytes received over the network.
    package var fetchedBytes: Int64
    package var seconds: Double
    /// Ranged chunks, or one stream for a server without Range support.
    package var ranged: Bool
    /// Times the download started over because the remote file changed.
    package var restarts: Int
}

/// Progress of one download, reported about four times a second.
package struct DownloadProgress: Sendable, Equatable {
    package var bytesDone: Int64
    package var bytesTotal: Int64?
    package var bytesPerSecond: Double
    package var activeConnections: Int
    /// Another download of the same destination (in this or another process) holds it: this one
    /// waits for it to end, then finds the file in place or picks up where it stopped.
    package var waitingForAnotherDownload = false
}

/// Fetches files over HTTP(S) with parallel Range requests on libcurl, resumably and verified.
package struct Downloader: Sendable {
    package init() {}

    /// Downloads `request` on a thread of its own (libcurl's multi loop blocks), honouring task cancellation.
    package func download(
        _ request: DownloadRequest, progress: @escaping @Sendable (DownloadProgress) -> Void = { _ in }
    ) async throws(DownloadError) -> DownloadResult {
        let cancelled = CancelFlag()
        let result: Result<DownloadResult, DownloadError> = await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let outcome = OutcomeBox()
                guard let worker = JoinableThread(stackSize: 1 << 20, {
                    outcome.value = DownloadSession(request: request, cancelled: cancelled, progress: progress).run()
                }) else {
                    continuation.resume(returning: .failure(.transport(url: URLPolicy.redact(request.url), reason: "no thread could be started for the download", attempts: 0)))
                    return
                }
                // The caller hears back only once the download's thread has ended completely (its
                // libcurl and OpenSSL state freed): a CLI that prints and exits must not race that
                // teardown against the libraries' exit-time destructors. The waiting thread touches
                // neither library.
                let waiter = JoinableThread(stackSize: 64 << 10) {
                    worker.join()
                    continuation.resume(returning: outcome.value ?? .failure(.transport(url: URLPolicy.redact(request.url), reason: "the download's thread ended without a result", attempts: 0)))
                }
                if waiter == nil {
                    worker.join()
                    continuation.resume(returning: outcome.value ?? .failure(.transport(url: URLPolicy.redact(request.url), reason: "the download's thread ended without a result", attempts: 0)))
                }
            }
        } onCancel: {
            cancelled.set()
        }
        return try result.get()
    }
}

/// The download thread's result, read after the thread was joined.
private final class OutcomeBox: @unchecked Sendable {
    var value: Result<DownloadResult, DownloadError>?
}

/// Set from any thread to stop a download at its next step.
final class CancelFlag: Sendable {
    private let value = Atomic<Bool>(false)
    func set() { value.store(true, ordering: .relaxed) }
    var isSet: Bool { value.load(ordering: .relaxed) }
}
