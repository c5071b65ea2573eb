import CCurl
import CCurlShim
import Foundation

/// A small GET into memory (API responses, not model files): same URL policy, no redirects to
/// other origins with credentials, a size limit.
package struct SmallFetch: Sendable {
    package var policy: URLPolicy
    package var headers: [(name: String, value: String)]
    package var limit: Int
    package var timeoutSeconds = 60

    package init(policy: URLPolicy = URLPolicy(), headers: [(name: String, value: String)] = [], limit: Int = 64 << 20) {
        self.policy = policy
        self.headers = headers
        self.limit = limit
    }

    private final class Sink {
        var data = Data()
        let limit: Int
        init(limit: Int) { self.limit = limit }
    }

    private static let write: @convention(c) (UnsafeMutablePointer<CChar>?, Int, Int, UnsafeMutableRawPointer?) -> Int = {
        bytes, size, count, context in
        guard let bytes, let context else { return 0 }
        let sink = Unmanaged<Sink>.fromOpaque(context).takeUnretainedValue()
        guard sink.data.count + size * count <= sink.limit else { return 0 }
        sink.data.append(UnsafeRawPointer(bytes).assumingMemoryBound(to: UInt8.self), count: size * count)
        return size * count
    }

    /// GETs `url` and returns the body of a 2xx answer.
    package func get(_ url: String) async throws(DownloadError) -> Data {
        let shown = URLPolicy.redact(url)
        let result: Result<Data, DownloadError> = await withCheckedContinuation { [policy, headers, limit, timeoutSeconds] continuation in
            // The policy resolves the host: a blocking call, kept off the cooperative pool.
            Thread {
                do throws(DownloadError) {
                    let checked = try policy.check(url)
                    continuation.resume(returning: Self.perform(checked, shown: shown, policy: policy, headers: headers, limit: limit, timeout: timeoutSeconds))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }.start()
        }
        return try result.get()
    }

    private static func perform(_ url: URL, shown: String, policy: URLPolicy, headers: [(name: String, value: String)], limit: Int, timeout: Int) -> Result<Data, DownloadError> {
        let handle: EasyHandle
        do { handle = try EasyHandle() } catch { return .failure(error) }
        let sink = Sink(limit: limit)
        let retained = Unmanaged.passRetained(sink)
        defer { retained.release() }
        handle.applyCommonOptions(userAgent: "provision/0.1", stallSeconds: timeout, connectTimeoutSeconds: 30, policy: policy)
        handle.set(CURLOPT_URL, url.absoluteString)
        handle.set(CURLOPT_TIMEOUT, timeout)
        handle.setHeaders(headers.map { "\($0.name): \($0.value)" } + ["Accept: application/json"])
        _ = provision_easy_setopt_write_callback(handle.raw, write)
        handle.set(CURLOPT_WRITEDATA, pointer: retained.toOpaque())
        let code = curl_easy_perform(handle.raw)
        let status = handle.responseCode
        if code != CURLE_OK && !(code == CURLE_WRITE_ERROR && status >= 300) {
            if let refused = handle.refusedConnection(url: url.absoluteString) { return .failure(refused) }
            if code == CURLE_WRITE_ERROR { return .failure(.badResponse(url: shown, reason: "the answer is larger than \(limit) bytes")) }
            return .failure(.transport(url: shown, reason: String(cString: curl_easy_strerror(code)), attempts: 1))
        }
        guard (200..<300).contains(status) else { return .failure(.http(url: shown, status: status, attempts: 1)) }
        return .success(sink.data)
    }
}
