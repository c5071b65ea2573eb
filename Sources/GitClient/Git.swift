import Foundation
import ProcessControl

/// git run safely on URLs and refs that come from plans, specs and workflows: the source policy
/// applied before any contact, URLs and refs after `--`, only https (and file:// when allowed) as
/// transports, no prompts, no hooks, no system configuration, an environment without secrets, and
/// a deadline on every call. The worker's clones and the lock's look-ups both go through it.
package struct Git: Sendable {
    package var policy: GitSourcePolicy
    package var timeout: Duration
    package var executable: String
    /// What git's environment is made from: only the names in `GitEnvironment.inherited` are kept.
    package var baseEnvironment: [String: String]

    package init(
        policy: GitSourcePolicy = GitSourcePolicy(), timeout: Duration = .seconds(600), executable: String = "git",
        baseEnvironment: [String: String] = ProcessInfo.processInfo.environment
    ) {
        self.policy = policy
        self.timeout = timeout
        self.executable = executable
        self.baseEnvironment = baseEnvironment
    }

    /// Names git may inherit: finding programs, home, temporary files, proxies and certificates.
    package static let inherited = [
        "PATH", "HOME", "TMPDIR", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy",
        "SSL_CERT_FILE", "SSL_CERT_DIR", "GIT_SSL_CAINFO",
    ]

    var environment: [String: String] {
        var env: [String: String] = [:]
        for key in Self.inherited { if let value = baseEnvironment[key] { env[key] = value } }
        env["PATH"] = env["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        env["GIT_TERMINAL_PROMPT"] = "0"
        env["GIT_ASKPASS"] = "/bin/false"
        env["SSH_ASKPASS"] = "/bin/false"
        env["GIT_ALLOW_PROTOCOL"] = policy.allowLocal ? "https:file" : "https"
        env["GIT_CONFIG_NOSYSTEM"] = "1"
        env["LC_ALL"] = "C"
        return env
    }

    private var safety: [String] {
        ["-c", "protocol.allow=never", "-c", "protocol.https.allow=always", "-c", "protocol.file.allow=\(policy.allowLocal ? "always" : "never")",
         "-c", "core.hooksPath=/dev/null", "-c", "advice.detachedHead=false"]
    }

    /// Runs `git ARGS` (in `directory`, trusted as a safe directory) and returns how it ended; throws
    /// only when git cannot be started.
    package func run(_ arguments: [String], in directory: String? = nil, timeout: Duration? = nil, outputLimit: Int = ChildProcess.outputLimit) async throws(GitError) -> ChildProcess.Output {
        let location = directory.map { ["-c", "safe.directory=\($0)", "-C", $0] } ?? []
        do {
            return try await ChildProcess.run(
                executable, safety + location + arguments, environment: environment, timeout: timeout ?? self.timeout, outputLimit: outputLimit)
        } catch {
            throw GitError(.missing, "git could not be run: \(error)")
        }
    }

    /// `run`, with a failure or timeout turned into an error that quotes git's last line.
    @discardableResult
    package func checked(_ arguments: [String], in directory: String? = nil, what: String, timeout: Duration? = nil) async throws(GitError) -> String {
        let output = try await run(arguments, in: directory, timeout: timeout)
        if output.timedOut { throw GitError(.timedOut, "\(what) took longer than \(timeout ?? self.timeout)") }
        if output.cancelled { throw GitError(.cancelled, "\(what) was stopped because its job was cancelled") }
        guard output.succeeded else { throw GitError(.failed, "\(what) failed: \(Self.cause(output))") }
        return output.output
    }

    /// git's own words for a failure: its `fatal:` or `error:` line (the last line of a long message
    /// is often a hint), else the last line, else how it ended.
    static func cause(_ output: ChildProcess.Output) -> String {
        let lines = output.output.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
        if let fatal = lines.first(where: { $0.hasPrefix("fatal:") || $0.hasPrefix("error:") }) { return String(fatal.prefix(300)) }
        return output.lastLine.isEmpty ? (output.termination.map { "\($0)" } ?? "no status") : output.lastLine
    }

    /// `git ls-remote` of a repository (the policy applied): ref name → commit.
    package func listRemote(_ url: String, refs: [String] = []) async throws(GitError) -> [String: String] {
        let target = try policy.resolve(url)
        let text = try await checked(["ls-remote", "--", target] + refs, what: "listing the refs of \(GitSourcePolicy.shown(url))")
        var map: [String: String] = [:]
        for line in text.split(whereSeparator: \.isNewline) {
            let parts = line.split(separator: "\t", maxSplits: 1)
            guard parts.count == 2, GitSourcePolicy.isFullCommit(String(parts[0])) else { continue }
            map[String(parts[1])] = String(parts[0])
        }
        return map
    }

    /// The full commit a ref names on the remote; annotated tags are peeled, full commits are fetched
    /// once to prove they exist, abbreviated ones must be the tip of a branch or tag.
    package func commit(_ url: String, ref: GitRef) async throws(GitError) -> String {
        let shown = GitSourcePolicy.shown(url)
        switch ref {
        case .head:
            guard let commit = try await listRemote(url, refs: ["HEAD"])["HEAD"] else { throw GitError(.notFound, "the repository \(shown) has no default branch (HEAD)") }
            return commit
        case .branch(let name):
            try GitSourcePolicy.checkRefName(name, kind: "branch")
            guard let commit = try await listRemote(url, refs: ["refs/heads/\(name)"])["refs/heads/\(name)"] else {
                throw GitError(.notFound, "the repository \(shown) has no branch \(name)")
            }
            return commit
        case .tag(let name):
            try GitSourcePolicy.checkRefName(name, kind: "tag")
            let refs = try await listRemote(url, refs: ["refs/tags/\(name)", "refs/tags/\(name)^{}"])
            guard let commit = refs["refs/tags/\(name)^{}"] ?? refs["refs/tags/\(name)"] else { throw GitError(.notFound, "the repository \(shown) has no tag \(name)") }
            return commit
        case .commit(let given):
            let id = given.lowercased()
            guard GitSourcePolicy.isCommit(id) else { throw GitError(.refused, "the commit '\(given.prefix(100))' is not 7 to 40 hexadecimal digits") }
            if GitSourcePolicy.isFullCommit(id) {
                try await checkCommitExists(url, commit: id)
                return id
            }
            let matches = Set(try await listRemote(url).values.filter { $0.hasPrefix(id) })
            guard matches.count == 1, let commit = matches.first else {
                throw GitError(.notFound, "the abbreviated commit \(id) of \(shown) is not the tip of any branch or tag; give all 40 digits")
            }
            return commit
        }
    }

    /// Fetches exactly one commit (no blobs) into a throw-away bare repository: proof that it exists.
    package func checkCommitExists(_ url: String, commit: String) async throws(GitError) {
        try await withScratch(url, commit: commit, blobs: false) { _ in }
    }

    /// Runs `body` with a throw-away bare repository holding `commit` of `url` (one shallow fetch).
    package func withScratch<T: Sendable>(_ url: String, commit: String, blobs: Bool, _ body: (String) async throws(GitError) -> T) async throws(GitError) -> T {
        let target = try policy.resolve(url)
        let shown = GitSourcePolicy.shown(url)
        let scratch = NSTemporaryDirectory() + "provision-git-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        try await checked(["init", "-q", "--bare", "--", scratch], what: "creating a scratch git repository")
        let fetched = try await run(["-C", scratch, "fetch", "-q", "--no-tags", "--depth=1"] + (blobs ? [] : ["--filter=blob:none"]) + ["--", target, commit])
        if fetched.timedOut { throw GitError(.timedOut, "fetching commit \(commit) of \(shown) took longer than \(timeout)") }
        if fetched.cancelled { throw GitError(.cancelled, "fetching commit \(commit) of \(shown) was stopped because its job was cancelled") }
        guard fetched.succeeded else {
            if fetched.output.contains("not our ref") || fetched.output.contains("couldn't find remote ref") {
                throw GitError(.notFound, "the repository \(shown) has no commit \(commit)")
            }
            throw GitError(.failed, "fetching commit \(commit) of \(shown) failed: \(Self.cause(fetched))")
        }
        return try await body(scratch)
    }

    /// The commit checked out in a local repository, or nil when it is not one.
    package func head(_ directory: String) async -> String? {
        guard let output = try? await run(["rev-parse", "--verify", "-q", "HEAD"], in: directory, timeout: .seconds(30)), output.succeeded else { return nil }
        let text = output.output.trimmingCharacters(in: .whitespacesAndNewlines)
        return GitSourcePolicy.isFullCommit(text) ? text : nil
    }

    /// Tracked files that differ from the checked-out commit (untracked files such as `.env` do not count).
    package func changedFiles(_ directory: String) async throws(GitError) -> [String] {
        let text = try await checked(
            ["status", "--porcelain", "--untracked-files=no", "--ignore-submodules=none"], in: directory, what: "git status in \(directory)", timeout: .seconds(60))
        return text.split(whereSeparator: \.isNewline).map { line in String(line.count > 3 ? line.dropFirst(3) : line[...]) }
    }
}
