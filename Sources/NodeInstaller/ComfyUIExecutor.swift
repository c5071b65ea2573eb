import Foundation
import JobCore

/// The `comfyui` job kind: ComfyUI cloned at its pin into `<workspace>/ComfyUI`, the Python
/// environment created or reused, and ComfyUI's requirements installed with an installed torch kept.
package struct ComfyUIExecutor: JobExecutor {
    package var configuration: NodeInstallerConfiguration

    package init(configuration: NodeInstallerConfiguration) {
        self.configuration = configuration
    }

    package func validate(_ payload: ComfyUIPayload) throws(JobFailure) {
        _ = try configuration.sources.resolveSource(payload.url)
    }

    package func run(_ attempt: JobAttempt<ComfyUIPayload>, context: JobContext) async throws -> String {
        let payload = attempt.payload
        let pin = try RefPin(commit: payload.commit, tag: payload.tag, branch: payload.branch, owner: "comfyui")
        let url = try configuration.sources.resolveSource(payload.url)
        let workspace = configuration.workspace
        let git = configuration.git
        try workspace.createDirectories(workspace.root, workspace.locks)
        let lock = try await FileLock.acquire(workspace.locks + "/comfyui.lock")
        defer { withExtendedLifetime(lock) {} }

        let wanted = try await pin.wanted(url, git: git)
        let target = workspace.comfyUI
        var head = await git.head(target)
        var cloned = false
        if let current = head, InstallMarker.checkoutPending.read(target) == current {
            // A worker killed between moving the repository in and checking it out: its files are
            // missing, which is not a local change to keep (found by bench/chaos).
            try await git.run(["checkout", "--quiet", "--force", "--detach", current], in: target, what: "git checkout \(current)")
            InstallMarker.checkoutPending.remove(target)
        }
        if let current = head {
            let clean = await git.isClean(target)
            if !(pin.matches(current, wanted: wanted) && clean) {
                guard payload.force ?? configuration.force else {
                    throw JobFailure(type: "comfyui_conflict", message: "ComfyUI is at commit \(current.prefix(12))\(clean ? "" : " with local changes"); the plan wants \(pin) (\(wanted.prefix(12))): run with force to replace it", retryable: false)
                }
                try await git.run(["fetch", "--quiet", "--", url], in: target, what: "git fetch \(url)")
                try await git.run(["checkout", "--quiet", "--force", "--detach", wanted], in: target, what: "git checkout \(wanted)")
                head = await git.head(target)
            }
        } else {
            // Model downloads may already have created ComfyUI/models: clone beside it, then move
            // the repository in and check out over the folder (their files are untracked and stay).
            let stage = workspace.root + "/.provision/staging-comfyui.\(UUID().uuidString.prefix(8))"
            try workspace.createDirectories(workspace.root + "/.provision")
            defer { try? FileManager.default.removeItem(atPath: stage) }
            let staged = try await pin.clone(url, into: stage, wanted: wanted, recursive: false, git: git)
            try workspace.createDirectories(target)
            try? FileManager.default.removeItem(atPath: target + "/.git")
            InstallMarker.checkoutPending.write(stage, commit: staged)
            guard rename(stage + "/.git", target + "/.git") == 0 else {
                throw JobFailure(type: "io", message: "could not move the ComfyUI repository into \(target): \(String(cString: strerror(errno)))", retryable: true)
            }
            try await git.run(["checkout", "--quiet", "--force", "--detach", staged], in: target, what: "git checkout \(staged)")
            InstallMarker.checkoutPending.remove(target)
            head = staged
            cloned = true
        }
        guard let head else { throw JobFailure(type: "checkout_mismatch", message: "ComfyUI has no commit checked out", retryable: true) }
        try workspace.createDirectories(workspace.customNodes, workspace.models)

        let environment = PythonEnvironment(configuration: configuration)
        let venvLock = try await environment.lock()
        defer { withExtendedLifetime(venvLock) {} }
        try await environment.ensure()
        var installed = 0
        let requirementsFile = target + "/requirements.txt"
        if payload.requirements ?? true, InstallMarker.installed.read(target) != head, FileManager.default.fileExists(atPath: requirementsFile) {
            let protected = await environment.protectedPins()
            let lines = RequirementsReader.readPlain(requirementsFile)
            guard !lines.isEmpty else {
                InstallMarker.installed.write(target, commit: head)
                return resultJSON(["commit": head, "cloned": cloned, "requirements": 0])
            }
            let folder = workspace.root + "/.provision/python"
            try workspace.createDirectories(folder)
            try await environment.install(lines, constraints: protected, in: folder, what: "ComfyUI's requirements")
            installed = lines.count
        }
        InstallMarker.installed.write(target, commit: head)
        context.logger.info("ComfyUI installed", metadata: ["commit": "\(head)"])
        return resultJSON(["commit": head, "cloned": cloned, "requirements": installed])
    }
}

extension RequirementsReader {
    /// ComfyUI's own requirements file: trusted (it is the pinned core), comments and blanks dropped.
    static func readPlain(_ path: String) -> [String] {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n")
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty && !$0.hasPrefix("#") }
    }
}
