import Foundation
import ProcessControl
import Scheduler

/// Where custom nodes may come from: URL checks, operator rewrites (like git's `insteadOf`), and
/// ref checks that keep hostile input from becoming git options.
public struct GitSourcePolicy: Sendable {
    /// Prefix rewrites applied before anything else, e.g. `https://github.com/` → `file:///mirror/`.
    public var rewrites: [(from: String, to: String)] = []
    /// Allow `file://` and plain paths (local mirrors, tests).
    public var allowLocal = false

    public init(rewrites: [(from: String, to: String)] = [], allowLocal: Bool = false) {
        self.rewrites = rewrites
        self.allowLocal = allowLocal
    }

    /// The URL git will use: rewritten, then checked (https without credentials, file only when
    /// allowed; no `ext::`, no leading `-`, no whitespace or control characters).
    public func resolve(_ url: String) throws(JobFailure) -> String {
        var resolved = url
        for rule in rewrites where resolved.hasPrefix(rule.from) {
            resolved = rule.to + resolved.dropFirst(rule.from.count)
            break
        }
        guard !resolved.isEmpty, resolved.count <= 2048, !resolved.hasPrefix("-"),
            !resolved.contains(where: { $0.isWhitespace || ($0.asciiValue.map { $0 < 32 } ?? false) })
        else { throw .invalidPayload("the git URL '\(url.prefix(200))' is not usable") }
        let lower = resolved.lowercased()
        if lower.hasPrefix("https://") {
            // Credentials in a URL would reach git's output, events and Redis: a credential helper keeps them.
            guard let components = URLComponents(string: resolved), let host = components.host, !host.isEmpty, !host.hasPrefix("-") else {
                throw .invalidPayload("the git URL '\(Self.shown(url))' names no host")
            }
            guard components.user == nil, components.password == nil else {
                throw .invalidPayload("the git URL '\(Self.shown(url))' carries credentials; use a credential helper on the machine instead")
            }
            return resolved
        }
        if lower.hasPrefix("file://") || resolved.hasPrefix("/") {
            guard allowLocal else { throw .invalidPayload("the git URL '\(url.prefix(200))' is local; local sources are not allowed on this worker") }
            return resolved
        }
        throw .invalidPayload("the git URL '\(Self.shown(url))' must be https (http, ssh, git://, ext:: and other transports are refused)")
    }

    /// A URL as it may appear in messages: no credentials, no query.
    static func shown(_ url: String) -> String {
        guard var components = URLComponents(string: url), components.scheme != nil else { return String(url.prefix(200)) }
        if components.user != nil || components.password != nil { components.user = "***"; components.password = nil }
        components.query = nil
        return String((components.string ?? url).prefix(200))
    }

    /// Tags and branches: letters, digits and `._/+-`, not starting with `-` or `.`, no `..`.
    public static func isSafeRef(_ ref: String) -> Bool {
        guard let first = ref.first, first.isASCII, first.isLetter || first.isNumber || first == "_", ref.count <= 200,
            !ref.contains(".."), !ref.hasSuffix(".lock"), !ref.hasSuffix("/")
        else { return false }
        return ref.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "._/+-".contains($0)) }
    }

    public static func isCommit(_ text: String) -> Bool {
        (7...40).contains(text.count) && text.allSatisfy(\.isHexDigit)
    }
}

/// Runs git with no prompts, no system config, and only the transports the policy allows.
struct Git: Sendable {
    var allowLocal: Bool
    var timeout: Duration = .seconds(600)

    private var safety: [String] {
        ["-c", "protocol.allow=never", "-c", "protocol.https.allow=always",
         "-c", "protocol.file.allow=\(allowLocal ? "always" : "never")",
         "-c", "core.hooksPath=/dev/null", "-c", "advice.detachedHead=false"]
    }

    /// The environment git runs with: the working set only (no queue credentials, no tokens).
    var baseEnvironment: [String: String]
    var executable = "git"

    private var environment: [String: String] {
        var env = baseEnvironment
        env["GIT_TERMINAL_PROMPT"] = "0"
        env["GIT_CONFIG_NOSYSTEM"] = "1"
        env["GIT_ASKPASS"] = "/bin/false"
        env["SSH_ASKPASS"] = "/bin/false"
        env["GIT_ALLOW_PROTOCOL"] = allowLocal ? "https:file" : "https"
        env["LC_ALL"] = "C"
        return env
    }

    /// Runs `git ARGS`; a failure becomes a retryable `JobFailure` quoting git's last lines.
    @discardableResult
    func run(_ arguments: [String], in directory: String? = nil, what: String) async throws(JobFailure) -> String {
        let output: ChildProcess.Output
        do {
            output = try await ChildProcess.run(executable, safety + (directory.map { ["-C", $0] } ?? []) + arguments, environment: environment, timeout: timeout)
        } catch {
            throw JobFailure(type: "git_missing", message: "git could not be run: \(error)", retryable: false)
        }
        guard output.succeeded else {
            let tail = output.output.split(separator: "\n").suffix(3).joined(separator: " / ")
            let how = output.termination.map { "\($0)" } ?? "timed out after \(timeout)"
            throw JobFailure(type: "git_failed", message: "\(what) failed (\(how)): \(tail)", retryable: true)
        }
        return output.output
    }

    /// The commit a ref points at on the remote (`HEAD` when nil); annotated tags are peeled.
    func remoteCommit(_ url: String, tag: String?, branch: String?) async throws(JobFailure) -> String {
        let pattern = tag.map { "refs/tags/\($0)" } ?? branch.map { "refs/heads/\($0)" } ?? "HEAD"
        let patterns = tag != nil ? [pattern, pattern + "^{}"] : [pattern]
        let text = try await run(["ls-remote", "--", url] + patterns, what: "git ls-remote \(pattern)")
        var found: [String: String] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: "\t")
            if parts.count == 2 { found[String(parts[1])] = String(parts[0]) }
        }
        guard let commit = found[pattern + "^{}"] ?? found[pattern], commit.count == 40 else {
            throw JobFailure(type: "ref_not_found", message: "\(pattern) was not found in \(url)", retryable: false)
        }
        return commit
    }

    func head(_ directory: String) async -> String? {
        guard let text = try? await run(["rev-parse", "--verify", "HEAD"], in: directory, what: "git rev-parse") else { return nil }
        let commit = text.trimmingCharacters(in: .whitespacesAndNewlines)
        return commit.count == 40 ? commit : nil
    }

    /// True when tracked files match the checkout (untracked files such as `.env` do not count).
    func isClean(_ directory: String) async -> Bool {
        guard let text = try? await run(["status", "--porcelain", "--untracked-files=no"], in: directory, what: "git status") else { return false }
        return text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty
    }
}
