import Foundation

/// Which git ref a spec names.
public enum GitRef: Sendable, Equatable, CustomStringConvertible {
    case commit(String)
    case tag(String)
    case branch(String)
    /// The remote's default branch.
    case head

    public var description: String {
        switch self {
        case .commit(let id): return "commit \(id)"
        case .tag(let name): return "tag \(name)"
        case .branch(let name): return "branch \(name)"
        case .head: return "the default branch"
        }
    }
}

/// git, run safely on URLs and refs that come from specs and workflows: URLs and refs are checked
/// before use and passed after `--`, only https (and file:// when allowed) transports are enabled,
/// no prompt can block, and every call has a deadline.
public struct Git: Sendable {
    /// Let file:// repositories through (tests, local mirrors).
    public var allowLocal: Bool
    public var timeout: Duration
    /// URL prefix rewrites applied before contacting a repository (`https://github.com/` → a mirror).
    public var mirrors: [(from: String, to: String)]
    public var executable: String

    public init(allowLocal: Bool = false, timeout: Duration = .seconds(60), mirrors: [(from: String, to: String)] = [], executable: String = "git") {
        self.allowLocal = allowLocal
        self.timeout = timeout
        self.mirrors = mirrors
        self.executable = executable
    }

    /// Checks a repository URL: https with a host and no credentials, or file:// when allowed.
    public func checkURL(_ url: String) throws(ManifestError) -> String {
        guard !url.isEmpty, url.utf8.count <= 2048 else { throw ManifestError("The repository URL '\(url.prefix(100))' is empty or longer than 2048 bytes.") }
        guard !url.unicodeScalars.contains(where: { $0.value < 0x21 || $0.value == 0x7F }) else {
            throw ManifestError("The repository URL '\(Self.shown(url))' contains spaces or control characters.")
        }
        guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased() else {
            throw ManifestError("The repository URL '\(Self.shown(url))' is not a URL.")
        }
        switch scheme {
        case "https":
            guard let host = components.host, !host.isEmpty, !host.hasPrefix("-") else {
                throw ManifestError("The repository URL '\(Self.shown(url))' names no host.")
            }
            guard components.user == nil, components.password == nil else {
                throw ManifestError("The repository URL '\(Self.shown(url))' carries credentials; use a credential helper instead.")
            }
        case "file":
            guard allowLocal else {
                throw ManifestError("The repository URL '\(Self.shown(url))' is local; pass --allow-local-sources to use file:// repositories.")
            }
            guard components.path.hasPrefix("/") else { throw ManifestError("The repository URL '\(Self.shown(url))' needs an absolute path.") }
        default:
            throw ManifestError("The repository URL '\(Self.shown(url))' uses \(scheme); only https (and file:// with --allow-local-sources) is allowed.")
        }
        return url
    }

    /// Checks a tag or branch name: git's rules, and nothing an option parser could take for an option.
    public static func checkRefName(_ name: String, kind: String) throws(ManifestError) {
        let allowed = name.utf8.allSatisfy { byte in
            (byte >= 48 && byte <= 57) || (byte >= 65 && byte <= 90) || (byte >= 97 && byte <= 122) || "._/+-".utf8.contains(byte)
        }
        guard !name.isEmpty, name.utf8.count <= 200, allowed, let first = name.first, first.isLetter || first.isNumber || first == "_",
            !name.contains(".."), !name.contains("//"), !name.hasSuffix("/"), !name.hasSuffix(".lock"), !name.hasSuffix(".")
        else {
            throw ManifestError("The \(kind) '\(name.prefix(100))' is not a valid git ref name.")
        }
    }

    public static func isFullCommit(_ text: String) -> Bool {
        text.utf8.count == 40 && text.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
    }

    static func isCommitPrefix(_ text: String) -> Bool {
        (7...40).contains(text.utf8.count) && text.lowercased().utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
    }

    /// The URL git contacts: the first matching mirror applied.
    func effectiveURL(_ url: String) -> String {
        for (from, to) in mirrors where url.hasPrefix(from) { return to + url.dropFirst(from.count) }
        return url
    }

    var environment: [String: String] {
        let inherited = ProcessInfo.processInfo.environment
        var env: [String: String] = [:]
        for key in ["PATH", "HOME", "TMPDIR", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR", "GIT_SSL_CAINFO"] {
            if let value = inherited[key] { env[key] = value }
        }
        env["PATH"] = env["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        env["GIT_TERMINAL_PROMPT"] = "0"
        env["GIT_ASKPASS"] = "/bin/false"
        env["SSH_ASKPASS"] = "/bin/false"
        env["GIT_ALLOW_PROTOCOL"] = allowLocal ? "https:file" : "https"
        env["GIT_CONFIG_NOSYSTEM"] = "1"
        env["LC_ALL"] = "C"
        return env
    }

    func run(_ arguments: [String], timeout: Duration? = nil) async throws(ManifestError) -> CommandResult {
        try await runCommand(executable, arguments, environment: environment, timeout: timeout ?? self.timeout)
    }

    /// `git ls-remote` of a repository: ref name → commit.
    public func listRemote(_ url: String, refs: [String] = []) async throws(ManifestError) -> [String: String] {
        let target = try checkURL(effectiveURL(try checkURL(url)))
        let result = try await run(["ls-remote", "--", target] + refs)
        if result.timedOut { throw ManifestError("Listing the refs of \(Self.shown(url)) took longer than \(timeout).") }
        guard result.succeeded else {
            throw ManifestError("Listing the refs of \(Self.shown(url)) failed: \(result.lastLine.isEmpty ? "git exited with \(result.status.map(String.init) ?? "a signal")" : result.lastLine).")
        }
        var map: [String: String] = [:]
        for line in result.output.split(whereSeparator: \.isNewline) {
            let parts = line.split(separator: "\t", maxSplits: 1)
            guard parts.count == 2, Self.isFullCommit(String(parts[0])) else { continue }
            map[String(parts[1])] = String(parts[0])
        }
        return map
    }

    /// Resolves a ref of a remote repository to a full commit id, checking that it exists.
    public func resolve(_ url: String, ref: GitRef) async throws(ManifestError) -> String {
        switch ref {
        case .head:
            let refs = try await listRemote(url, refs: ["HEAD"])
            guard let commit = refs["HEAD"] else { throw ManifestError("The repository \(Self.shown(url)) has no default branch (HEAD).") }
            return commit
        case .branch(let name):
            try Self.checkRefName(name, kind: "branch")
            let refs = try await listRemote(url, refs: ["refs/heads/\(name)"])
            guard let commit = refs["refs/heads/\(name)"] else { throw ManifestError("The repository \(Self.shown(url)) has no branch \(name).") }
            return commit
        case .tag(let name):
            try Self.checkRefName(name, kind: "tag")
            let refs = try await listRemote(url, refs: ["refs/tags/\(name)", "refs/tags/\(name)^{}"])
            // An annotated tag points at a tag object; ^{} is the commit it tags.
            guard let commit = refs["refs/tags/\(name)^{}"] ?? refs["refs/tags/\(name)"] else {
                throw ManifestError("The repository \(Self.shown(url)) has no tag \(name).")
            }
            return commit
        case .commit(let given):
            let id = given.lowercased()
            guard Self.isCommitPrefix(id) else { throw ManifestError("The commit '\(given.prefix(100))' is not 7 to 40 hexadecimal digits.") }
            if Self.isFullCommit(id) {
                try await checkCommitExists(url, commit: id)
                return id
            }
            let refs = try await listRemote(url)
            let matches = Set(refs.values.filter { $0.hasPrefix(id) })
            guard matches.count == 1, let commit = matches.first else {
                throw ManifestError("The abbreviated commit \(id) of \(Self.shown(url)) is not the tip of any branch or tag; give all 40 digits.")
            }
            return commit
        }
    }

    /// Fetches exactly one commit (no blobs) into a throw-away bare repository: proof that it exists.
    func checkCommitExists(_ url: String, commit: String) async throws(ManifestError) {
        let target = try checkURL(effectiveURL(try checkURL(url)))
        let scratch = NSTemporaryDirectory() + "provision-git-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let initialised = try await run(["init", "-q", "--bare", "--", scratch])
        guard initialised.succeeded else { throw ManifestError("A scratch git repository could not be created: \(initialised.lastLine).") }
        let fetched = try await run(["-C", scratch, "fetch", "-q", "--no-tags", "--depth=1", "--filter=blob:none", "--", target, commit])
        if fetched.timedOut { throw ManifestError("Checking commit \(commit) of \(Self.shown(url)) took longer than \(timeout).") }
        guard fetched.succeeded else {
            if fetched.output.contains("not our ref") || fetched.output.contains("couldn't find remote ref") {
                throw ManifestError("The repository \(Self.shown(url)) has no commit \(commit).")
            }
            throw ManifestError("Checking commit \(commit) of \(Self.shown(url)) failed: \(fetched.lastLine).")
        }
    }

    /// The node types a repository registers at a commit, read statically (`NodeClassScanner`) from
    /// its Python files that mention NODE_CLASS_MAPPINGS; one shallow fetch into a throw-away bare
    /// repository, nothing checked out, nothing run.
    public func declaredNodeClasses(_ url: String, commit: String) async throws(ManifestError) -> Set<String> {
        let target = try checkURL(effectiveURL(try checkURL(url)))
        guard Self.isFullCommit(commit) else { throw ManifestError("Reading the node classes of \(Self.shown(url)) needs a full commit, not '\(commit.prefix(60))'.") }
        let scratch = NSTemporaryDirectory() + "provision-git-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let initialised = try await run(["init", "-q", "--bare", "--", scratch])
        guard initialised.succeeded else { throw ManifestError("A scratch git repository could not be created: \(initialised.lastLine).") }
        let fetched = try await run(["-C", scratch, "fetch", "-q", "--no-tags", "--depth=1", "--", target, commit])
        guard fetched.succeeded else { throw ManifestError("Fetching commit \(commit) of \(Self.shown(url)) failed: \(fetched.lastLine).") }
        let listed = try await run(["-C", scratch, "grep", "-l", "-I", "--fixed-strings", "NODE_CLASS_MAPPINGS", commit, "--", "*.py"])
        // git grep exits 1 when nothing matches.
        guard listed.succeeded || listed.status == 1 else { throw ManifestError("Searching \(Self.shown(url)) failed: \(listed.lastLine).") }
        var names = Set<String>()
        for line in listed.output.split(whereSeparator: \.isNewline).prefix(400) {
            // "<commit>:<path>"
            let object = String(line)
            guard object.hasPrefix(commit + ":"), !object.contains("\0") else { continue }
            let shown = try await run(["-C", scratch, "cat-file", "blob", object])
            guard shown.succeeded else { continue }
            names.formUnion(NodeClassScanner.classNames(inPython: shown.output))
        }
        return names
    }

    /// The commit checked out in a local repository, or nil when it is not one.
    public func head(of directory: String) async throws(ManifestError) -> String? {
        let result = try await run(["-c", "safe.directory=\(directory)", "-C", directory, "rev-parse", "--verify", "-q", "HEAD"], timeout: .seconds(30))
        let text = result.output.trimmingCharacters(in: .whitespacesAndNewlines)
        return result.succeeded && Self.isFullCommit(text) ? text : nil
    }

    /// Tracked files that differ from the checked-out commit (`git status --porcelain`, untracked ignored).
    public func localChanges(of directory: String) async throws(ManifestError) -> [String] {
        let result = try await run(
            ["-c", "safe.directory=\(directory)", "-C", directory, "status", "--porcelain", "--untracked-files=no", "--ignore-submodules=none"],
            timeout: .seconds(60))
        guard result.succeeded else { throw ManifestError("git status failed in \(directory): \(result.lastLine).") }
        return result.output.split(whereSeparator: \.isNewline).map { line in
            String(line.count > 3 ? line.dropFirst(3) : line[...])
        }
    }

    /// A URL as it may appear in messages: no credentials, no query.
    static func shown(_ url: String) -> String {
        guard var components = URLComponents(string: url) else { return String(url.prefix(200)) }
        components.user = nil
        components.password = nil
        components.query = nil
        return String((components.string ?? url).prefix(300))
    }
}
