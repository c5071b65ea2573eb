import CCurl
import Foundation

/// One download, run on its own thread: probe, plan chunks (or one stream), fetch with libcurl's
/// multi interface into `NAME.partial` (`CurlMultiDriver`, `ChunkScheduler`, `PartialFile`), hash
/// the written prefix as it grows (`HasherThread`), verify, rename.
final class DownloadSession {
    let request: DownloadRequest
    let cancelled: CancelFlag
    let reportProgress: @Sendable (DownloadProgress) -> Void
    let clock = ContinuousClock()
    private let started: ContinuousClock.Instant
    var fetchedBytes: Int64 = 0
    /// `Retry-After` of the last probe response, for its backoff.
    var lastRetryAfter: Double?
    let partial: PartialFile
    let retryPolicy: RetryPolicy

    init(request: DownloadRequest, cancelled: CancelFlag, progress: @escaping @Sendable (DownloadProgress) -> Void) {
        self.partial = PartialFile(destination: request.destination)
        self.request = request
        self.cancelled = cancelled
        self.reportProgress = progress
        self.started = ContinuousClock().now
        self.retryPolicy = RetryPolicy(maxAttempts: request.maxAttemptsPerChunk, baseSeconds: request.retryBaseSeconds, maxSeconds: request.retryMaxSeconds)
    }

    func run() -> Result<DownloadResult, DownloadError> {
        do throws(DownloadError) {
            return .success(try perform())
        } catch {
            return .failure(error)
        }
    }

    var shownURL: String { URLPolicy.redact(request.url) }

    private func perform() throws(DownloadError) -> DownloadResult {
        if (request.destination as NSString).lastPathComponent.utf8.count > Int(NAME_MAX) {
            throw .invalidDestination(request.destination, reason: "its name is longer than \(NAME_MAX) bytes")
        }
        let claim = try DestinationLock.acquire(partial.lockPath, cancelled: cancelled) {
            reportProgress(DownloadProgress(bytesDone: 0, bytesTotal: request.expectedSize, bytesPerSecond: 0, activeConnections: 0, waitingForAnotherDownload: true))
        }
        defer { claim?.release() }
        if let expected = request.expectedSHA256?.lowercased(), FileManager.default.fileExists(atPath: request.destination) {
            let size = PartialFile.fileSize(request.destination)
            if request.expectedSize == nil || request.expectedSize == size,
                let actual = try? SHA256Hasher.hashFile(at: request.destination), actual == expected
            {
                return result(bytes: size, sha256: actual, skipped: true, resumed: 0, ranged: false, restarts: 0)
            }
        }
        var restarts = 0
        while true {
            let remote = try probeWithRetries()
            if let expected = request.expectedSize, let size = remote.size, size != expected {
                throw .badResponse(url: shownURL, reason: "the server reports \(size) bytes where \(expected) were expected")
            }
            do throws(DownloadError) {
                if remote.acceptsRanges, let size = remote.size {
                    return try ranged(remote, size: size, restarts: restarts)
                }
                return try singleStream(remote, restarts: restarts)
            } catch .remoteChanged where restarts < 2 {
                // The file changed under us: what we have belongs to another version. Start over.
                restarts += 1
                partial.discard()
            }
        }
    }

    /// The probe, retried like a chunk on transient failures (connection reset, 5xx, 429, stall).
    func probeWithRetries() throws(DownloadError) -> RemoteFile {
        var attempt = 0
        while true {
            attempt += 1
            if cancelled.isSet { throw .cancelled }
            do throws(DownloadError) {
                return try probe(attempt: attempt)
            } catch {
                guard error.isRetryable, error != .remoteChanged(url: shownURL), attempt < request.maxAttemptsPerChunk else { throw error }
                Thread.sleep(forTimeInterval: retryPolicy.delay(attempt: attempt, retryAfter: lastRetryAfter))
            }
        }
    }

    // MARK: Ranged download

    private func ranged(_ remote: RemoteFile, size: Int64, restarts: Int) throws(DownloadError) -> DownloadResult {
        var restarts = restarts
        let connections = max(1, min(request.connections, 64))
        let chunkSize = request.chunkSize ?? ChunkPlan.chunkSize(for: size, connections: connections)
        var table = ChunkTable(
            size: size, chunkSize: chunkSize, taper: ChunkPlan.taper(connections: connections), ramp: ChunkPlan.ramp(connections: connections, chunkSize: chunkSize))
        var hasher = SHA256Hasher()
        var hashedOffset: Int64 = 0

        let saved = partial.loadState()
        if let state = saved, state.matches(remote, size: size), partial.size == size {
            table = ChunkTable(size: size, chunkSize: state.chunkSize, taper: state.chunkTaper, ramp: state.chunkRamp, written: state.written)
            if let restored = state.hasher {
                hasher = restored
                hashedOffset = state.hashedOffset
            }
        } else {
            // A partial file of another version of the remote file: start over, and say so. A state
            // this build cannot read (damaged, or saved by another version of provision) or a lost
            // partial file says nothing about the server, so it is dropped without a word.
            if let state = saved, !state.matches(remote, size: size) { restarts += 1 }
            partial.discard()
            try partial.checkFreeSpace(needed: size)
            try partial.create(size: size)
        }
        let resumed = table.bytesDone
        let fd = try partial.openForWriting()
        defer { close(fd) }

        table.recordHash(offset: hashedOffset, state: hasher.savedState)
        let hashing = HasherThread(fd: fd, table: table, hasher: hasher, offset: hashedOffset)
        hashing.start()
        do throws(DownloadError) {
            try transferChunks(remote, table: table, fd: fd, connections: connections)
        } catch {
            table.stop()
            hashing.wait()
            partial.saveState(url: request.url, validator: remote.validator, table: table)
            throw error
        }
        // The hasher ends once it has hashed the last byte (or failed to read one).
        hashing.wait()
        let snapshot = table.snapshot()
        guard var final = SHA256Hasher(savedState: snapshot.hashState), snapshot.hashedOffset == size else {
            throw .io(path: partial.path, operation: "hash", reason: "the hasher stopped at byte \(snapshot.hashedOffset) of \(size)")
        }
        let digest = final.finalize()
        try place(fd: fd, size: size, digest: digest)
        return result(bytes: size, sha256: digest, skipped: false, resumed: resumed, ranged: true, restarts: restarts)
    }

    // MARK: Placing the file

    /// Size and hash checked, then the partial file becomes the final one in one rename.
    func place(fd: Int32, size: Int64, digest: String) throws(DownloadError) {
        // An empty answer is more often a broken origin or an error page without a body than a
        // real model file: it is placed only when the job says so (size 0, or the empty file's hash).
        if size == 0 && request.expectedSize == nil && request.expectedSHA256 == nil {
            partial.discard()
            throw .badResponse(url: shownURL, reason: "the server sent an empty file, and no expected size of 0 was given")
        }
        let onDisk = try partial.size(of: fd)
        if onDisk != size {
            partial.discard()
            throw .sizeMismatch(path: request.destination, expected: size, actual: onDisk)
        }
        if let expected = request.expectedSize, expected != size {
            partial.discard()
            throw .sizeMismatch(path: request.destination, expected: expected, actual: size)
        }
        if let expected = request.expectedSHA256?.lowercased(), expected != digest {
            partial.discard()
            throw .hashMismatch(path: request.destination, expected: expected, actual: digest)
        }
        try partial.commit(fd: fd)
    }

    func result(bytes: Int64, sha256: String, skipped: Bool, resumed: Int64, ranged: Bool, restarts: Int) -> DownloadResult {
        DownloadResult(
            path: request.destination, bytes: bytes, sha256: sha256, skipped: skipped, resumedBytes: resumed,
            fetchedBytes: fetchedBytes, seconds: Self.seconds(clock.now - started), ranged: ranged, restarts: restarts)
    }

    static func seconds(_ duration: Duration) -> Double {
        let (s, atto) = duration.components
        return Double(s) + Double(atto) / 1e18
    }
}
