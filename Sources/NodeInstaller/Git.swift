import Foundation
import GitClient
import JobCore

/// Where custom nodes, ComfyUI and `git+https` requirements may come from: the project's one policy.
package typealias GitSourcePolicy = GitClient.GitSourcePolicy

extension GitSourcePolicy {
    /// The URL git will use for a job's source; a refused one fails the job for good.
    func resolveSource(_ url: String) throws(JobFailure) -> String {
        do { return try resolve(url) } catch { throw JobFailure(error) }
    }
}

extension JobFailure {
    /// A git failure as a job failure: refused sources and missing refs are permanent, failed or
    /// timed-out or cancelled commands may pass on a retry.
    init(_ error: GitError) {
        switch error.kind {
        case .refused: self.init(type: "invalid_payload", message: error.message, retryable: false)
        case .notFound: self.init(type: "ref_not_found", message: error.message, retryable: false)
        case .failed, .timedOut: self.init(type: "git_failed", message: error.message, retryable: true)
        // Stopped with its job (a drain or a cancel): whoever runs the job next starts it again.
        case .cancelled: self.init(type: "cancelled", message: error.message, retryable: true)
        case .missing: self.init(type: "git_missing", message: error.message, retryable: false)
        }
    }
}

/// The worker's git: `GitClient.Git` with its failures as job failures.
struct Git: Sendable {
    let client: GitClient.Git

    /// Runs `git ARGS`; a failure becomes a retryable `JobFailure` quoting git's last line.
    @discardableResult
    func run(_ arguments: [String], in directory: String? = nil, what: String) async throws(JobFailure) -> String {
        do { return try await client.checked(arguments, in: directory, what: what) } catch { throw JobFailure(error) }
    }

    /// The commit a ref points at on the remote (`HEAD` when nil); annotated tags are peeled.
    func remoteCommit(_ url: String, tag: String?, branch: String?) async throws(JobFailure) -> String {
        let ref: GitRef = tag.map { .tag($0) } ?? branch.map { .branch($0) } ?? .head
        do { return try await client.commit(url, ref: ref) } catch { throw JobFailure(error) }
    }

    func head(_ directory: String) async -> String? { await client.head(directory) }

    /// True when tracked files match the checkout (untracked files such as `.env` do not count).
    func isClean(_ directory: String) async -> Bool {
        (try? await client.changedFiles(directory))?.isEmpty ?? false
    }
}
