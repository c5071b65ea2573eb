import Foundation

/// Which URLs may be fetched, how they are shown, and which credentials go to which host.
public struct URLPolicy: Sendable {
    /// Loopback and private origins are refused unless this is set (tests, demos).
    public var allowLoopback: Bool
    /// Host suffix → environment variable holding a bearer token for it.
    public var tokenHosts: [(suffix: String, variable: String)] = [
        ("huggingface.co", "HF_TOKEN"), ("civitai.com", "CIVITAI_TOKEN"),
    ]

    public init(allowLoopback: Bool = false) {
        self.allowLoopback = allowLoopback
    }

    /// Parses and checks a URL: http/https only, a host, no userinfo smuggling, loopback only when allowed.
    public func check(_ text: String) throws(DownloadError) -> URL {
        guard let url = URL(string: text), let components = URLComponents(url: url, resolvingAgainstBaseURL: false)
        else { throw .invalidURL(Self.redact(text), reason: "it is not a valid URL") }
        guard let scheme = components.scheme?.lowercased(), scheme == "http" || scheme == "https" else {
            throw .invalidURL(Self.redact(text), reason: "only http and https URLs are allowed")
        }
        guard let host = components.host?.lowercased(), !host.isEmpty else {
            throw .invalidURL(Self.redact(text), reason: "it names no host")
        }
        if components.user != nil || components.password != nil {
            throw .invalidURL(Self.redact(text), reason: "credentials in the URL are not allowed; use a token variable or a header")
        }
        if !allowLoopback && Self.isLocal(host) {
            throw .invalidURL(Self.redact(text), reason: "local and private addresses are not allowed")
        }
        return url
    }

    /// The URL as it may be shown: no userinfo, no query (signed URLs carry secrets there), no fragment.
    public static func redact(_ text: String) -> String {
        guard var components = URLComponents(string: text) else {
            return String(text.prefix { $0 != "?" && $0 != "#" }.prefix(200))
        }
        components.user = nil
        components.password = nil
        let hadQuery = components.query != nil
        components.query = nil
        components.fragment = nil
        return (components.string ?? "(url)") + (hadQuery ? "?…" : "")
    }

    /// The `Authorization` header for a host from the environment (HF_TOKEN, CIVITAI_TOKEN), if any.
    public func authorization(for host: String, environment: [String: String]) -> String? {
        let host = host.lowercased()
        for (suffix, variable) in tokenHosts where host == suffix || host.hasSuffix("." + suffix) {
            if let token = environment[variable], !token.isEmpty { return "Bearer \(token)" }
        }
        return nil
    }

    static func isLocal(_ host: String) -> Bool {
        let h = host.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        if h == "localhost" || h.hasSuffix(".localhost") || h == "::1" || h == "0.0.0.0" || h.hasPrefix("fe80:") { return true }
        let octets = h.split(separator: ".").compactMap { Int($0) }
        guard octets.count == 4, h.split(separator: ".").count == 4 else { return false }
        switch (octets[0], octets[1]) {
        case (127, _), (10, _), (0, _), (169, 254), (192, 168): return true
        case (172, 16...31): return true
        default: return false
        }
    }
}
