import CSpawn
import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A child process started with `posix_spawn` and reaped with `waitpid` on its own pid, so its
/// exit is seen at once whatever else the process does with signals or run loops.
package final class ChildProcess: Sendable {
    /// How a child ended.
    package enum Termination: Sendable, Equatable, CustomStringConvertible {
        case exited(Int32)
        case signalled(Int32)

        package var description: String {
            switch self {
            case .exited(let status): return "exit status \(status)"
            case .signalled(let signal): return "signal \(signal)"
            }
        }
    }

    package let pid: pid_t
    package let executable: String
    private let termination = Mutex<Termination?>(nil)
    /// Fires when the child exits: a thread of its own blocks in `waitid` for it, so waiting costs
    /// no polling.
    private let exit = ExitSignal()

    /// Starts `executable` (a path, or a name looked up in PATH) in `workingDirectory`. Output goes
    /// to `outputPath` (appended) or nowhere; standard input is /dev/null. With `newProcessGroup` the
    /// child leads a process group of its own: a terminal's Ctrl-C (SIGINT to the foreground group)
    /// reaches only this process, which stops the child in its own order, and `signalGroup` reaches
    /// whatever the child started.
    package init(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil, outputPath: String? = nil,
        workingDirectory: String? = nil, newProcessGroup: Bool = false
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
        if newProcessGroup {
            posix_spawnattr_setpgroup(&attributes, 0)
            flags |= POSIX_SPAWN_SETPGROUP
        }
        posix_spawnattr_setflags(&attributes, Int16(flags))

        var environment = environment ?? ProcessInfo.processInfo.environment
        // Whatever a worker process starts carries its owner mark, even in a chosen environment, so
        // the supervisor can find what a killed worker left running (`Orphans`).
        if let owner = Orphans.ownMark { environment[Orphans.markName] = owner }
        let env = environment.map { "\($0.key)=\($0.value)" }
        var child: pid_t = 0
        let status = Self.withCStrings([path] + arguments) { argv in
            Self.withCStrings(env) { envp in
                posix_spawn(&child, path, &actions, &attributes, argv, envp)
            }
        }
        guard status == 0 else { throw .spawnFailed(path, String(cString: strerror(status))) }
        pid = child
        exit.watch(child)
    }

    /// The termination, once the child has ended (reaps it).
    package func poll() -> Termination? {
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

    package var isRunning: Bool { poll() == nil }

    package func signal(_ number: Int32) {
        if isRunning { kill(pid, number) }
    }

    /// Signals the child's process group (started with `newProcessGroup`): the child and what it started.
    package func signalGroup(_ number: Int32) {
        if kill(-pid, number) != 0 { signal(number) }
    }

    /// Waits for the child to end; nil when `timeout` passes first, or, when `cancellable`, when the
    /// task is cancelled. Stopping a child must wait even in a cancelled task, so that is not the default.
    package func wait(timeout: Duration = .seconds(3600), cancellable: Bool = false) async -> Termination? {
        if let done = poll() { return done }
        await exit.wait(timeout: timeout, cancellable: cancellable)
        return poll()
    }

    /// The blocking twin of `wait`, for `deinit` and other synchronous places.
    /// What the exit signal still holds for waits; 0 once every wait has returned (a test's view).
    package var heldWaits: Int { exit.heldWaits }

    package func waitBlocking(timeout: Duration) -> Termination? {
        if let done = poll() { return done }
        _ = exit.group.wait(timeout: .now() + .nanoseconds(Int(ExitSignal.nanoseconds(timeout))))
        return poll()
    }

    /// SIGTERM, then SIGKILL if it has not ended within `grace`; waits for the end.
    @discardableResult
    package func stop(grace: Duration = .seconds(10)) -> Termination? {
        signal(SIGTERM)
        if let done = waitBlocking(timeout: grace) { return done }
        signal(SIGKILL)
        return waitBlocking(timeout: .seconds(5))
    }

    /// What `run` returns: how the command ended and what it printed (stdout and stderr, made printable).
    package struct Output: Sendable {
        /// How it ended; nil when it was stopped, for running past its deadline or because the
        /// task that ran it was cancelled (`cancelled` says which).
        package var termination: Termination?
        package var output: String
        /// True when it was stopped because the task running it was cancelled, not at its deadline.
        package var cancelled: Bool

        package init(termination: Termination?, output: String, cancelled: Bool = false) {
            self.termination = termination
            self.output = output
            self.cancelled = cancelled
        }

        /// True when the command exited 0 within its time.
        package var succeeded: Bool { termination == .exited(0) }
        /// The exit status; nil when it was stopped or died of a signal.
        package var status: Int32? {
            if case .exited(let code)? = termination { return code }
            return nil
        }
        /// True when it was stopped for running past its deadline.
        package var timedOut: Bool { termination == nil && !cancelled }
        /// How it ended, in words for an error sentence: its termination, or why it was stopped.
        package func ending(deadline: Duration) -> String {
            if let termination { return "\(termination)" }
            return cancelled ? "it was stopped because its job was cancelled" : "it ran longer than \(deadline)"
        }

        /// The last meaningful line of the output, for error sentences.
        package var lastLine: String {
            let lines = output.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            return String((lines.last ?? "").prefix(300))
        }
    }

    /// Runs a command to completion and collects its output: arguments as a list (never a shell),
    /// stdin from /dev/null, output in a private file (mode 0600), the last `outputLimit` bytes kept;
    /// past `timeout` it gets SIGTERM, then SIGKILL after `grace`.
    package static func run(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil,
        workingDirectory: String? = nil, timeout: Duration = .seconds(600), grace: Duration = .seconds(2), outputLimit: Int = ChildProcess.outputLimit
    ) async throws(ChildProcessError) -> Output {
        let log = NSTemporaryDirectory() + "provision-run-\(UUID().uuidString).log"
        let fd = open(log, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        if fd >= 0 { close(fd) }
        defer { unlink(log) }
        // Its own process group: stopping it stops what it started too (pip under install.py, git's
        // helpers), so nothing keeps writing into the environment after the job let go of it.
        let child = try ChildProcess(executable, arguments, environment: environment, outputPath: log, workingDirectory: workingDirectory, newProcessGroup: true)
        // A cancelled job stops its command: SIGTERM, then SIGKILL, as at the deadline.
        let started = ContinuousClock.now
        let ended = await child.wait(timeout: timeout, cancellable: true)
        // A wait that ended early without an exit was a cancellation, not the deadline.
        let cancelled = ended == nil && Task.isCancelled && ContinuousClock.now - started < timeout
        if ended == nil {
            child.signalGroup(SIGTERM)
            if await child.wait(timeout: grace) == nil {
                child.signalGroup(SIGKILL)
                _ = await child.wait(timeout: .seconds(5))
            }
        }
        return Output(termination: ended, output: printable(tailOf: log, limit: outputLimit), cancelled: cancelled)
    }

    /// The most of a command's output `run` keeps: its last bytes, where errors are.
    package static let outputLimit = 256 << 10

    /// The last `limit` bytes of a file as text that is safe in messages, status and events.
    static func printable(tailOf path: String, limit: Int) -> String {
        guard let handle = FileHandle(forReadingAtPath: path) else { return "" }
        defer { try? handle.close() }
        let size = (try? handle.seekToEnd()) ?? 0
        try? handle.seek(toOffset: size > UInt64(limit) ? size - UInt64(limit) : 0)
        return printable(handle.readDataToEndOfFile())
    }

    /// Output as text for people: invalid UTF-8 replaced, terminal escape sequences removed,
    /// carriage returns (progress bars) made line breaks, NUL and other control bytes dropped.
    package static func printable(_ data: Data) -> String {
        let text = String(decoding: data, as: UTF8.self)
        var result = String.UnicodeScalarView()
        var escape = false
        for scalar in text.unicodeScalars {
            if escape {
                // CSI sequences end with a letter; a lone ESC swallows one character.
                if scalar.properties.isAlphabetic || scalar == "~" { escape = false }
                continue
            }
            switch scalar.value {
            case 0x1B: escape = true
            case 0x0A, 0x09: result.append(scalar)
            case 0x0D: result.append("\n")
            case 0x00..<0x20, 0x7F, 0x80..<0xA0: continue
            default: result.append(scalar)
            }
        }
        return String(result)
    }

    /// Finds `program` in PATH (and the sbin folders, where Debian puts some servers).
    package static func locate(_ program: String) throws(ChildProcessError) -> String {
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
package enum ChildProcessError: Error, Sendable, CustomStringConvertible {
    case notFound(String)
    case spawnFailed(String, String)

    package var description: String {
        switch self {
        case .notFound(let program): return "\(program) was not found in PATH."
        case .spawnFailed(let path, let reason): return "\(path) could not be started: \(reason)."
        }
    }
}

/// The exit of one child, announced once: a dedicated thread blocks in `waitid(WNOWAIT)` (the
/// child stays to be reaped by `poll`), then wakes every async waiter and the blocking ones.
final class ExitSignal: Sendable {
    private struct State {
        var exited = false
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
        var cancelled: Set<Int> = []
        /// Waits that have not returned: only their late timers or cancellations are remembered.
        var open: Set<Int> = []
        var next = 0
    }

    private let state = Mutex(State())
    /// Entered until the child exits, for `waitBlocking`.
    let group = DispatchGroup()

    func watch(_ pid: pid_t) {
        group.enter()
        let thread = Thread { [self] in
            var info = siginfo_t()
            while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) == -1 && errno == EINTR {}
            // Exited, or reaped already (ECHILD): either way it is over.
            let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
                state.exited = true
                defer { state.waiters = [:] }
                return Array(state.waiters.values)
            }
            for waiter in waiters { waiter.resume() }
            group.leave()
        }
        thread.stackSize = 64 << 10
        thread.start()
    }

    /// A duration in nanoseconds, between 0 and about 31 years (no overflow for any input).
    static func nanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        let whole = max(0, min(seconds, 1_000_000_000))
        return whole * 1_000_000_000 + max(0, attoseconds / 1_000_000_000)
    }

    /// Returns when the child has exited, when `timeout` has passed, or (when `cancellable`) when
    /// the task is cancelled; whichever comes first resumes the waiter, once.
    func wait(timeout: Duration, cancellable: Bool) async {
        let id = state.withLock { state -> Int in
            state.next += 1
            state.open.insert(state.next)
            return state.next
        }
        let resume: @Sendable () -> Void = { [self] in
            let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
                if let waiter = state.waiters.removeValue(forKey: id) { return waiter }
                // Not registered yet: the registration sees this and returns at once. A timer that
                // fires after the wait returned (it was cancelled, or the child exited) is dropped:
                // remembering it would keep one id per such wait for good.
                if state.open.contains(id) { state.cancelled.insert(id) }
                return nil
            }
            waiter?.resume()
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { state -> Bool in
                    if state.cancelled.remove(id) != nil || state.exited { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if resumeNow {
                    continuation.resume()
                    return
                }
                DispatchQueue.global().asyncAfter(deadline: .now() + .nanoseconds(Int(ExitSignal.nanoseconds(timeout))), execute: resume)
            }
        } onCancel: {
            if cancellable { resume() }
        }
        state.withLock { state in
            state.open.remove(id)
            state.cancelled.remove(id)
        }
    }

    /// Ids the signal still holds for waits (waiting, cancelled early or not returned): 0 when idle.
    var heldWaits: Int { state.withLock { $0.waiters.count + $0.cancelled.count + $0.open.count } }
}
