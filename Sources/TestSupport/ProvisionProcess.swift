import Foundation
import ProcessControl

/// The `provision` executable the tests run: `PROVISION_BIN`, else this package's debug build.
package func provisionExecutable() -> String {
    if let path = ProcessInfo.processInfo.environment["PROVISION_BIN"], !path.isEmpty { return path }
    // Sources/TestSupport/ProvisionProcess.swift -> package root
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    return root.appendingPathComponent(".build/debug/provision").path
}

/// The package's root folder (for protocols/ and fixtures).
package func packageRoot() -> URL {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
}

/// A child process whose output is collected into a file, so it can be read while it runs.
package final class TestProcess: Sendable {
    package let child: ChildProcess
    package let outputFile: URL

    /// With `ownProcessGroup`, the process leads its own group, like a command started from a shell:
    /// `signalGroup` then reaches it and everything it started in its group, like Ctrl-C.
    package init(_ executable: String, _ arguments: [String], environment: [String: String] = [:], ownProcessGroup: Bool = false) throws {
        var env = ProcessInfo.processInfo.environment
        for (key, value) in environment { env[key] = value }
        outputFile = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("provision-child-\(UUID().uuidString).log")
        child = try ChildProcess(executable, arguments, environment: env, outputPath: outputFile.path, newProcessGroup: ownProcessGroup)
    }

    /// Runs `provision ARGS…`.
    package static func provision(_ arguments: [String], environment: [String: String] = [:], ownProcessGroup: Bool = false) throws -> TestProcess {
        try TestProcess(provisionExecutable(), arguments, environment: environment, ownProcessGroup: ownProcessGroup)
    }

    /// Sends `number` to the process's whole group (see `ownProcessGroup`), as a terminal does on Ctrl-C.
    package func signalGroup(_ number: Int32) {
        if child.isRunning { kill(-child.pid, number) }
    }

    package var pid: Int32 { child.pid }
    package var isRunning: Bool { child.isRunning }
    package func signal(_ number: Int32) { child.signal(number) }

    /// Waits for the exit status (128+N for signal N); nil on timeout.
    package func wait(timeout: Duration = .seconds(60)) async -> Int32? {
        switch await child.wait(timeout: timeout) {
        case .exited(let status): return status
        case .signalled(let number): return 128 + number
        case nil: return nil
        }
    }

    package var output: String { (try? String(contentsOf: outputFile, encoding: .utf8)) ?? "" }

    /// Stops the process and every process under it (a supervisor's workers) for good (SIGKILL):
    /// a test that ends early must not leave orphans running into the next one.
    package func terminate() {
        if child.isRunning {
            var tree: [Int32] = []
            var next = [child.pid]
            while let pid = next.popLast() {
                let children = childPIDs(of: pid)
                tree += children
                next += children
            }
            child.signal(SIGKILL)
            for pid in tree { kill(pid, SIGKILL) }
        }
        _ = child.waitBlocking(timeout: .seconds(5))
    }

    deinit { terminate() }
}

/// Every process under `pid` (children, their children, …).
package func descendantPIDs(of pid: Int32) -> [Int32] {
    var tree: [Int32] = []
    var next = [pid]
    while let current = next.popLast() {
        let children = childPIDs(of: current)
        tree += children
        next += children
    }
    return tree
}

/// Whether `pid` names a process that still exists, zombies included (a zombie is a child its
/// parent never waited for).
package func processExists(_ pid: Int32) -> Bool {
    kill(pid, 0) == 0 || errno == EPERM
}

/// The pids of the direct children of `pid` (from /proc), e.g. a supervisor's worker processes.
package func childPIDs(of pid: Int32) -> [Int32] {
    // Each thread lists the children it spawned: read them all.
    let threads = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
    return threads.flatMap { thread -> [Int32] in
        let text = (try? String(contentsOfFile: "/proc/\(pid)/task/\(thread)/children", encoding: .utf8)) ?? ""
        return text.split(separator: " ").compactMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }
}

/// Runs a command to completion and returns its exit status and combined output.
package func run(_ executable: String, _ arguments: [String], environment: [String: String] = [:], timeout: Duration = .seconds(120)) async throws -> (status: Int32, output: String) {
    let child = try TestProcess(executable, arguments, environment: environment)
    guard let status = await child.wait(timeout: timeout) else {
        child.terminate()
        return (-1, child.output + "\n[timed out]")
    }
    return (status, child.output)
}
