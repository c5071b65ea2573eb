import CCurl
import CCurlShim
import CFileSync
import Foundation

/// One download, run on its own thread: probe, plan chunks (or one stream), fetch with libcurl's
/// multi interface into `NAME.partial`, hash the written prefix as it grows, verify, rename.
final class DownloadSession {
    let request: DownloadRequest
    private let cancelled: CancelFlag
    private let reportProgress: @Sendable (DownloadProgress) -> Void
    private let clock = ContinuousClock()
    private let started: ContinuousClock.Instant
    private var fetchedBytes: Int64 = 0
    /// `Retry-After` of the last probe response, for its backoff.
    var lastRetryAfter: Double?

    var partialPath: String { sideBase + ".partial" }
    var statePath: String { sideBase + ".partial.state" }
    var lockPath: String { sideBase + ".partial.lock" }
    /// What the side files are named after: the destination, or, when `NAME.partial.state` would be
    /// longer than a file name may be (NAME_MAX, 255 bytes), `.provision-HASH` beside it, the hash
    /// taken from the name so that every process finds the same side files for one destination.
    let sideBase: String

    /// The longest suffix a side file adds to the destination's name.
    static let longestSideSuffix = ".partial.state"

    static func sideBase(for destination: String) -> String {
        let name = (destination as NSString).lastPathComponent
        guard name.utf8.count + longestSideSuffix.utf8.count > Int(NAME_MAX) else { return destination }
        var hasher = SHA256Hasher()
        hasher.update(Data(name.utf8))
        let directory = (destination as NSString).deletingLastPathComponent
        return (directory as NSString).appendingPathComponent(".provision-" + hasher.finalize().prefix(40))
    }

    init(request: DownloadRequest, cancelled: CancelFlag, progress: @escaping @Sendable (DownloadProgress) -> Void) {
        self.sideBase = Self.sideBase(for: request.destination)
        self.request = request
        self.cancelled = cancelled
        self.reportProgress = progress
        self.started = ContinuousClock().now
    }

    func run() -> Result<DownloadResult, DownloadError> {
        do throws(DownloadError) {
            return .success(try perform())
        } catch {
            return .failure(error)
        }
    }

    private var shownURL: String { URLPolicy.redact(request.url) }

    private func perform() throws(DownloadError) -> DownloadResult {
        if (request.destination as NSString).lastPathComponent.utf8.count > Int(NAME_MAX) {
            throw .invalidDestination(request.destination, reason: "its name is longer than \(NAME_MAX) bytes")
        }
        let claim = try DestinationLock.acquire(lockPath, cancelled: cancelled) {
            reportProgress(DownloadProgress(bytesDone: 0, bytesTotal: request.expectedSize, bytesPerSecond: 0, activeConnections: 0, waitingForAnotherDownload: true))
        }
        defer { claim?.release() }
        if let expected = request.expectedSHA256?.lowercased(), FileManager.default.fileExists(atPath: request.destination) {
            let size = fileSize(request.destination)
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
                discardPartial()
            }
        }
    }

    /// The probe, retried like a chunk on transient failures (connection reset, 5xx, 429, stall).
    private func probeWithRetries() throws(DownloadError) -> RemoteFile {
        var attempt = 0
        while true {
            attempt += 1
            if cancelled.isSet { throw .cancelled }
            do throws(DownloadError) {
                return try probe(attempt: attempt)
            } catch {
                guard error.isRetryable, error != .remoteChanged(url: shownURL), attempt < request.maxAttemptsPerChunk else { throw error }
                Thread.sleep(forTimeInterval: backoff(attempt: attempt, retryAfter: lastRetryAfter))
            }
        }
    }

    // MARK: Ranged download

    private func ranged(_ remote: RemoteFile, size: Int64, restarts: Int) throws(DownloadError) -> DownloadResult {
        var restarts = restarts
        let connections = max(1, min(request.connections, 64))
        let chunkSize = request.chunkSize ?? Self.chunkSize(for: size, connections: connections)
        var table = ChunkTable(size: size, chunkSize: chunkSize)
        var hasher = SHA256Hasher()
        var hashedOffset: Int64 = 0

        let saved = ResumeState.load(statePath)
        if let state = saved, state.matches(remote, size: size), fileSize(partialPath) == size {
            table = ChunkTable(size: size, chunkSize: state.chunkSize, written: state.written)
            if let restored = state.hasher {
                hasher = restored
                hashedOffset = state.hashedOffset
            }
        } else {
            // A partial file of another version of the remote file: start over, and say so. A state
            // this build cannot read (damaged, or saved by another version of provision) or a lost
            // partial file says nothing about the server, so it is dropped without a word.
            if let state = saved, !state.matches(remote, size: size) { restarts += 1 }
            discardPartial()
            try checkFreeSpace(needed: size)
            try createPartial(size: size)
        }
        let resumed = table.bytesDone
        let fd = open(partialPath, O_RDWR)
        guard fd >= 0 else { throw ioError(partialPath, "open") }
        defer { close(fd) }

        table.recordHash(offset: hashedOffset, state: hasher.savedState)
        let hashing = startHasher(fd: fd, table: table, hasher: hasher, from: hashedOffset)
        do throws(DownloadError) {
            try transferChunks(remote, table: table, fd: fd, connections: connections)
        } catch {
            table.stop()
            hashing.wait()
            saveState(remote, table: table)
            throw error
        }
        _ = table.waitForHash()
        hashing.wait()
        let snapshot = table.snapshot()
        guard var final = SHA256Hasher(savedState: snapshot.hashState), snapshot.hashedOffset == size else {
            throw .io(path: partialPath, operation: "hash", reason: "the hasher stopped at byte \(snapshot.hashedOffset) of \(size)")
        }
        let digest = final.finalize()
        try place(fd: fd, size: size, digest: digest)
        return result(bytes: size, sha256: digest, skipped: false, resumed: resumed, ranged: true, restarts: restarts)
    }

    /// 8-64 MiB chunks, about eight per connection: the last chunks finish close together, so the
    /// hasher has little left to do after the last byte, and no connection idles long at the end.
    static func chunkSize(for size: Int64, connections: Int) -> Int64 {
        let target = size / Int64(max(1, connections) * 8)
        return min(64 << 20, max(8 << 20, target))
    }

    /// Follows the written prefix with SHA-256, reading back from the page cache, on its own thread.
    private func startHasher(fd: Int32, table: ChunkTable, hasher: SHA256Hasher, from offset: Int64) -> HasherThread {
        let thread = HasherThread(fd: fd, table: table, hasher: hasher, offset: offset)
        thread.start()
        return thread
    }

    /// One chunk request. Bytes are gathered in `staging` and written in pieces that end on
    /// `writeSize` boundaries of the file: libcurl hands over 16 KiB at a time at any offset, and a
    /// write that starts or ends inside a block of a new file makes the kernel zero the rest of the
    /// block first. 64 KiB stays in the L2 cache between the copy and the write; 128 and 256 KiB
    /// were measured slower (bench/downloads/README.md).
    private final class Transfer {
        static let writeSize = 64 << 10
        let index: Int
        let start: Int64
        let end: Int64
        let fd: Int32
        let table: ChunkTable
        /// Which signed URL the request went to (`transferChunks` counts refreshes).
        let urlGeneration: Int
        let sink = HeaderSink()
        var received: Int64 = 0
        var checked = false
        var problem: String?
        /// Why writing the partial file failed (`strerror`): not the server's fault, not retried.
        var writeFailure: String?
        var remoteChanged = false
        /// Bytes received but not yet written, which belong at `stagedOffset`.
        private let staging: UnsafeMutableRawPointer
        private var staged = 0
        private var stagedOffset: Int64 { start + received - Int64(staged) }

        init(index: Int, start: Int64, end: Int64, fd: Int32, table: ChunkTable, urlGeneration: Int, staging: UnsafeMutableRawPointer) {
            self.index = index
            self.start = start
            self.end = end
            self.fd = fd
            self.table = table
            self.urlGeneration = urlGeneration
            self.staging = staging
        }

        var length: Int64 { end - start + 1 }

        /// Checks the response before its first byte is written; false aborts the transfer.
        func accept(_ bytes: UnsafeRawBufferPointer) -> Bool {
            if !checked {
                checked = true
                let headers = sink.headers
                if headers.status == 200 {
                    remoteChanged = true
                    return false
                }
                guard headers.status == 206 else { return false }
                // A total other than the probed size: the file changed, or one of the answers lied
                // (found by bench/fuzz: a probe that said one byte less got a short file placed).
                if let total = headers.contentRange?.total, total != table.size {
                    remoteChanged = true
                    return false
                }
                guard let range = headers.contentRange, range.start == start, range.end == end else {
                    problem = "the server sent a different range than requested"
                    return false
                }
            }
            guard let base = bytes.baseAddress, received + Int64(bytes.count) <= length else {
                problem = "the server sent more bytes than requested"
                return false
            }
            let writeSize = Int64(Self.writeSize)
            var taken = 0
            while taken < bytes.count {
                let boundary = min((stagedOffset / writeSize + 1) * writeSize, end + 1)
                let room = Int(boundary - stagedOffset) - staged
                let n = min(room, bytes.count - taken)
                (staging + staged).copyMemory(from: base + taken, byteCount: n)
                staged += n
                received += Int64(n)
                taken += n
                if n == room && !flush() { return false }
            }
            return true
        }

        /// Writes what is staged; called when a boundary is reached and when the request ends.
        func flush() -> Bool {
            var done = 0
            let position = stagedOffset
            while done < staged {
                let n = pwrite(fd, staging + done, staged - done, off_t(position + Int64(done)))
                if n < 0 {
                    if errno == EINTR { continue }
                    writeFailure = String(cString: strerror(errno))
                    return false
                }
                done += n
            }
            if staged > 0 { table.add(Int64(staged), to: index) }
            staged = 0
            return true
        }
    }

    private static let chunkWrite: @convention(c) (UnsafeMutablePointer<CChar>?, Int, Int, UnsafeMutableRawPointer?) -> Int = {
        data, size, count, context in
        let length = size * count
        guard let context else { return 0 }
        let transfer = Unmanaged<Transfer>.fromOpaque(context).takeUnretainedValue()
        guard length > 0, let data else { return length }
        return transfer.accept(UnsafeRawBufferPointer(start: data, count: length)) ? length : 0
    }

    private func transferChunks(_ probed: RemoteFile, table: ChunkTable, fd: Int32, connections: Int) throws(DownloadError) {
        guard let multi = curl_multi_init() else { throw .transport(url: shownURL, reason: "libcurl could not start", attempts: 0) }
        defer { curl_multi_cleanup(multi) }
        // One request per connection: a CDN caps each connection, so HTTP/2 multiplexing would not help.
        _ = provision_multi_setopt_long(multi, CURLMOPT_PIPELINING, 0)
        _ = provision_multi_setopt_long(multi, CURLMOPT_MAX_HOST_CONNECTIONS, connections)

        var pending = (0..<table.count).filter { !table.isComplete($0) }
        let slotCount = min(connections, max(1, pending.count))
        var handles: [EasyHandle] = []
        for _ in 0..<slotCount { handles.append(try EasyHandle()) }
        let staging = (0..<slotCount).map { _ in UnsafeMutableRawPointer.allocate(byteCount: Transfer.writeSize, alignment: 4096) }
        defer { staging.forEach { $0.deallocate() } }
        var inFlight: [Int: (transfer: Transfer, retained: Unmanaged<Transfer>)] = [:]  // slot → transfer
        var attempts: [Int: Int] = [:]
        var notBefore: [Int: ContinuousClock.Instant] = [:]
        // Signed CDN URLs expire (Hugging Face's and Civitai's after hours; a large file on a slow
        // link can outlive one): a 401/403/410 from a redirect target is answered by asking the
        // original URL for a fresh one, which must still name the same file.
        var remote = probed
        var urlGeneration = 0
        var baseHeaders = URL(string: remote.url).map { headers(for: $0, credentialOrigin: remote.credentialOrigin) } ?? []
        let validator = remote.validator
        var lastTick = clock.now
        var lastSave = clock.now
        var completedSinceSave = false
        var lastBytes = table.bytesDone

        defer {
            for (slot, entry) in inFlight {
                curl_multi_remove_handle(multi, handles[slot].raw)
                entry.retained.release()
            }
        }

        while !pending.isEmpty || !inFlight.isEmpty {
            if cancelled.isSet { throw .cancelled }
            let now = clock.now
            for slot in handles.indices where inFlight[slot] == nil {
                let busy = Set(inFlight.values.map(\.transfer.index))
                guard let position = pending.firstIndex(where: { !busy.contains($0) && (notBefore[$0].map { $0 <= now } ?? true) }) else { break }
                let index = pending.remove(at: position)
                let start = table.start(of: index) + table.snapshot().written[index]
                let end = table.start(of: index) + table.length(of: index) - 1
                let transfer = Transfer(index: index, start: start, end: end, fd: fd, table: table, urlGeneration: urlGeneration, staging: staging[slot])
                let retained = Unmanaged.passRetained(transfer)
                let handle = handles[slot]
                handle.reset()
                handle.applyCommonOptions(userAgent: request.userAgent, stallSeconds: request.stallSeconds, connectTimeoutSeconds: request.connectTimeoutSeconds, policy: request.policy)
                handle.set(CURLOPT_URL, remote.url)
                handle.set(CURLOPT_RANGE, "\(start)-\(end)")
                handle.setHeaders(baseHeaders + (validator.map { ["If-Range: \($0)"] } ?? []))
                _ = provision_easy_setopt_header_callback(handle.raw, headerCallback)
                handle.set(CURLOPT_HEADERDATA, pointer: Unmanaged.passUnretained(transfer.sink).toOpaque())
                _ = provision_easy_setopt_write_callback(handle.raw, Self.chunkWrite)
                handle.set(CURLOPT_WRITEDATA, pointer: retained.toOpaque())
                curl_multi_add_handle(multi, handle.raw)
                inFlight[slot] = (transfer, retained)
            }

            var running: Int32 = 0
            curl_multi_perform(multi, &running)
            var left: Int32 = 0
            var freed = false
            while let message = curl_multi_info_read(multi, &left) {
                guard message.pointee.msg == CURLMSG_DONE,
                    let slot = handles.firstIndex(where: { $0.raw == message.pointee.easy_handle }),
                    let entry = inFlight.removeValue(forKey: slot)
                else { continue }
                let code = message.pointee.data.result
                curl_multi_remove_handle(multi, handles[slot].raw)
                entry.retained.release()
                let transfer = entry.transfer
                if code != CURLE_OK, let refused = handles[slot].refusedConnection(url: remote.url) { throw refused }
                _ = transfer.flush()  // a failed write is left in `writeFailure`, for `classify`
                fetchedBytes += transfer.received
                freed = true
                if code == CURLE_OK && table.isComplete(transfer.index) {
                    completedSinceSave = true
                    continue
                }
                if transfer.remoteChanged { throw .remoteChanged(url: shownURL) }
                let status = transfer.sink.headers.status
                if [401, 403, 410].contains(status), remote.url != request.url {
                    if transfer.urlGeneration == urlGeneration {
                        guard urlGeneration < request.maxURLRefreshes else {
                            throw .http(url: shownURL, status: status, attempts: urlGeneration + 1)
                        }
                        let fresh = try probeWithRetries()
                        guard fresh.size == remote.size, fresh.validator == validator, fresh.acceptsRanges else {
                            throw .remoteChanged(url: shownURL)
                        }
                        remote = fresh
                        urlGeneration += 1
                        baseHeaders = URL(string: remote.url).map { headers(for: $0, credentialOrigin: remote.credentialOrigin) } ?? []
                    }
                    pending.append(transfer.index)
                    pending.sort()
                    continue
                }
                let attempt = transfer.received >= (1 << 20) ? 1 : (attempts[transfer.index] ?? 0) + 1
                attempts[transfer.index] = attempt
                let failure = classify(code: code, transfer: transfer, attempts: attempt)
                if !failure.retryable || attempt >= request.maxAttemptsPerChunk { throw failure.error }
                notBefore[transfer.index] = clock.now + .milliseconds(Int(backoff(attempt: attempt, retryAfter: transfer.sink.headers.retryAfterSeconds) * 1000))
                pending.append(transfer.index)
                pending.sort()
            }

            if clock.now - lastTick >= .milliseconds(250) {
                let done = table.bytesDone
                let seconds = Self.seconds(clock.now - lastTick)
                reportProgress(DownloadProgress(bytesDone: done, bytesTotal: table.size, bytesPerSecond: Double(done - lastBytes) / max(seconds, 0.001), activeConnections: inFlight.count))
                lastBytes = done
                lastTick = clock.now
            }
            // Saved whenever a chunk completes, so that a kill loses at most the chunk each connection
            // is on, at any rate; and every 250 ms for progress inside chunks, so that it usually
            // loses much less (saved once a second, a kill just before a chunk's end lost all of it).
            if completedSinceSave || clock.now - lastSave >= .milliseconds(250) {
                saveState(remote, table: table)
                lastSave = clock.now
                completedSinceSave = false
            }
            // A connection that just finished its chunk gets the next one at once, not after a poll.
            let moment = clock.now
            let assignable = freed && pending.contains { notBefore[$0].map { $0 <= moment } ?? true }
            if !assignable && (!pending.isEmpty || !inFlight.isEmpty) {
                var ready: Int32 = 0
                curl_multi_poll(multi, nil, 0, inFlight.isEmpty ? 20 : 100, &ready)
            }
        }
    }

    private func classify(code: CURLcode, transfer: Transfer, attempts: Int) -> (error: DownloadError, retryable: Bool) {
        let status = transfer.sink.headers.status
        if let failure = transfer.writeFailure {
            // A full disk, a file size limit or an I/O error: fetching the chunk again writes nothing.
            return (.io(path: partialPath, operation: "write to", reason: failure), false)
        }
        if let problem = transfer.problem {
            return (.badResponse(url: shownURL, reason: problem), true)
        }
        if status >= 400 || (status >= 300 && status < 400) {
            let error = DownloadError.http(url: shownURL, status: status, attempts: attempts)
            return (error, status == 408 || status == 429 || status >= 500)
        }
        if code == CURLE_OPERATION_TIMEDOUT {
            return (.stalled(url: shownURL, seconds: request.stallSeconds, attempts: attempts), true)
        }
        if code == CURLE_OK {
            return (.transport(url: shownURL, reason: "the connection closed before the chunk was complete", attempts: attempts), true)
        }
        return (.transport(url: shownURL, reason: String(cString: curl_easy_strerror(code)), attempts: attempts), true)
    }

    private func backoff(attempt: Int, retryAfter: Double?) -> Double {
        if let retryAfter { return min(retryAfter, request.retryMaxSeconds * 4) }
        let base = min(request.retryMaxSeconds, request.retryBaseSeconds * pow(2, Double(attempt - 1)))
        return base * Double.random(in: 0.5...1.0)
    }

    // MARK: Single stream (no Range support, or unknown size)

    private final class Stream {
        let fd: Int32
        let sink = HeaderSink()
        var hasher = SHA256Hasher()
        var received: Int64 = 0
        /// Why writing the partial file failed (`strerror`): not retried.
        var writeFailure: String?
        let cancelled: CancelFlag
        let tick: (Int64) -> Void

        init(fd: Int32, cancelled: CancelFlag, tick: @escaping (Int64) -> Void) {
            self.fd = fd
            self.cancelled = cancelled
            self.tick = tick
        }
    }

    private static let streamWrite: @convention(c) (UnsafeMutablePointer<CChar>?, Int, Int, UnsafeMutableRawPointer?) -> Int = {
        data, size, count, context in
        let length = size * count
        guard let context else { return 0 }
        let stream = Unmanaged<Stream>.fromOpaque(context).takeUnretainedValue()
        guard stream.sink.headers.status == 200 else { return 0 }
        guard length > 0, let data else { return length }
        let bytes = UnsafeRawBufferPointer(start: data, count: length)
        var done = 0
        while done < length {
            let n = write(stream.fd, data + done, length - done)
            if n < 0 {
                if errno == EINTR { continue }
                stream.writeFailure = String(cString: strerror(errno))
                return 0
            }
            done += n
        }
        stream.hasher.update(bytes)
        stream.received += Int64(length)
        stream.tick(stream.received)
        return length
    }

    private static let streamProgress: @convention(c) (UnsafeMutableRawPointer?, curl_off_t, curl_off_t, curl_off_t, curl_off_t) -> Int32 = {
        context, _, _, _, _ in
        guard let context else { return 0 }
        return Unmanaged<Stream>.fromOpaque(context).takeUnretainedValue().cancelled.isSet ? 1 : 0
    }

    private func singleStream(_ remote: RemoteFile, restarts: Int) throws(DownloadError) -> DownloadResult {
        var attempt = 0
        while true {
            attempt += 1
            if cancelled.isSet { throw .cancelled }
            discardPartial()
            if let size = remote.size { try checkFreeSpace(needed: size) }
            let fd = open(partialPath, O_RDWR | O_CREAT | O_TRUNC, 0o644)
            guard fd >= 0 else { throw ioError(partialPath, "create") }
            defer { close(fd) }
            var lastTick = clock.now
            var lastBytes: Int64 = 0
            let total = remote.size
            let stream = Stream(fd: fd, cancelled: cancelled) { [self] received in
                guard clock.now - lastTick >= .milliseconds(250) else { return }
                let seconds = Self.seconds(clock.now - lastTick)
                reportProgress(DownloadProgress(bytesDone: received, bytesTotal: total, bytesPerSecond: Double(received - lastBytes) / max(seconds, 0.001), activeConnections: 1))
                lastBytes = received
                lastTick = clock.now
            }
            let retained = Unmanaged.passRetained(stream)
            defer { retained.release() }
            let handle = try EasyHandle()
            handle.applyCommonOptions(userAgent: request.userAgent, stallSeconds: request.stallSeconds, connectTimeoutSeconds: request.connectTimeoutSeconds, policy: request.policy)
            handle.set(CURLOPT_URL, remote.url)
            if let url = URL(string: remote.url) { handle.setHeaders(headers(for: url, credentialOrigin: remote.credentialOrigin)) }
            _ = provision_easy_setopt_header_callback(handle.raw, headerCallback)
            handle.set(CURLOPT_HEADERDATA, pointer: Unmanaged.passUnretained(stream.sink).toOpaque())
            _ = provision_easy_setopt_write_callback(handle.raw, Self.streamWrite)
            handle.set(CURLOPT_WRITEDATA, pointer: retained.toOpaque())
            _ = provision_easy_setopt_xferinfo_callback(handle.raw, Self.streamProgress)
            handle.set(CURLOPT_XFERINFODATA, pointer: retained.toOpaque())
            handle.set(CURLOPT_NOPROGRESS, 0)
            let code = curl_easy_perform(handle.raw)
            fetchedBytes += stream.received
            if cancelled.isSet { throw .cancelled }
            if code != CURLE_OK, let refused = handle.refusedConnection(url: remote.url) {
                discardPartial()
                throw refused
            }
            let status = stream.sink.headers.status
            if code == CURLE_OK && status == 200 && (total == nil || stream.received == total) {
                let digest = stream.hasher.finalize()
                try place(fd: fd, size: stream.received, digest: digest)
                return result(bytes: stream.received, sha256: digest, skipped: false, resumed: 0, ranged: false, restarts: restarts)
            }
            let error: DownloadError
            var retryable = true
            if let failure = stream.writeFailure {
                error = .io(path: partialPath, operation: "write to", reason: failure)
                retryable = false
            } else if status != 200 && status != 0 {
                error = .http(url: shownURL, status: status, attempts: attempt)
                retryable = status == 408 || status == 429 || status >= 500
            } else if code == CURLE_OPERATION_TIMEDOUT {
                error = .stalled(url: shownURL, seconds: request.stallSeconds, attempts: attempt)
            } else if code == CURLE_OK {
                error = .sizeMismatch(path: request.destination, expected: total ?? -1, actual: stream.received)
            } else {
                error = .transport(url: shownURL, reason: String(cString: curl_easy_strerror(code)), attempts: attempt)
            }
            if !retryable || attempt >= request.maxAttemptsPerChunk {
                discardPartial()
                throw error
            }
            Thread.sleep(forTimeInterval: backoff(attempt: attempt, retryAfter: stream.sink.headers.retryAfterSeconds))
        }
    }

    // MARK: Files

    /// Size and hash checked, then the partial file becomes the final one in one rename.
    private func place(fd: Int32, size: Int64, digest: String) throws(DownloadError) {
        // An empty answer is more often a broken origin or an error page without a body than a
        // real model file: it is placed only when the job says so (size 0, or the empty file's hash).
        if size == 0 && request.expectedSize == nil && request.expectedSHA256 == nil {
            discardPartial()
            throw .badResponse(url: shownURL, reason: "the server sent an empty file, and no expected size of 0 was given")
        }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw ioError(partialPath, "inspect") }
        if Int64(info.st_size) != size {
            discardPartial()
            throw .sizeMismatch(path: request.destination, expected: size, actual: Int64(info.st_size))
        }
        if let expected = request.expectedSize, expected != size {
            discardPartial()
            throw .sizeMismatch(path: request.destination, expected: expected, actual: size)
        }
        if let expected = request.expectedSHA256?.lowercased(), expected != digest {
            discardPartial()
            throw .hashMismatch(path: request.destination, expected: expected, actual: digest)
        }
        guard fsync(fd) == 0 else { throw ioError(partialPath, "flush") }
        guard rename(partialPath, request.destination) == 0 else { throw ioError(request.destination, "rename the partial file to") }
        unlink(statePath)
        let directory = (request.destination as NSString).deletingLastPathComponent
        let dirfd = open(directory.isEmpty ? "." : directory, O_RDONLY)
        if dirfd >= 0 {
            fsync(dirfd)
            close(dirfd)
        }
    }

    private func createPartial(size: Int64) throws(DownloadError) {
        let fd = open(partialPath, O_RDWR | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw ioError(partialPath, "create") }
        defer { close(fd) }
        if size > 0 {
            // Reserve the space now, so a full disk fails here and not at 90 %.
            let status = posix_fallocate(fd, 0, off_t(size))
            if status != 0 {
                if status == ENOSPC { throw .insufficientSpace(path: request.destination, needed: size, available: freeSpace()) }
                guard ftruncate(fd, off_t(size)) == 0 else { throw ioError(partialPath, "size") }
            }
        }
    }

    private func checkFreeSpace(needed: Int64) throws(DownloadError) {
        let available = freeSpace()
        if available >= 0 && available < needed {
            throw .insufficientSpace(path: request.destination, needed: needed, available: available)
        }
    }

    private func freeSpace() -> Int64 {
        var info = statvfs()
        let directory = (request.destination as NSString).deletingLastPathComponent
        guard statvfs(directory.isEmpty ? "." : directory, &info) == 0 else { return -1 }
        return Int64(info.f_bavail) * Int64(info.f_frsize)
    }

    private func discardPartial() {
        unlink(partialPath)
        unlink(statePath)
    }

    private func saveState(_ remote: RemoteFile, table: ChunkTable) {
        let snapshot = table.snapshot()
        let state = ResumeState(
            url: URLPolicy.redact(request.url), size: table.size, validator: remote.validator, chunkSize: table.chunkSize,
            written: snapshot.written, hashedOffset: snapshot.hashedOffset, hashState: snapshot.hashState.base64EncodedString())
        state.save(statePath)
    }

    private func fileSize(_ path: String) -> Int64 {
        var info = stat()
        return stat(path, &info) == 0 ? Int64(info.st_size) : -1
    }

    private func ioError(_ path: String, _ operation: String) -> DownloadError {
        .io(path: path, operation: operation, errno: errno)
    }

    private func result(bytes: Int64, sha256: String, skipped: Bool, resumed: Int64, ranged: Bool, restarts: Int) -> DownloadResult {
        DownloadResult(
            path: request.destination, bytes: bytes, sha256: sha256, skipped: skipped, resumedBytes: resumed,
            fetchedBytes: fetchedBytes, seconds: Self.seconds(clock.now - started), ranged: ranged, restarts: restarts)
    }

    static func seconds(_ duration: Duration) -> Double {
        let (s, atto) = duration.components
        return Double(s) + Double(atto) / 1e18
    }
}

/// Hashes the written prefix of the partial file as it grows, then writes hashed bytes back and
/// drops them from the page cache.
final class HasherThread: @unchecked Sendable {
    private let fd: Int32
    private let table: ChunkTable
    private var hasher: SHA256Hasher
    private var offset: Int64
    private let done = DispatchSemaphore(value: 0)

    init(fd: Int32, table: ChunkTable, hasher: SHA256Hasher, offset: Int64) {
        self.fd = fd
        self.table = table
        self.hasher = hasher
        self.offset = offset
    }

    func start() {
        let thread = Thread { [self] in
            defer { done.signal() }
            let window = 8 << 20
            // A buffer for `pread`, used only where the file cannot be mapped.
            var buffer: UnsafeMutableRawBufferPointer?
            defer { buffer?.deallocate() }
            var writtenBack = offset
            // Ends of the ranges whose write-back was started, oldest first.
            var writing: [Int64] = []
            var released = offset
            while offset < table.size, let mark = table.waitForPrefix(beyond: offset) {
                while offset < mark {
                    let want = Int(min(Int64(window), mark - offset))
                    let n = hashMapped(want) ?? hashRead(want, buffer: &buffer, size: window)
                    guard n > 0 else { return }
                    offset += Int64(n)
                    table.recordHash(offset: offset, state: hasher.savedState)
                    guard offset - writtenBack >= 32 << 20 else { continue }
                    // Hashed bytes are final: start writing them back now, so the fsync before the
                    // rename does not flush gigabytes at once.
                    _ = provision_start_writeback(fd, off_t(writtenBack), off_t(offset - writtenBack))
                    writtenBack = offset
                    writing.append(offset)
                    // Once on disk (two ranges later, so this rarely waits) they leave the page
                    // cache. Their pages go back to the kernel, which hands them out again for the
                    // next writes: a download of any size cycles through a few hundred MiB instead
                    // of pushing everything else out of the cache. On a VM whose host takes back
                    // free memory (free page reporting), every never-reused page costs a fault in
                    // the host: 2 GiB into such pages took 4.8-6.2 s here, into just-freed ones 0.5 s.
                    if writing.count > 2 {
                        let end = writing.removeFirst()
                        _ = provision_release_written(fd, off_t(released), off_t(end - released))
                        released = end
                    }
                }
            }
        }
        thread.name = "provision-sha256"
        thread.start()
    }

    func wait() { done.wait() }

    /// Hashes `count` bytes at `offset` straight from the page cache through a read-only mapping:
    /// a `pread` into a buffer would copy every byte once more. Nil when the file cannot be mapped.
    /// Only bytes below the written prefix are read, and provision never shortens a partial file in
    /// place (a new download of the same destination unlinks it and creates another), so the
    /// mapping stays inside the file.
    private func hashMapped(_ count: Int) -> Int? {
        let page = Int64(sysconf(Int32(_SC_PAGESIZE)))
        let base = offset / page * page
        let span = Int(offset - base) + count
        guard let map = mmap(nil, span, PROT_READ, MAP_SHARED, fd, off_t(base)), map != MAP_FAILED else { return nil }
        defer { munmap(map, span) }
        hasher.update(UnsafeRawBufferPointer(start: map + Int(offset - base), count: count))
        return count
    }

    /// Hashes up to `count` bytes at `offset` read with `pread`; 0 or less on a read error.
    private func hashRead(_ count: Int, buffer: inout UnsafeMutableRawBufferPointer?, size: Int) -> Int {
        let target = buffer ?? UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 4096)
        buffer = target
        var n: Int
        repeat { n = pread(fd, target.baseAddress, count, off_t(offset)) } while n < 0 && errno == EINTR
        if n > 0 { hasher.update(UnsafeRawBufferPointer(rebasing: target[0..<n])) }
        return n
    }
}
