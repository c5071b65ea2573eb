import Foundation
import JobCore

/// The folders of a ComfyUI machine: `<root>/ComfyUI`, its `custom_nodes` and `models`, the
/// Python environment `<root>/venv`, and provision's own locks and staging area.
package struct Workspace: Sendable {
    package let root: String

    package init(root: String) {
        self.root = root
    }

    package var comfyUI: String { root + "/ComfyUI" }
    package var customNodes: String { comfyUI + "/custom_nodes" }
    package var models: String { comfyUI + "/models" }
    package var venv: String { root + "/venv" }
    package var python: String { venv + "/bin/python" }
    /// Clones are made here and moved into place only when complete. Never inside `custom_nodes`:
    /// ComfyUI imports every folder there, dot-folders too, and reports `IMPORT FAILED` for it.
    package var staging: String { root + "/.provision/staging" }
    /// Where older versions staged clones; removed when found empty.
    var legacyStaging: String { customNodes + "/.staging" }
    package var locks: String { root + "/.provision/locks" }

    package func node(_ name: String) -> String { customNodes + "/" + name }

    /// Node names are folder names: no paths, no hidden or option-like names.
    package static func isSafeNodeName(_ name: String) -> Bool { PayloadRules.isNodeName(name) }

    /// The staging folder for clones headed to `custom_nodes`: `staging` when it is on the same
    /// filesystem (so the final rename is atomic), else a folder beside `custom_nodes` in ComfyUI.
    func nodeStaging() throws(JobFailure) -> String {
        try createDirectories(customNodes, staging)
        // A machine provisioned by an older version has `custom_nodes/.staging`; rmdir removes it
        // only when empty, so a clone another process still has there is left alone.
        rmdir(legacyStaging)
        var nodes = stat()
        var stage = stat()
        if stat(customNodes, &nodes) == 0, stat(staging, &stage) == 0, nodes.st_dev == stage.st_dev { return staging }
        let beside = comfyUI + "/.provision-staging"
        try createDirectories(beside)
        return beside
    }

    func createDirectories(_ paths: String...) throws(JobFailure) {
        for path in paths {
            do {
                try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            } catch {
                throw JobFailure(type: "io", message: "could not create \(path): \(error.localizedDescription)", retryable: false)
            }
        }
    }
}

/// An exclusive lock on a file (`flock`), held across processes and released by the kernel when
/// the holder dies, so a killed worker never leaves it locked.
final class FileLock: Sendable {
    private let fd: Int32

    private init(fd: Int32) { self.fd = fd }

    /// Waits (polling, without blocking a thread) until the lock is free.
    static func acquire(_ path: String, timeout: Duration = .seconds(3600)) async throws(JobFailure) -> FileLock {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw JobFailure(type: "io", message: "could not open the lock \(path): \(String(cString: strerror(errno)))", retryable: true) }
        let deadline = ContinuousClock.now + timeout
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            if ContinuousClock.now > deadline || Task.isCancelled {
                close(fd)
                throw JobFailure(type: "lock_timeout", message: "waited too long for \(path)", retryable: true)
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return FileLock(fd: fd)
    }

    /// Takes any free one of `slots` locks named `<prefix>.<n>`: a semaphore across processes.
    static func acquireSlot(_ prefix: String, slots: Int) async throws(JobFailure) -> FileLock {
        let fds = (0..<max(1, slots)).map { open("\(prefix).\($0)", O_RDWR | O_CREAT | O_CLOEXEC, 0o644) }
        var held: Int32 = -1
        defer { for fd in fds where fd >= 0 && fd != held { close(fd) } }
        while true {
            for fd in fds where fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0 {
                held = fd
                return FileLock(fd: fd)
            }
            if Task.isCancelled { throw JobFailure(type: "cancelled", message: "cancelled while waiting for a git slot", retryable: true) }
            // A local clone takes tens of milliseconds: a slower look would leave a freed slot idle
            // for a good part of one.
            try? await Task.sleep(for: .milliseconds(5))
        }
    }

    deinit {
        flock(fd, LOCK_UN)
        close(fd)
    }
}
