import CCurl
import CCurlShim
import Foundation

/// A server without Range support, or a file of unknown size: one request, written and hashed as it
/// arrives, retried from the start.
extension DownloadSession {
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

    func singleStream(_ remote: RemoteFile, restarts: Int) throws(DownloadError) -> DownloadResult {
        var attempt = 0
        while true {
            attempt += 1
            if cancelled.isSet { throw .cancelled }
            partial.discard()
            if let size = remote.size { try partial.checkFreeSpace(needed: size) }
            let fd = try partial.truncated()
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
            handle.applyCommonOptions(for: request)
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
                partial.discard()
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
                error = .io(path: partial.path, operation: "write to", reason: failure)
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
                partial.discard()
                throw error
            }
            Thread.sleep(forTimeInterval: retryPolicy.delay(attempt: attempt, retryAfter: stream.sink.headers.retryAfterSeconds))
        }
    }
}
