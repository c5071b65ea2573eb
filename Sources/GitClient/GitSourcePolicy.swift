import Foundation

/// Which git ref a spec names.
package enum GitRef: Sendable, Equatable, CustomStringConvertible {
    case commit(String)
    case tag(String)
    case branch(String)
    /// The remote's default branch.
    case head

    package var description: String {
        switch self {
        case .commit(let id): return "commit \(id)"
        case .tag(let name): return "tag \(name)"
        case .branch(let name): return "branch \(name)"
        case .head: return "the default branch"
        }
    }
}

/// Where git sources may come from, one policy for the worker's clones, the lock's look-ups and
/// uv's `git+https` requirements: operator rewrites (like git's `insteadOf`, e.g. a local mirror),
/// https with a host and no credentials (a credential helper keeps those out of output, events and
/// Redis), `file://` only when local sources are allowed, and ref names that cannot become options.
package struct GitSourcePolicy: Sendable {
    /// Prefix rewrites applied before anything contacts a repository; the first match wins.
    package var rewrites: [(from: String, to: String)]
    /// Allow `file://` and absolute paths (local mirrors, tests).
    package var allowLocal: Bool

    package init(rewrites: [(from: String, to: String)] = [], allowLocal: Bool = false) {
        self.rewrites = rewrites
        self.allowLocal = allowLocal
    }

    /// The URL after the first matching rewrite.
    package func rewritten(_ url: String) -> String {
        for rule in rewrites where url.hasPrefix(rule.from) { return rule.to + url.dropFirst(rule.from.count) }
        return url
    }

    /// The URL git will contact: the given one checked, rewritten, and the result checked again.
    package func resolve(_ url: String) throws(GitError) -> String {
        try check(rewritten(try check(url)))
    }

    /// Checks one URL against the policy; returns it unchanged.
    package func check(_ url: String) throws(GitError) -> String {
        guard !url.isEmpty, url.utf8.count <= 2048 else { throw GitError(.refused, "the repository URL '\(url.prefix(100))' is empty or longer than 2048 bytes") }
        guard !url.hasPrefix("-"), !url.unicodeScalars.contains(where: { $0.value < 0x21 || $0.value == 0x7F }) else {
            throw GitError(.refused, "the repository URL '\(Self.shown(url))' contains spaces, control characters or a leading '-'")
        }
        if url.hasPrefix("/") {
            guard allowLocal else { throw GitError(.refused, "the repository URL '\(Self.shown(url))' is local; local sources need --allow-local-sources") }
            return url
        }
        guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased() else {
            throw GitError(.refused, "the repository URL '\(Self.shown(url))' is not a URL (only https is allowed)")
        }
        switch scheme {
        case "https":
            guard let host = components.host, !host.isEmpty, !host.hasPrefix("-") else {
                throw GitError(.refused, "the repository URL '\(Self.shown(url))' names no host")
            }
            guard components.user == nil, components.password == nil else {
                throw GitError(.refused, "the repository URL '\(Self.shown(url))' carries credentials; use a credential helper on the machine instead")
            }
        case "file":
            guard allowLocal else { throw GitError(.refused, "the repository URL '\(Self.shown(url))' is local; local sources need --allow-local-sources") }
            guard components.path.hasPrefix("/") else { throw GitError(.refused, "the repository URL '\(Self.shown(url))' needs an absolute path") }
        default:
            throw GitError(.refused, "the repository URL '\(Self.shown(url))' uses \(scheme.prefix(20)); only https (and file:// with --allow-local-sources) is allowed")
        }
        return url
    }

    /// Checks a tag or branch name: git's rules, and nothing an option parser could take for an option.
    package static func checkRefName(_ name: String, kind: String) throws(GitError) {
        guard isSafeRef(name) else { throw GitError(.refused, "the \(kind) '\(name.prefix(100))' is not a valid git ref name") }
    }

    /// Tags and branches: letters, digits and `._/+-`, starting with a letter, digit or `_`; no
    /// `..`, `//`, trailing `/`, `.` or `.lock`.
    package static func isSafeRef(_ name: String) -> Bool {
        let allowed = name.utf8.allSatisfy { byte in
            (byte >= 48 && byte <= 57) || (byte >= 65 && byte <= 90) || (byte >= 97 && byte <= 122) || "._/+-".utf8.contains(byte)
        }
        guard !name.isEmpty, name.utf8.count <= 200, allowed, let first = name.first, first.isLetter || first.isNumber || first == "_" else { return false }
        return !name.contains("..") && !name.contains("//") && !name.hasSuffix("/") && !name.hasSuffix(".lock") && !name.hasSuffix(".")
    }

    /// Text with any `scheme://user:password@` credentials masked, for text that is not one clean URL.
    package static func withoutCredentials(_ text: String) -> String {
        text.replacingOccurrences(of: #"://[^/@\s]*@"#, with: "://***@", options: .regularExpression)
    }

    /// 40 lower-case hexadecimal digits.
    package static func isFullCommit(_ text: String) -> Bool {
        text.utf8.count == 40 && text.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
    }

    /// 7 to 40 hexadecimal digits, either case.
    package static func isCommit(_ text: String) -> Bool {
        (7...40).contains(text.utf8.count) && text.lowercased().utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
    }

    /// A URL as it may appear in messages: no credentials, no query.
    package static func shown(_ url: String) -> String {
        guard var components = URLComponents(string: url), components.scheme != nil else { return String(withoutCredentials(url).prefix(200)) }
        if components.user != nil || components.password != nil {
            components.user = nil
            components.password = nil
        }
        components.query = nil
        return String((components.string ?? String(url.prefix(200))).prefix(300))
    }
}
