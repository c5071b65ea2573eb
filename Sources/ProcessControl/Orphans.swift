import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Finds and stops what a killed worker process left running. A worker's commands (git, uv,
/// install.py and what they start) run in process groups of their own so that a deadline stops them
/// whole; when the worker dies of SIGKILL nothing stops them, and the retried job would run beside
/// them (install.py twice at once). The supervisor gives each worker process a mark in its
/// environment, every `ChildProcess` passes it on, and after a worker's death the supervisor kills
/// every process of this user that still carries that worker's mark.
package enum Orphans {
    /// The environment variable holding the mark of the worker process that owns a command.
    package static let markName = "PROVISION_OWNER_MARK"

    /// This process's own mark, when a supervisor gave it one.
    package static let ownMark: String? = ProcessInfo.processInfo.environment[markName].flatMap { $0.isEmpty ? nil : $0 }

    /// A new mark for a worker process about to start.
    package static func newMark() -> String { UUID().uuidString }

    /// Kills (SIGKILL) every process whose environment carries `mark`, repeating while new ones
    /// appear (a dying parent may have forked); returns their pids.
    @discardableResult
    package static func kill(marked mark: String) -> [pid_t] {
        var killed: [pid_t] = []
        for _ in 0..<5 {
            let found = pids(marked: mark)
            if found.isEmpty { break }
            for pid in found {
                _ = Glibc.kill(pid, SIGKILL)
                if !killed.contains(pid) { killed.append(pid) }
            }
            usleep(20_000)
        }
        return killed
    }

    /// Live processes (not zombies) whose initial environment holds `markName=mark`.
    package static func pids(marked mark: String) -> [pid_t] {
        let needle = Array("\(markName)=\(mark)".utf8)
        let me = getpid()
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        var found: [pid_t] = []
        for entry in entries {
            guard let pid = pid_t(entry), pid != me, pid > 1 else { continue }
            guard let environ = FileManager.default.contents(atPath: "/proc/\(entry)/environ"), !environ.isEmpty else { continue }
            let matches = environ.split(separator: 0, omittingEmptySubsequences: true).contains { Array($0) == needle }
            guard matches else { continue }
            // A zombie's environment reads empty, so it never gets here; one that exited since is harmless.
            found.append(pid)
        }
        return found
    }
}
