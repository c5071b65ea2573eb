import CSpawn
import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A child process started with `posix_spawn` and reaped with `waitpid` on its own pid, so its
/// exit is seen at once whatever else the process does with signals or run loops.
public final class ChildProcess: Sendable {
    /// How a child ended.
    public enum Termination: Sendable, Equatable, CustomStringConvertible {
        case exited(Int32)
        case signalled(Int32)

        public var description: String {
            switch self {
            case .exited(let status): return "exit status \(status)"
            case .signalled(let signal): return "signal \(signal)"
            }
        }
    }

    public let pid: pid_t
    public let executable: String
    private let termination = Mutex<Termination?>(nil)

    /// Starts `executable` (a path, or a name looked up in PATH) in `workingDirectory`. Output goes
    /// to `outputPath` (appended) or nowhere; standard input is /dev/null. With `ownProcessGroup` the
    /// child leads a process group of its own, so a Ctrl-C on the terminal (SIGINT to the foreground
    /// group) reaches only this process, which then stops the child in its own order.
    public init(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil, outputPath: String? = nil,
        workingDirectory: String? = nil, ownProcessGroup: Bool = false
    ) throws(ChildProcessError) {
        let path = executable.contains("/") ? executable : try Self.locate(executable)
        self.executable = path
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        let output = outputPath ?? "/dev/null"
        posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        if let workingDirectory { provision_spawn_addchdir(&actions, workingDirectory) }

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // The child starts with default signal handling, whatever this process ignores.
        var defaults = sigset_t()
        sigfillset(&defaults)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var flags = POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK
        if ownProcessGroup {
            posix_spawnattr_setpgroup(&attributes, 0)
            flags |= POSIX_SPAWN_SETPGROUP
        }
        posix_spawnattr_setflags(&attributes, Int16(flags))

        let env = (environment ?? ProcessInfo.processInfo.environment).map { "\($0.key)=\($0.value)" }
        var child: pid_t = 0
        let status = Self.withCStrings([path] + arguments) { argv in
            Self.withCStrings(env) { envp in
                posix_spawn(&child, path, &actions, &attributes, argv, envp)
            }
        }
        guard status == 0 else { throw .spawnFailed(path, String(cString: strerror(status))) }
        pid = child
    }

    /// The termination, once the child has ended (reaps it).
    public func poll() -> Termination? {
        termination.withLock { known in
            if let known { return known }
            var status: Int32 = 0
            let result = waitpid(pid, &status, WNOHANG)
            guard result == pid else {
                // ECHILD: someone else reaped it; report it as gone.
                if result == -1 && errno == ECHILD { known = .exited(-1) }
                return known
            }
            let low = status & 0x7f
            known = low == 0 ? .exited((status >> 8) & 0xff) : .signalled(low)
            return known
        }
    }

    public var isRunning: Bool { poll() == nil }

    public func signal(_ number: Int32) {
        if isRunning { kill(pid, number) }
    }

    /// Waits for the child to end; nil when `timeout` passes first.
    public func wait(timeout: Duration = .seconds(3600)) async -> Termination? {
        let deadline = ContinuousClock.now + timeout
        while true {
            if let done = poll() { return done }
            if ContinuousClock.now >= deadline { return nil }
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    /// The blocking twin of `wait`, for `deinit` and other synchronous places.
    public func waitBlocking(timeout: Duration) -> Termination? {
        let deadline = ContinuousClock.now + timeout
        while true {
            if let done = poll() { return done }
            if ContinuousClock.now >= deadline { return nil }
            usleep(10_000)
        }
    }

    /// SIGTERM, then SIGKILL if it has not ended within `grace`; waits for the end.
    @discardableResult
    public func stop(grace: Duration = .seconds(10)) -> Termination? {
        signal(SIGTERM)
        if let done = waitBlocking(timeout: grace) { return done }
        signal(SIGKILL)
        return waitBlocking(timeout: .seconds(5))
    }

    /// What `run` returns: how the command ended and everything it printed (stdout and stderr).
    public struct Output: Sendable {
        public var termination: Termination?
        public var output: String
        /// True when the command exited 0 within its time.
        public var succeeded: Bool { termination == .exited(0) }
    }

    /// Runs a command to completion (killed after `timeout`) and collects its output.
    public static func run(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil,
        workingDirectory: String? = nil, timeout: Duration = .seconds(600)
    ) async throws(ChildProcessError) -> Output {
        let log = NSTemporaryDirectory() + "provision-run-\(UUID().uuidString).log"
        defer { unlink(log) }
        let child = try ChildProcess(executable, arguments, environment: environment, outputPath: log, workingDirectory: workingDirectory)
        var ended = await child.wait(timeout: timeout)
        if ended == nil {
            child.signal(SIGKILL)
            ended = nil
            _ = await child.wait(timeout: .seconds(5))
        }
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        return Output(termination: ended, output: text)
    }

    /// Finds `program` in PATH (and the sbin folders, where Debian puts some servers).
    public static func locate(_ program: String) throws(ChildProcessError) -> String {
        let paths = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":")
        for directory in paths.map(String.init) + ["/usr/local/sbin", "/usr/sbin", "/sbin"] {
            let candidate = directory + "/" + program
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw .notFound(program)
    }

    private static func withCStrings<T>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> T) -> T {
        let pointers = strings.map { strdup($0) }
        defer { pointers.forEach { free($0) } }
        return (pointers + [nil]).withUnsafeBufferPointer { body($0.baseAddress!) }
    }
}

/// Why a child process could not be started.
public enum ChildProcessError: Error, Sendable, CustomStringConvertible {
    case notFound(String)
    case spawnFailed(String, String)

    public var description: String {
        switch self {
        case .notFound(let program): return "\(program) was not found in PATH."
        case .spawnFailed(let path, let reason): return "\(path) could not be started: \(reason)."
        }
    }
}
