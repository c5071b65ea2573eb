import ComponentSpec
import WorkflowAnalysis
import Foundation
import GitClient

extension ComponentSpec.Git {
    /// The node types a repository registers at a commit, read statically (`NodeClassScanner`) from
    /// its Python files that mention NODE_CLASS_MAPPINGS; one shallow fetch into a throw-away bare
    /// repository, nothing checked out, nothing run.
    package func declaredNodeClasses(_ url: String, commit: String) async throws(LockError) -> Set<String> {
        guard Self.isFullCommit(commit) else { throw .nodeClassesNeedFullCommit(url: url, commit: commit) }
        let client = self.client
        do {
            return try await client.withScratch(url, commit: commit, blobs: true) { scratch throws(GitError) in
                let listed = try await client.run(["-C", scratch, "grep", "-l", "-I", "--fixed-strings", "NODE_CLASS_MAPPINGS", commit, "--", "*.py"])
                // git grep exits 1 when nothing matches.
                guard listed.succeeded || listed.status == 1 else { throw GitError(.failed, "searching \(Self.shown(url)) failed: \(listed.lastLine)") }
                var names = Set<String>()
                for line in listed.output.split(whereSeparator: \.isNewline).prefix(400) {
                    // "<commit>:<path>"
                    let object = String(line)
                    guard object.hasPrefix(commit + ":") else { continue }
                    let shown = try await client.run(["-C", scratch, "cat-file", "blob", object], outputLimit: 4 << 20)
                    guard shown.succeeded else { continue }
                    names.formUnion(NodeClassScanner.classNames(inPython: shown.output))
                }
                return names
            }
        } catch {
            throw .git(error)
        }
    }
}
