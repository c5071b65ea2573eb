import CCurl
import CCurlShim
import Foundation

/// One chunk request. Bytes are gathered in `staging` and written in pieces that end on
/// `writeSize` boundaries of the file: libcurl hands over 16 KiB at a time at any offset, and a
/// write that starts or ends inside a block of a new file makes the kernel zero the rest of the
/// block first. 64 KiB stays in the L2 cache between the copy and the write; 128 and 256 KiB
/// were measured slower (bench/downloads/README.md).
final class ChunkRequest {
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


private let chunkWrite: @convention(c) (UnsafeMutablePointer<CChar>?, Int, Int, UnsafeMutableRawPointer?) -> Int = {
    data, size, count, context in
    let length = size * count
    guard let context else { return 0 }
    let request = Unmanaged<ChunkRequest>.fromOpaque(context).takeUnretainedValue()
    guard length > 0, let data else { return length }
    return request.accept(UnsafeRawBufferPointer(start: data, count: length)) ? length : 0
}

/// The curl multi driver: N easy handles (one connection each) fetch the chunks the
/// `ChunkScheduler` hands out into the partial file, and turn finished requests into its events.
extension DownloadSession {
    /// How far the hasher may fall behind the written prefix before the transfer loop yields. At
    /// N=8 on 2 CPUs the hasher got ~75 % of one and ended 300-600 MiB behind (0.2-0.4 s of
    /// hashing alone after the last byte); a chunk completing moves the prefix by up to 64 MiB at
    /// once, which alone must not cause a pause.
    static let hasherLagLimit: Int64 = 128 << 20
    static let yieldMicroseconds: UInt32 = 1000

    func transferChunks(_ probed: RemoteFile, table: ChunkTable, fd: Int32, connections: Int) throws(DownloadError) {
        guard let multi = curl_multi_init() else { throw .transport(url: shownURL, reason: "libcurl could not start", attempts: 0) }
        defer { curl_multi_cleanup(multi) }
        // One request per connection: a CDN caps each connection, so HTTP/2 multiplexing would not help.
        _ = provision_multi_setopt_long(multi, CURLMOPT_PIPELINING, 0)
        _ = provision_multi_setopt_long(multi, CURLMOPT_MAX_HOST_CONNECTIONS, connections)

        var scheduler = ChunkScheduler(starts: table.starts, size: table.size, written: table.snapshot().written, retry: retryPolicy)
        let slotCount = min(connections, max(1, scheduler.connectionsWanted))
        var handles: [EasyHandle] = []
        for _ in 0..<slotCount { handles.append(try EasyHandle()) }
        let staging = (0..<slotCount).map { _ in UnsafeMutableRawPointer.allocate(byteCount: ChunkRequest.writeSize, alignment: 4096) }
        defer { staging.forEach { $0.deallocate() } }
        var inFlight: [Int: (request: ChunkRequest, retained: Unmanaged<ChunkRequest>)] = [:]  // slot → request
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

        while !scheduler.isFinished {
            if cancelled.isSet { throw .cancelled }
            let now = clock.now
            for slot in handles.indices where inFlight[slot] == nil {
                guard let index = scheduler.next(at: now) else { break }
                let range = ChunkScheduler.missingRange(of: index, starts: table.starts, size: table.size, written: table.snapshot().written[index])
                let chunk = ChunkRequest(index: index, start: range.start, end: range.end, fd: fd, table: table, urlGeneration: urlGeneration, staging: staging[slot])
                let retained = Unmanaged.passRetained(chunk)
                let handle = handles[slot]
                handle.reset()
                handle.applyCommonOptions(for: request)
                handle.set(CURLOPT_URL, remote.url)
                handle.set(CURLOPT_RANGE, "\(range.start)-\(range.end)")
                handle.setHeaders(baseHeaders + (validator.map { ["If-Range: \($0)"] } ?? []))
                _ = provision_easy_setopt_header_callback(handle.raw, headerCallback)
                handle.set(CURLOPT_HEADERDATA, pointer: Unmanaged.passUnretained(chunk.sink).toOpaque())
                _ = provision_easy_setopt_write_callback(handle.raw, chunkWrite)
                handle.set(CURLOPT_WRITEDATA, pointer: retained.toOpaque())
                curl_multi_add_handle(multi, handle.raw)
                inFlight[slot] = (chunk, retained)
            }

            // The hasher is the download's critical path when CPU is short: a transfer far ahead
            // of it gives way for a moment (the socket buffers keep filling meanwhile), so that
            // the hashing is not left to do alone after the last byte.
            if table.hashLag > Self.hasherLagLimit { usleep(Self.yieldMicroseconds) }
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
                let chunk = entry.request
                if code != CURLE_OK, let refused = handles[slot].refusedConnection(url: remote.url) { throw refused }
                _ = chunk.flush()  // a failed write is left in `writeFailure`, for `classify`
                fetchedBytes += chunk.received
                freed = true
                if code == CURLE_OK && table.isComplete(chunk.index) {
                    scheduler.completed(chunk.index)
                    completedSinceSave = true
                    continue
                }
                if chunk.remoteChanged { throw .remoteChanged(url: shownURL) }
                let status = chunk.sink.headers.status
                if [401, 403, 410].contains(status), remote.url != request.url {
                    if chunk.urlGeneration == urlGeneration {
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
                    scheduler.requeue(chunk.index)
                    continue
                }
                let verdict = scheduler.failed(
                    chunk.index, received: chunk.received, retryable: classify(code: code, chunk: chunk, attempts: 0).retryable,
                    retryAfter: chunk.sink.headers.retryAfterSeconds, at: clock.now)
                if case .fail(let attempt) = verdict { throw classify(code: code, chunk: chunk, attempts: attempt).error }
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
                partial.saveState(url: request.url, validator: remote.validator, table: table)
                lastSave = clock.now
                completedSinceSave = false
            }
            // A connection that just finished its chunk gets the next one at once, not after a poll.
            let moment = clock.now
            if !(freed && scheduler.hasReady(at: moment)) && !scheduler.isFinished {
                // With nothing in flight, sleep only until the first backoff ends.
                var timeout = 100
                if inFlight.isEmpty, let due = scheduler.nextReadyInstant() {
                    timeout = max(1, min(100, Int((Self.seconds(due - moment) * 1000).rounded(.up))))
                }
                var ready: Int32 = 0
                curl_multi_poll(multi, nil, 0, Int32(timeout), &ready)
            }
        }
    }

    private func classify(code: CURLcode, chunk: ChunkRequest, attempts: Int) -> (error: DownloadError, retryable: Bool) {
        let status = chunk.sink.headers.status
        if let failure = chunk.writeFailure {
            // A full disk, a file size limit or an I/O error: fetching the chunk again writes nothing.
            return (.io(path: partial.path, operation: "write to", reason: failure), false)
        }
        if let problem = chunk.problem {
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
}
