import Foundation
import GitClient

package typealias GitRef = GitClient.GitRef

/// The git of `lock` and `verify`: `GitClient.Git` (one source policy, one runner for the whole
/// project); its errors are GitClient's `GitError` (kind, and a message with the URL's
/// credentials removed).
package struct Git: Sendable {
    package var client: GitClient.Git

    package var allowLocal: Bool { client.policy.allowLocal }
    package var timeout: Duration { client.timeout }

    package init(allowLocal: Bool = false, timeout: Duration = .seconds(60), mirrors: [(from: String, to: String)] = [], executable: String = "git") {
        client = GitClient.Git(policy: GitSourcePolicy(rewrites: mirrors, allowLocal: allowLocal), timeout: timeout, executable: executable)
    }

    /// Checks a repository URL: https with a host and no credentials, or file:// when allowed.
    package func checkURL(_ url: String) throws(GitError) -> String {
        try client.policy.check(url)
    }

    /// Checks a tag or branch name: git's rules, and nothing an option parser could take for an option.
    package static func checkRefName(_ name: String, kind: String) throws(SpecError) {
        do { try GitSourcePolicy.checkRefName(name, kind: kind) } catch { throw .invalidRef(error) }
    }

    package static func isFullCommit(_ text: String) -> Bool { GitSourcePolicy.isFullCommit(text) }

    package static func isCommitPrefix(_ text: String) -> Bool { GitSourcePolicy.isCommit(text) }

    /// `git ls-remote` of a repository: ref name → commit.
    package func listRemote(_ url: String, refs: [String] = []) async throws(GitError) -> [String: String] {
        try await client.listRemote(url, refs: refs)
    }

    /// Resolves a ref of a remote repository to a full commit id, checking that it exists.
    package func resolve(_ url: String, ref: GitRef) async throws(GitError) -> String {
        try await client.commit(url, ref: ref)
    }

    /// The commit checked out in a local repository, or nil when it is not one.
    package func head(of directory: String) async -> String? {
        await client.head(directory)
    }

    /// Tracked files that differ from the checked-out commit (`git status --porcelain`, untracked ignored).
    package func localChanges(of directory: String) async throws(GitError) -> [String] {
        try await client.changedFiles(directory)
    }

    /// The commits of the git repositories a node's `requirements.txt` names at `commit`
    /// (`git+https://…[@ref]`), by pin key; each ref (or the default branch) resolved like a node's.
    /// Files it includes (`-r FILE`, `--requirement FILE`) are read too, as the worker reads them:
    /// inside the node, five levels at most, each once.
    package func gitRequirementPins(_ url: String, commit: String) async throws(GitError) -> [String: String] {
        let client = self.client
        let lines = try await client.withScratch(url, commit: commit, blobs: true) { scratch throws(GitError) -> [String] in
            var lines: [String] = []
            var files: [(path: String, depth: Int)] = [("requirements.txt", 0)]
            var read = Set<String>()
            var next = 0
            while next < files.count {
                let (path, depth) = files[next]
                next += 1
                guard depth < 5, read.insert(path).inserted else { continue }
                let shown = try await client.run(["-C", scratch, "cat-file", "blob", "\(commit):\(path)"], outputLimit: 1 << 20)
                guard shown.succeeded else { continue }
                for raw in shown.output.split(whereSeparator: \.isNewline) {
                    let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
                    if let included = Self.includedFile(line, from: path) {
                        files.append((included, depth + 1))
                    } else {
                        lines.append(line)
                    }
                }
            }
            return lines
        }
        var pins: [String: String] = [:]
        for line in lines {
            guard let requirement = GitRequirement(line), pins[requirement.pinKey] == nil else { continue }
            pins[requirement.pinKey] = try await resolve(requirement.url, anyRef: requirement.ref)
        }
        return pins
    }

    /// The node-relative path a `-r`/`--requirement` line of the requirements file `file` includes;
    /// nil for other lines and for paths that leave the node (absolute, a URL, `..` past its root).
    static func includedFile(_ line: String, from file: String) -> String? {
        guard let target = RequirementsInclude.path(in: line), !target.isEmpty, !target.hasPrefix("/"), !target.contains("://"), !target.contains(":"), !target.contains("\\") else { return nil }
        var components = file.split(separator: "/").dropLast().map(String.init)
        for part in target.split(separator: "/") {
            switch part {
            case ".": continue
            case "..":
                guard !components.isEmpty else { return nil }
                components.removeLast()
            default: components.append(String(part))
            }
        }
        return components.isEmpty ? nil : components.joined(separator: "/")
    }

    /// A ref that may be a commit, a tag or a branch (pip's `@ref` does not say which).
    func resolve(_ url: String, anyRef ref: String?) async throws(GitError) -> String {
        guard let ref else { return try await resolve(url, ref: .head) }
        // A tag or branch may look hexadecimal (`20240101`): a commit first, then the names.
        if GitSourcePolicy.isCommit(ref), let commit = try? await client.commit(url, ref: .commit(ref)) { return commit }
        do {
            return try await client.commit(url, ref: .tag(ref))
        } catch where error.kind == .notFound {
            return try await resolve(url, ref: .branch(ref))
        }
    }

    /// A URL as it may appear in messages: no credentials, no query.
    package static func shown(_ url: String) -> String { GitSourcePolicy.shown(url) }
}
