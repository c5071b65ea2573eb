import Foundation
import GitClient
import JobCore

/// What the node, ComfyUI and Python executors share: the workspace, where sources may come from,
/// and the tools they run.
package struct NodeInstallerConfiguration: Sendable {
    package var workspace: Workspace
    package var sources: GitSourcePolicy
    /// Git operations at once on this machine (across worker processes).
    package var gitSlots = 5
    /// Replace checkouts at another commit or with local changes (else such a job fails).
    package var force = false
    package var installScriptTimeout: Duration = .seconds(600)
    package var gitTimeout: Duration = .seconds(900)
    /// The Python that creates the environment (`python3 -m venv`).
    package var systemPython = "python3"
    /// Whether this machine has GPUs: decides between CPU and GPU builds of the same module
    /// (onnxruntime / onnxruntime-gpu).
    package var gpu = false
    /// The git executable (a path, or a name looked up in PATH).
    package var gitExecutable = "git"
    /// uv (from PyPI) resolves and installs requirements.
    package var uv = "uv"
    /// Package sources for uv: a wheelhouse (`--find-links`) and whether to skip the index, for
    /// offline machines and tests.
    package var findLinks: [String] = []
    package var noIndex = false
    /// The worker's environment and what of it plans may reach.
    package var environmentPolicy = EnvironmentPolicy()

    /// What git, uv and `install.py` run with: no queue credentials, no tokens unless exposed.
    var childEnvironment: [String: String] { environmentPolicy.childEnvironment }
    /// What a child that runs git itself gets (uv for `git+https` requirements, `install.py` that
    /// clones a sub-package): the child environment plus the same transports and mirror rewrites
    /// as the node clones (git's `insteadOf`, through `GIT_CONFIG_*`, so nested git calls see them
    /// too), and no system git configuration.
    var gitChildEnvironment: [String: String] {
        var env = childEnvironment
        let rewrites = sources.rewrites
        env["GIT_CONFIG_COUNT"] = String(rewrites.count)
        for (index, rule) in rewrites.enumerated() {
            env["GIT_CONFIG_KEY_\(index)"] = "url.\(rule.to).insteadOf"
            env["GIT_CONFIG_VALUE_\(index)"] = rule.from
        }
        env["GIT_CONFIG_NOSYSTEM"] = "1"
        env["GIT_TERMINAL_PROMPT"] = "0"
        env["GIT_ALLOW_PROTOCOL"] = sources.allowLocal ? "https:file" : "https"
        return env
    }

    /// What `${VAR}` in a node's `env` may expand to.
    var exposedEnvironment: [String: String] { environmentPolicy.templateValues }

    package init(workspace: Workspace, sources: GitSourcePolicy = GitSourcePolicy()) {
        self.workspace = workspace
        self.sources = sources
    }

    var git: Git {
        Git(client: GitClient.Git(policy: sources, timeout: gitTimeout, executable: gitExecutable, baseEnvironment: childEnvironment))
    }
}

/// A ref pin from a payload: at most one of commit, tag or branch; none means the default branch.
struct RefPin: Sendable, CustomStringConvertible {
    var commit: String?
    var tag: String?
    var branch: String?

    init(commit: String?, tag: String?, branch: String?, owner: String) throws(JobFailure) {
        try PayloadRules.checkPin(commit: commit, tag: tag, branch: branch, owner: owner)
        self.commit = commit?.lowercased()
        self.tag = tag
        self.branch = branch
    }

    var description: String {
        commit.map { "commit \($0)" } ?? tag.map { "tag \($0)" } ?? branch.map { "branch \($0)" } ?? "the default branch"
    }

    /// The full commit to install: a pinned commit as given (checked after the clone), else the remote's.
    func wanted(_ url: String, git: Git) async throws(JobFailure) -> String {
        if let commit { return commit }
        return try await git.remoteCommit(url, tag: tag, branch: branch)
    }

    func matches(_ head: String, wanted: String) -> Bool { head.hasPrefix(wanted) }

    /// Clones `url` into `directory` checked out at the pin; `wanted` (the commit the pin names, when
    /// known) is checked against what was checked out. Returns the commit checked out.
    func clone(_ url: String, into directory: String, wanted: String?, recursive: Bool, git: Git) async throws(JobFailure) -> String {
        // A local repository (a mirror on this machine) is cloned from its path: git then hardlinks
        // its objects instead of packing and indexing them again (`--depth` means nothing there).
        let local = Self.localPath(url)
        let source = local ?? url
        let depth = local == nil ? ["--depth", "1"] : []
        if let ref = tag ?? branch {
            do {
                try await git.run(["clone", "--quiet"] + depth + ["--branch", ref, "--", source, directory], what: "git clone \(url)")
            } catch where error.message.contains("not found in upstream") {
                // No ls-remote before a fresh clone: git's own words say the ref is missing, for good.
                throw JobFailure(type: "ref_not_found", message: "the repository \(GitSourcePolicy.shown(url)) has no \(tag == nil ? "branch" : "tag") \(ref)", retryable: false)
            }
        } else if commit != nil {
            try await git.run(["clone", "--quiet", "--no-checkout", "--", source, directory], what: "git clone \(url)")
            try await git.run(["checkout", "--quiet", "--force", "--detach", wanted ?? ""], in: directory, what: "git checkout \(wanted ?? "")")
        } else {
            try await git.run(["clone", "--quiet"] + depth + ["--", source, directory], what: "git clone \(url)")
        }
        if recursive {
            try await git.run(["submodule", "update", "--init", "--recursive", "--quiet"], in: directory, what: "git submodule update")
        }
        let checkedOut = await git.head(directory)
        if checkedOut == nil, wanted == nil {
            throw JobFailure(type: "ref_not_found", message: "the repository \(GitSourcePolicy.shown(url)) has no default branch (HEAD)", retryable: false)
        }
        guard let head = checkedOut, wanted.map({ matches(head, wanted: $0) }) ?? true else {
            throw JobFailure(type: "checkout_mismatch", message: "\(url) did not check out at \(wanted ?? description)", retryable: true)
        }
        return head
    }

    /// The path of a `file://` URL (the source policy allowed it), else nil.
    static func localPath(_ url: String) -> String? {
        guard url.hasPrefix("file://"), let path = URL(string: url)?.path, path.hasPrefix("/") else { return nil }
        return path
    }
}

/// Marks a step of a checkout as done at a commit (`installed`: clone and .env; `install-script`:
/// its install.py ran); kept inside `.git` so it is never an untracked file of the node.
struct InstallMarker {
    let name: String

    /// The clone and its .env are in place.
    static let installed = InstallMarker(name: "provision-installed")
    /// The node's install.py ran to success.
    static let script = InstallMarker(name: "provision-install-script")
    /// ComfyUI's repository was moved in but its files are not checked out yet.
    static let checkoutPending = InstallMarker(name: "provision-checkout-pending")

    func path(_ directory: String) -> String { directory + "/.git/" + name }

    func read(_ directory: String) -> String? {
        (try? String(contentsOfFile: path(directory), encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func write(_ directory: String, commit: String) {
        try? (commit + "\n").write(toFile: path(directory), atomically: true, encoding: .utf8)
    }

    func remove(_ directory: String) {
        unlink(path(directory))
    }
}

func resultJSON(_ fields: [String: Any]) -> String {
    let data = (try? JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys])) ?? Data("{}".utf8)
    return String(decoding: data, as: UTF8.self)
}
