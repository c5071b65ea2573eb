import CCurl
import CCurlShim
import Foundation

/// libcurl set-up done once per process, before any thread uses curl.
enum CurlGlobal {
    static let ready: Bool = {
        // A write past the process's file size limit (`ulimit -f`) must come back as EFBIG, an
        // error the download can name, instead of SIGXFSZ killing the worker without a word.
        signal(SIGXFSZ, SIG_IGN)
        return curl_global_init(Int(CURL_GLOBAL_DEFAULT)) == CURLE_OK
    }()

    static var version: String {
        guard let info = provision_curl_version_info(), let text = info.pointee.version else { return "?" }
        return String(cString: text)
    }
}

/// One libcurl easy handle, reused across requests (it keeps its connection alive). Owned by the
/// thread that runs the download; never shared between threads.
final class EasyHandle {
    let raw: UnsafeMutableRawPointer
    private var headerList: UnsafeMutablePointer<curl_slist>?
    /// Checks the address of every connection this handle opens against the request's policy.
    let connectionGuard = ConnectionGuard()
    private let guardRecord: UnsafeMutablePointer<provision_connection_guard>

    init() throws(DownloadError) {
        guard CurlGlobal.ready, let raw = curl_easy_init() else {
            throw .transport(url: "-", reason: "libcurl could not be initialised", attempts: 0)
        }
        self.raw = raw
        guardRecord = .allocate(capacity: 1)
        guardRecord.initialize(to: provision_connection_guard(
            check: connectionCheck, context: Unmanaged.passUnretained(connectionGuard).toOpaque()))
    }

    deinit {
        if let headerList { curl_slist_free_all(headerList) }
        curl_easy_cleanup(raw)
        guardRecord.deallocate()
    }

    /// Resets the handle for a new request, keeping its connection cache.
    func reset() {
        curl_easy_reset(raw)
        if let headerList { curl_slist_free_all(headerList) }
        headerList = nil
    }

    /// The error for a request that failed because a connection went to a refused address, if so.
    func refusedConnection(url: String) -> DownloadError? {
        connectionGuard.refused.map { .invalidURL(URLPolicy.redact(url), reason: "a connection would go to \($0)") }
    }

    func set(_ option: CURLoption, _ value: Int) { _ = provision_easy_setopt_long(raw, option, value) }
    func set(_ option: CURLoption, _ value: String) { _ = provision_easy_setopt_string(raw, option, value) }
    func set(_ option: CURLoption, pointer: UnsafeMutableRawPointer?) { _ = provision_easy_setopt_pointer(raw, option, pointer) }

    func setHeaders(_ headers: [String]) {
        if let headerList { curl_slist_free_all(headerList) }
        headerList = nil
        for header in headers { headerList = curl_slist_append(headerList, header) }
        _ = provision_easy_setopt_pointer(raw, CURLOPT_HTTPHEADER, UnsafeMutableRawPointer(headerList))
    }

    var responseCode: Int {
        var code = 0
        _ = provision_easy_getinfo_long(raw, CURLINFO_RESPONSE_CODE, &code)
        return code
    }

    /// Options every request of one download uses.
    func applyCommonOptions(for request: DownloadRequest) {
        applyCommonOptions(userAgent: request.userAgent, stallSeconds: request.stallSeconds, connectTimeoutSeconds: request.connectTimeoutSeconds, policy: request.policy)
        // Trust this file's certificates instead of the system's (a private mirror, the bench's
        // self-signed origin); the peer and its name are still verified.
        if let caFile = request.caFile { set(CURLOPT_CAINFO, caFile) }
    }

    /// Options every request of ours uses.
    func applyCommonOptions(userAgent: String, stallSeconds: Int, connectTimeoutSeconds: Int, policy: URLPolicy) {
        connectionGuard.policy = policy
        connectionGuard.refused = nil
        _ = provision_easy_guard_connections(raw, guardRecord)
        set(CURLOPT_NOSIGNAL, 1)
        set(CURLOPT_FOLLOWLOCATION, 0)  // redirects are followed by hand, to control credentials
        set(CURLOPT_PROTOCOLS_STR, "http,https")
        // HTTP/1.1 also over TLS, where HTTP/2 was offered before: each connection carries one
        // request at a time (a CDN caps each connection, so multiplexing would not help), and
        // HTTP/2's framing then only costs CPU: 2 GiB at N=8 from an nginx offering both
        // (bench/downloads, route h2-full) took a median 3.19 s with HTTP/1.1, 3.40 s with HTTP/2.
        set(CURLOPT_HTTP_VERSION, Int(CURL_HTTP_VERSION_1_1))
        set(CURLOPT_USERAGENT, userAgent)
        set(CURLOPT_CONNECTTIMEOUT, connectTimeoutSeconds)
        set(CURLOPT_LOW_SPEED_LIMIT, 1)
        set(CURLOPT_LOW_SPEED_TIME, stallSeconds)
        set(CURLOPT_TCP_KEEPALIVE, 1)
        set(CURLOPT_BUFFERSIZE, 512 * 1024)
    }
}

/// The policy a handle's connections are checked against, and the first refusal of its current
/// request. Touched only by the thread that runs the handle (libcurl calls back on it).
final class ConnectionGuard {
    var policy = URLPolicy()
    /// `ADDRESS (why)` of the first connection refused since the request began.
    var refused: String?
}

/// libcurl's open-socket callback (through the C shim): allows a connection only to an address
/// the policy permits. Sockets of other families (unix) are refused: we only speak HTTP over IP.
private let connectionCheck: @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<sockaddr>?, UInt32) -> Int32 = {
    context, address, length in
    guard let context, let address else { return 0 }
    let guardian = Unmanaged<ConnectionGuard>.fromOpaque(context).takeUnretainedValue()
    guard let (ip, port) = NetworkAddress.from(address, length: Int(length)) else {
        if guardian.refused == nil { guardian.refused = "an address that is not IPv4 or IPv6" }
        return 0
    }
    if let refusal = guardian.policy.refusal(address: ip, port: port) {
        if guardian.refused == nil { guardian.refused = "\(ip), \(refusal)" }
        return 0
    }
    return 1
}

/// Response headers of one request, parsed as they arrive.
struct ResponseHeaders {
    var status = 0
    var fields: [String: String] = [:]

    /// Feeds one header line; a status line starts a new response (after 100 Continue or a redirect).
    mutating func feed(_ line: String) {
        let trimmed = line.trimmingCharacters(in: .whitespacesAndNewlines)
        if trimmed.hasPrefix("HTTP/") {
            fields = [:]
            let parts = trimmed.split(separator: " ")
            status = parts.count > 1 ? Int(parts[1]) ?? 0 : 0
            return
        }
        guard let colon = trimmed.firstIndex(of: ":") else { return }
        let name = trimmed[..<colon].lowercased()
        let value = trimmed[trimmed.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        fields[name] = value
    }

    subscript(name: String) -> String? { fields[name] }

    /// `Content-Range: bytes START-END/TOTAL` (TOTAL may be `*`), or `bytes */TOTAL` on 416.
    var contentRange: (start: Int64?, end: Int64?, total: Int64?)? {
        guard let value = fields["content-range"], value.lowercased().hasPrefix("bytes ") else { return nil }
        let spec = value.dropFirst(6)
        let halves = spec.split(separator: "/", maxSplits: 1)
        guard halves.count == 2 else { return nil }
        let total = Int64(halves[1])
        if halves[0] == "*" { return (nil, nil, total) }
        let bounds = halves[0].split(separator: "-", maxSplits: 1)
        guard bounds.count == 2, let start = Int64(bounds[0]), let end = Int64(bounds[1]) else { return nil }
        return (start, end, total)
    }

    /// Seconds to wait from `Retry-After` (delta seconds or an HTTP date).
    var retryAfterSeconds: Double? {
        guard let value = fields["retry-after"] else { return nil }
        if let seconds = Double(value) { return max(0, seconds) }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        return formatter.date(from: value).map { max(0, $0.timeIntervalSinceNow) }
    }
}

/// The header callback shared by every request: appends lines to the `ResponseHeaders` of the
/// request's `HeaderSink`.
final class HeaderSink {
    var headers = ResponseHeaders()
}

let headerCallback: @convention(c) (UnsafeMutablePointer<CChar>?, Int, Int, UnsafeMutableRawPointer?) -> Int = {
    data, size, count, context in
    let length = size * count
    guard let data, let context else { return length }
    let sink = Unmanaged<HeaderSink>.fromOpaque(context).takeUnretainedValue()
    let line = data.withMemoryRebound(to: UInt8.self, capacity: length) {
        String(decoding: UnsafeBufferPointer(start: $0, count: length), as: UTF8.self)
    }
    sink.headers.feed(line)
    return length
}
