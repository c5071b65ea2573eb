import Foundation

/// Repository URLs compared and named the same way everywhere (registry, spec, lock).
package enum RepositoryURL {
    /// A comparable form of a repository URL: no scheme, no `www.`, no `.git`, no trailing slash, lower case.
    package static func key(_ url: String) -> String? {
        var text = url.trimmingCharacters(in: .whitespaces).lowercased()
        guard !text.isEmpty else { return nil }
        for prefix in ["https://", "http://", "git://", "ssh://", "git@"] where text.hasPrefix(prefix) {
            text.removeFirst(prefix.count)
        }
        if text.hasPrefix("www.") { text.removeFirst(4) }
        text = text.replacingOccurrences(of: "github.com:", with: "github.com/")
        while text.hasSuffix("/") { text.removeLast() }
        if text.hasSuffix(".git") { text.removeLast(4) }
        return text.isEmpty ? nil : text
    }

    /// A URL without surrounding spaces, trailing slashes or `.git`, for display.
    package static func displayURL(_ url: String) -> String {
        var text = url.trimmingCharacters(in: .whitespaces)
        while text.hasSuffix("/") { text.removeLast() }
        if text.hasSuffix(".git") { text.removeLast(4) }
        return text
    }

    /// The last path component of a repository URL, without `.git`.
    package static func repositoryName(_ url: String) -> String {
        let trimmed = displayURL(url)
        return trimmed.split(separator: "/").last.map(String.init) ?? trimmed
    }
}
