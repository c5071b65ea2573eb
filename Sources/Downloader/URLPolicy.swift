import Foundation

/// Which URLs may be fetched, how they are shown, and which credentials go to which host.
///
/// Local and private addresses are refused on the address a connection actually goes to, not on the
/// host's spelling: `check` resolves the host and refuses it when any of its addresses is local (a
/// clear error before any connection), and `ConnectionGuard` asks `permits` again about the
/// address of every socket libcurl opens, redirects included, so a name that resolves differently
/// a moment later (DNS rebinding) cannot slip through.
package struct URLPolicy: Sendable {
    /// An address and port connections may go to although the address is local (a test origin, a
    /// mirror on the machine), e.g. `127.0.0.1:8080` or `[::1]:8080`.
    package struct AllowedOrigin: Sendable, Hashable, CustomStringConvertible {
        package var address: NetworkAddress
        package var port: Int

        package init(address: NetworkAddress, port: Int) {
            self.address = address
            self.port = port
        }

        /// Parses `ADDRESS:PORT` (`[IPv6]:PORT`); the address must be numeric, so what is allowed
        /// does not depend on DNS.
        package init?(_ text: String) {
            guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port),
                let address = NetworkAddress(numeric: String(text[..<colon])),
                address.isIPv4 || text.hasPrefix("[")
            else { return nil }
            self.init(address: address, port: port)
        }

        package var description: String { address.isIPv4 ? "\(address):\(port)" : "[\(address)]:\(port)" }
    }

    /// Loopback and private origins are refused unless this is set (tests, demos).
    package var allowLoopback: Bool
    /// Local addresses allowed one by one (with their port), when `allowLoopback` is off.
    package var allowedOrigins: Set<AllowedOrigin>
    /// Host suffix → environment variable holding a bearer token for it.
    package var tokenHosts: [(suffix: String, variable: String)] = [
        ("huggingface.co", "HF_TOKEN"), ("civitai.com", "CIVITAI_TOKEN"),
    ]

    package init(allowLoopback: Bool = false, allowedOrigins: Set<AllowedOrigin> = []) {
        self.allowLoopback = allowLoopback
        self.allowedOrigins = allowedOrigins
    }

    /// Parses and checks a URL: http/https only, a host, no userinfo smuggling, and every address the
    /// host resolves to public (or allowed). Resolves the host: call it off the cooperative pool.
    package func check(_ text: String) throws(DownloadError) -> URL {
        try check(text, resolving: true)
    }

    /// `check` without asking the resolver: numeric hosts and `localhost` names are judged, other
    /// names wait for the connection (a payload's validation, which must not block on DNS).
    package func checkWithoutResolving(_ text: String) throws(DownloadError) -> URL {
        try check(text, resolving: false)
    }

    private func check(_ text: String, resolving: Bool) throws(DownloadError) -> URL {
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
        if allowLoopback { return url }
        let port = components.port ?? (scheme == "https" ? 443 : 80)
        // `localhost` names are loopback whatever a resolver says (RFC 6761).
        if host == "localhost" || host.hasSuffix(".localhost") || host.hasSuffix(".localhost.") {
            throw .invalidURL(Self.redact(text), reason: "'\(host)' is a loopback name, and local and private addresses are not allowed")
        }
        // A numeric address is checked as such even where the resolver would not take it.
        let addresses = NetworkAddress(numeric: host).map { [$0] } ?? (resolving ? NetworkAddress.resolve(host) : [])
        for address in addresses {
            if let refusal = refusal(address: address, port: port) {
                throw .invalidURL(Self.redact(text), reason: "its host resolves to \(address), \(refusal)")
            }
        }
        return url
    }

    /// Why a connection to `address`:`port` is not allowed, or nil when it is.
    package func refusal(address: NetworkAddress, port: Int) -> String? {
        if allowLoopback { return nil }
        guard let range = address.restrictedRange else { return nil }
        if allowedOrigins.contains(AllowedOrigin(address: address, port: port)) { return nil }
        let article = range.first.map { "aeiou".contains($0) } == true ? "an" : "a"
        return "\(article) \(range) address, and local and private addresses are not allowed"
    }

    /// The URL as it may be shown: no userinfo, no query (signed URLs carry secrets there), no fragment.
    package static func redact(_ text: String) -> String {
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
    package func authorization(for host: String, environment: [String: String]) -> String? {
        let host = host.lowercased()
        for (suffix, variable) in tokenHosts where host == suffix || host.hasSuffix("." + suffix) {
            if let token = environment[variable], !token.isEmpty { return "Bearer \(token)" }
        }
        return nil
    }
}
