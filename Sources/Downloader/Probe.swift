import CCurl
import CCurlShim
import Foundation

/// What a ranged probe learnt about a remote file.
struct RemoteFile: Sendable, Equatable {
    /// Where the bytes are, after redirects (often a signed CDN URL).
    var url: String
    /// The origin (scheme, host, port) credentials were given for; they go nowhere else.
    var credentialOrigin: String
    var size: Int64?
    var acceptsRanges: Bool
    var etag: String?
    var lastModified: String?

    /// The validator for `If-Range`: a strong ETag, else Last-Modified.
    var validator: String? {
        if let etag, !etag.hasPrefix("W/") { return etag }
        return lastModified
    }
}

/// The body of a probe is discarded; a server that ignores Range is cut off after its headers.
private let discardCallback: @convention(c) (UnsafeMutablePointer<CChar>?, Int, Int, UnsafeMutableRawPointer?) -> Int = {
    _, size, count, context in
    guard let context else { return size * count }
    let sink = Unmanaged<HeaderSink>.fromOpaque(context).takeUnretainedValue()
    return sink.headers.status == 206 ? size * count : 0
}

extension DownloadSession {
    /// `GET` with `Range: bytes=0-0`, following redirects by hand (at most 10) so that credentials
    /// and custom headers reach only the host they were given for, and every hop is checked.
    func probe(attempt: Int = 1) throws(DownloadError) -> RemoteFile {
        let handle = try EasyHandle()
        var current = try request.policy.check(request.url)
        let credentialOrigin = Self.origin(of: current)
        for _ in 0...10 {
            let headers = try rangedHead(current, on: handle, credentialOrigin: credentialOrigin, body: discardCallback, attempt: attempt)
            let shown = URLPolicy.redact(current.absoluteString)
            switch headers.status {
            case 301, 302, 303, 307, 308:
                current = try redirectTarget(headers, from: current)
                continue
            case 206:
                guard let range = headers.contentRange, range.start == 0, let total = range.total else {
                    throw .badResponse(url: shown, reason: "a partial response without a valid Content-Range")
                }
                return RemoteFile(url: current.absoluteString, credentialOrigin: credentialOrigin, size: total, acceptsRanges: true, etag: headers["etag"], lastModified: headers["last-modified"])
            case 200:
                let size = headers["content-length"].flatMap { Int64($0) }
                return RemoteFile(url: current.absoluteString, credentialOrigin: credentialOrigin, size: size, acceptsRanges: false, etag: headers["etag"], lastModified: headers["last-modified"])
            case 416:
                // An empty file: no byte 0 to send.
                if let range = headers.contentRange, range.total == 0 {
                    return RemoteFile(url: current.absoluteString, credentialOrigin: credentialOrigin, size: 0, acceptsRanges: true, etag: headers["etag"], lastModified: headers["last-modified"])
                }
                throw .http(url: shown, status: 416, attempts: attempt)
            default:
                throw .http(url: shown, status: headers.status, attempts: attempt)
            }
        }
        throw .tooManyRedirects(url: URLPolicy.redact(request.url))
    }

    /// One `GET` of byte 0 of `url` on `handle`, returning the response headers. `body` receives the
    /// body and may refuse it (a write error after headers arrived is our own cut-off, not a failure).
    func rangedHead(
        _ url: URL, on handle: EasyHandle, credentialOrigin: String,
        body: @convention(c) (UnsafeMutablePointer<CChar>?, Int, Int, UnsafeMutableRawPointer?) -> Int, attempt: Int
    ) throws(DownloadError) -> ResponseHeaders {
        let sink = HeaderSink()
        let box = Unmanaged.passRetained(sink)
        defer { box.release() }
        handle.reset()
        handle.applyCommonOptions(for: request)
        handle.set(CURLOPT_URL, url.absoluteString)
        handle.set(CURLOPT_RANGE, "0-0")
        handle.setHeaders(headers(for: url, credentialOrigin: credentialOrigin))
        _ = provision_easy_setopt_header_callback(handle.raw, headerCallback)
        handle.set(CURLOPT_HEADERDATA, pointer: box.toOpaque())
        _ = provision_easy_setopt_write_callback(handle.raw, body)
        handle.set(CURLOPT_WRITEDATA, pointer: box.toOpaque())
        let code = curl_easy_perform(handle.raw)
        let headers = sink.headers
        lastRetryAfter = headers.retryAfterSeconds
        if code != CURLE_OK && !(code == CURLE_WRITE_ERROR && headers.status != 0) {
            if let refused = handle.refusedConnection(url: url.absoluteString) { throw refused }
            let shown = URLPolicy.redact(url.absoluteString)
            if code == CURLE_OPERATION_TIMEDOUT { throw .stalled(url: shown, seconds: request.stallSeconds, attempts: attempt) }
            throw .transport(url: shown, reason: String(cString: curl_easy_strerror(code)), attempts: attempt)
        }
        return headers
    }

    /// The checked target of a redirect response.
    func redirectTarget(_ headers: ResponseHeaders, from url: URL) throws(DownloadError) -> URL {
        guard let location = headers["location"], let next = URL(string: location, relativeTo: url)?.absoluteURL else {
            throw .badResponse(url: URLPolicy.redact(url.absoluteString), reason: "a redirect without a usable Location")
        }
        return try request.policy.check(next.absoluteString)
    }

    /// Request headers for `url`: the job's headers and the token only for the origin they were given for.
    func headers(for url: URL, credentialOrigin: String) -> [String] {
        guard Self.origin(of: url) == credentialOrigin, let host = url.host else { return [] }
        var lines = request.headers.map { "\($0.name): \($0.value)" }
        let hasAuthorization = request.headers.contains { $0.name.lowercased() == "authorization" }
        if !hasAuthorization, let token = request.policy.authorization(for: host, environment: request.environment) {
            lines.append("Authorization: \(token)")
        }
        return lines
    }

    /// `scheme://host:port`, the unit credentials are given for (a redirect to another port is another origin).
    static func origin(of url: URL) -> String {
        let scheme = url.scheme?.lowercased() ?? ""
        let port = url.port ?? (scheme == "https" ? 443 : 80)
        return "\(scheme)://\(url.host?.lowercased() ?? ""):\(port)"
    }
}
