import Foundation
import ProcessControl
import JobCore

/// The `node` job kind: one custom node cloned at its pin into `custom_nodes/NAME`, via a staging
/// folder and one rename, with its `.env`. Requirements are installed later, all nodes together, by
/// `python-deps`; `install.py` after them, by `install-scripts`.
package struct NodeExecutor: JobExecutor {
    package var configuration: NodeInstallerConfiguration

    package init(configuration: NodeInstallerConfiguration) {
        self.configuration = configuration
    }

    package func validate(_ payload: NodePayload) throws(JobFailure) {
        _ = try configuration.sources.resolveSource(payload.url)
    }

    package func run(_ attempt: JobAttempt<NodePayload>, context: JobContext) async throws -> String {
        let payload = attempt.payload
        let pin = try RefPin(commit: payload.commit, tag: payload.tag, branch: payload.branch, owner: "node \(payload.name)")
        let url = try configuration.sources.resolveSource(payload.url)
        let workspace = configuration.workspace
        let git = configuration.git
        let envFile = try renderEnv(payload)
        try workspace.createDirectories(workspace.customNodes, workspace.locks)
        let staging = try workspace.nodeStaging()
        let slot = try await FileLock.acquireSlot(workspace.locks + "/git", slots: configuration.gitSlots)
        defer { withExtendedLifetime(slot) {} }

        let target = workspace.node(payload.name)
        // A fresh clone of a tag, a branch or the default branch checks out what the remote has:
        // only a checkout already in place needs the remote's commit first (to be kept or replaced).
        var wanted = pin.commit
        if FileManager.default.fileExists(atPath: target) {
            let remote = try await pin.wanted(url, git: git)
            wanted = remote
            let head = await git.head(target)
            let clean = await git.isClean(target)
            if let head, pin.matches(head, wanted: remote), clean, InstallMarker.installed.read(target) == head {
                try writeEnv(envFile, into: target)
                return resultJSON(["name": payload.name, "commit": head, "skipped": true])
            }
            if !(payload.force ?? configuration.force) {
                let state = head.map { "is at commit \($0.prefix(12))" + (clean ? "" : " with local changes") } ?? "is not a git checkout"
                throw JobFailure(type: "node_conflict", message: "custom node \(payload.name) \(state); the plan wants \(pin) (\(remote.prefix(12))): run with force to replace it", retryable: false)
            }
        }

        // Clone into staging; a crash here leaves only staging debris, removed by the next attempt.
        removeStaging(named: payload.name, in: staging)
        let stage = staging + "/\(payload.name).\(UUID().uuidString.prefix(8))"
        let head: String
        do {
            head = try await pin.clone(url, into: stage, wanted: wanted, recursive: payload.recursive ?? false, git: git)
            try writeEnv(envFile, into: stage)
            // The marker travels with the rename: written after it, a worker killed in between left
            // a node at the right commit without its marker, which every retry then refused as a
            // conflict (found by bench/chaos).
            InstallMarker.installed.write(stage, commit: head)
            try replace(target, with: stage, name: payload.name, staging: staging)
        } catch {
            try? FileManager.default.removeItem(atPath: stage)
            throw error
        }
        context.logger.info("custom node installed", metadata: ["node": "\(payload.name)", "commit": "\(head)"])
        return resultJSON(["name": payload.name, "commit": head, "skipped": false, "install_script": FileManager.default.fileExists(atPath: target + "/install.py")])
    }

    private func renderEnv(_ payload: NodePayload) throws(JobFailure) -> String? {
        guard let env = payload.env, !env.isEmpty else { return nil }
        var lines: [String] = []
        for (key, template) in env.sorted(by: { $0.key < $1.key }) {
            let value = try EnvironmentTemplate.expand(template, environment: configuration.exposedEnvironment, field: "env \(key) of node \(payload.name)")
            guard !value.contains("\n"), !value.contains("\r") else { throw .invalidPayload("env \(key) of node \(payload.name) contains a line break") }
            let quoted = value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            lines.append("\(key)=\"\(quoted)\"")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Written with mode 0600: it holds secrets.
    private func writeEnv(_ text: String?, into directory: String) throws(JobFailure) {
        guard let text else { return }
        let path = directory + "/.env"
        unlink(path)
        guard FileManager.default.createFile(atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600]) else {
            throw JobFailure(type: "io", message: "could not write \(path)", retryable: true)
        }
    }

    private func removeStaging(named name: String, in staging: String) {
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: staging)) ?? [] where entry.hasPrefix(name + ".") {
            try? FileManager.default.removeItem(atPath: staging + "/" + entry)
        }
    }

    /// Puts the finished clone in place with renames; an older checkout is moved aside first.
    private func replace(_ target: String, with stage: String, name: String, staging: String) throws(JobFailure) {
        let fm = FileManager.default
        var aside: String?
        if fm.fileExists(atPath: target) {
            let old = staging + "/\(name).replaced.\(UUID().uuidString.prefix(8))"
            guard rename(target, old) == 0 else { throw JobFailure(type: "io", message: "could not move \(target) aside: \(String(cString: strerror(errno)))", retryable: true) }
            aside = old
        }
        guard rename(stage, target) == 0 else {
            let reason = String(cString: strerror(errno))
            if let aside { rename(aside, target) }
            throw JobFailure(type: "io", message: "could not move custom node \(name) into place: \(reason)", retryable: true)
        }
        if let aside { try? fm.removeItem(atPath: aside) }
    }
}
