import Foundation
import ProcessControl
import ServiceLifecycle
import Synchronization

/// Where an instance stands.
package enum InstanceState: String, Sendable, Codable {
    /// Started; not answering yet (or not proven ready).
    case starting
    /// Proven ready (step 19); the worker connection (step 20) is being opened.
    case ready
    /// Ready and connected: serving work.
    case serving
    /// Ended (crashed, or killed because it stopped answering); restarting after a backoff.
    case restarting
    /// Will not become ready without a change (an import failure, a missing node type, no answer
    /// by the deadline, a port in use).
    case failed
    case stopped
}

/// One instance's state as the supervisor sees it: what `provision services`, Redis and `/metrics` show.
package struct InstanceStatus: Sendable, Equatable, Codable {
    package var instance: ComfyUIInstance
    package var state: InstanceState = .starting
    package var pid: Int32?
    package var restarts = 0
    /// How the last process ended (`exit status 3`, `signal 9`), and why (`crashed`, `stopped answering`).
    package var lastExit: String?
    package var failure: InstanceFailure?
    /// Unix milliseconds.
    package var startedAt: Int64?
    package var servingSince: Int64?
    /// Unix milliseconds of the last liveness answer.
    package var lastAnswer: Int64?
    package var log: String

    enum CodingKeys: String, CodingKey {
        case instance, state, pid, restarts, lastExit = "last_exit", failure, startedAt = "started_at"
        case servingSince = "serving_since", lastAnswer = "last_answer", log
    }
}

/// What happened to an instance, for events, Redis and the fleet.
package enum InstanceEvent: Sendable, Equatable {
    /// The process was spawned (step 13).
    case started
    /// Step 19 passed: /system_stats answered and /object_info had everything; with the time since start.
    case ready(milliseconds: Int)
    /// Step 20: the WebSocket said `status`; first time only.
    case connected
    case failed(InstanceFailure)
    /// It crashed or stopped answering after it had served (`machine_degraded`).
    case degraded(reason: String)
    /// It serves again after a degradation (`machine_recovered`).
    case recovered
    /// It ended before it ever served and is restarted.
    case exited(reason: String)
    case stopped
}

/// Receives every change of an instance (the Redis registry and the step events in provision).
package protocol InstanceObserver: Sendable {
    func instance(_ event: InstanceEvent, status: InstanceStatus) async
}

/// How instances are run, probed and stopped.
package struct SupervisionPolicy: Sendable {
    /// Folder of the instances' log files (`NAME.log`, rotated `NAME.log.1` …).
    package var logDirectory: String
    package var logMaxBytes: Int64 = 10 << 20
    package var logKeep = 3
    /// SIGTERM, then SIGKILL after this long.
    package var stopTimeout: Duration = .seconds(10)
    /// Between liveness probes of a serving instance.
    package var livenessInterval: Duration = .seconds(5)
    /// One liveness probe's time; two misses in a row mean it hangs.
    package var livenessTimeout: Duration = .seconds(3)
    /// Restart backoff: doubles from `backoffBase` up to `backoffMax`.
    package var backoffBase: Duration = .milliseconds(500)
    package var backoffMax: Duration = .seconds(30)
    /// Crashes before it ever served that make it `failed`.
    package var maxCrashesBeforeReady = 5
    /// Environment of the instances (the supervisor's, by default), before the instance's own.
    package var environment: [String: String] = ProcessInfo.processInfo.environment

    package init(logDirectory: String) {
        self.logDirectory = logDirectory
    }
}

/// Runs one ComfyUI instance as a `Service`: starts it, proves it ready, connects to it, restarts
/// it with backoff when it crashes or hangs, and stops it (SIGTERM, then SIGKILL) on graceful
/// shutdown or cancellation, so no process outlives the supervisor's run.
package final class InstanceSupervisor: Service, Sendable {
    package let instance: ComfyUIInstance
    package let readiness: Readiness
    private let policy: SupervisionPolicy
    private let observer: any InstanceObserver
    private let state: Mutex<InstanceStatus>
    private let log: RotatingLog
    /// Requests sent to the instance (probes and liveness checks), for the probe-traffic figure.
    private let requests = Atomic<Int>(0)

    package init(instance: ComfyUIInstance, readiness: Readiness, policy: SupervisionPolicy, observer: any InstanceObserver) {
        self.instance = instance
        self.readiness = readiness
        self.policy = policy
        self.observer = observer
        let path = policy.logDirectory + "/" + instance.name + ".log"
        log = RotatingLog(path: path, maxBytes: policy.logMaxBytes, keep: policy.logKeep)
        state = Mutex(InstanceStatus(instance: instance, log: path))
    }

    package var status: InstanceStatus { state.withLock { $0 } }
    package var requestCount: Int { requests.load(ordering: .relaxed) }

    /// The address probes use: the instance's own, or loopback when it listens on every address.
    var probeHost: String { instance.host == "0.0.0.0" ? "127.0.0.1" : instance.host }

    private func update(_ event: InstanceEvent, _ change: (inout InstanceStatus) -> Void) async {
        let snapshot = state.withLock { status -> InstanceStatus in
            change(&status)
            return status
        }
        await observer.instance(event, status: snapshot)
    }

    package func run() async throws {
        try? FileManager.default.createDirectory(atPath: policy.logDirectory, withIntermediateDirectories: true)
        await cancelWhenGracefulShutdown { await self.supervise() }
    }

    enum ProbeOutcome {
        case ready
        case exited(ChildProcess.Termination)
        case failed(InstanceFailure)
        case cancelled
    }

    enum ServeOutcome {
        case exited(ChildProcess.Termination)
        case hung
        case cancelled
    }

    private static func milliseconds() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    private func supervise() async {
        let clock = ContinuousClock()
        let deadline = clock.now + .milliseconds(Int(max(0.1, readiness.deadlineSeconds) * 1000))
        var everServed = false
        var crashesInARow = 0
        var child: ChildProcess?
        defer { if let child { _ = child.stop(grace: .seconds(1)) } }  // only on an unexpected exit path

        await stopLeftover()
        while !Task.isCancelled {
            // A port someone else holds: ComfyUI would die with a traceback; say it in one sentence.
            if await LoopbackHTTP.isListening(host: probeHost, port: instance.port) {
                let failure = InstanceFailure(
                    type: "port_in_use",
                    message: ServicesError.portInUse(instance: instance.name, host: instance.host, port: instance.port).description)
                if !everServed {
                    await update(.failed(failure)) { $0.state = .failed; $0.failure = failure; $0.pid = nil }
                    await idleUntilCancelled()
                    break
                }
                await update(.degraded(reason: failure.message)) { $0.state = .restarting; $0.failure = failure }
                crashesInARow += 1
                await backoff(crashesInARow)
                continue
            }
            log.rotateIfNeeded()
            let logStart = log.size
            var environment = policy.environment
            for (key, value) in instance.environment { environment[key] = value }
            let spawned: ChildProcess
            do {
                spawned = try ChildProcess(
                    instance.executable, instance.arguments, environment: environment, outputPath: log.path,
                    workingDirectory: instance.workingDirectory, newProcessGroup: true)
            } catch {
                let failure = InstanceFailure(type: "spawn_failed", message: ServicesError.cannotStart(instance: instance.name, reason: error.description).description)
                await update(.failed(failure)) { $0.state = .failed; $0.failure = failure }
                await idleUntilCancelled()
                break
            }
            child = spawned
            try? "\(spawned.pid)\n".write(toFile: pidFile, atomically: true, encoding: .utf8)
            let started = clock.now
            await update(.started) {
                $0.pid = spawned.pid
                $0.startedAt = Self.milliseconds()
                if $0.state != .restarting { $0.state = .starting }
                $0.lastAnswer = nil
            }

            switch await probe(spawned, logStart: logStart, deadline: everServed ? nil : deadline) {
            case .cancelled:
                break
            case .failed(let failure):
                await update(.failed(failure)) { $0.state = .failed; $0.failure = failure }
                // The process stays up (an operator may look at it); it is stopped with the others.
                await idleUntilCancelled()
            case .exited(let termination):
                child = nil
                spawned.signalGroup(SIGKILL)  // what it started dies with it
                crashesInARow += 1
                let reason = "\(instance.name) ended before it answered (\(termination))"
                if !everServed && crashesInARow >= policy.maxCrashesBeforeReady {
                    let last = lastLogLine(from: logStart)
                    let failure = InstanceFailure(
                        type: "crash_loop",
                        message: "\(instance.name) ended \(crashesInARow) times before it answered, last with \(termination)" + (last.map { "; its last line: \($0)" } ?? "") + ".")
                    await update(.failed(failure)) { $0.state = .failed; $0.failure = failure; $0.pid = nil; $0.lastExit = "\(termination)" }
                    await idleUntilCancelled()
                    break
                }
                await update(.exited(reason: reason)) {
                    $0.state = .restarting; $0.pid = nil; $0.restarts += 1; $0.lastExit = "\(termination)"
                }
                await backoff(crashesInARow)
                continue
            case .ready:
                let latency = Int((clock.now - started) / .milliseconds(1))
                await update(.ready(milliseconds: latency)) { $0.state = .ready; $0.lastAnswer = Self.milliseconds() }
                guard await connect(spawned, deadline: everServed ? nil : deadline) else {
                    if Task.isCancelled { break }
                    if let termination = spawned.poll() {
                        child = nil
                        crashesInARow += 1
                        await update(.exited(reason: "\(instance.name) ended while connecting (\(termination))")) {
                            $0.state = .restarting; $0.pid = nil; $0.restarts += 1; $0.lastExit = "\(termination)"
                        }
                        await backoff(crashesInARow)
                        continue
                    }
                    let failure = InstanceFailure(type: "no_answer", message: "\(instance.name) on port \(instance.port) answered HTTP but its WebSocket /ws sent no status message before the deadline.")
                    await update(.failed(failure)) { $0.state = .failed; $0.failure = failure }
                    await idleUntilCancelled()
                    break
                }
                let wasDegraded = everServed
                everServed = true
                let since = clock.now
                await update(wasDegraded ? .recovered : .connected) {
                    $0.state = .serving; $0.servingSince = Self.milliseconds(); $0.failure = nil
                }
                switch await watch(spawned) {
                case .cancelled:
                    break
                case .exited(let termination):
                    child = nil
                    spawned.signalGroup(SIGKILL)
                    crashesInARow = clock.now - since > .seconds(30) ? 1 : crashesInARow + 1
                    await update(.degraded(reason: "\(instance.name) exited (\(termination))")) {
                        $0.state = .restarting; $0.pid = nil; $0.restarts += 1; $0.lastExit = "\(termination)"
                        $0.servingSince = nil
                    }
                    await backoff(crashesInARow)
                    continue
                case .hung:
                    crashesInARow = clock.now - since > .seconds(30) ? 1 : crashesInARow + 1
                    await update(.degraded(reason: "\(instance.name) stopped answering /system_stats")) {
                        $0.state = .restarting; $0.servingSince = nil
                    }
                    let termination = await stop(spawned)
                    child = nil
                    await update(.exited(reason: "stopped answering")) {
                        $0.pid = nil; $0.restarts += 1; $0.lastExit = "stopped answering; \(termination.map { "\($0)" } ?? "still running after SIGKILL")"
                    }
                    await backoff(crashesInARow)
                    continue
                }
            }
            break
        }
        if let running = child {
            let termination = await stop(running)
            child = nil
            await update(.stopped) {
                $0.state = .stopped; $0.pid = nil; $0.servingSince = nil
                if let termination { $0.lastExit = "\(termination) (stopped)" }
            }
        } else {
            await update(.stopped) { $0.state = $0.state == .failed ? .failed : .stopped; $0.pid = nil }
        }
    }

    /// SIGTERM, then SIGKILL after the policy's timeout; waits for the end.
    private func stop(_ child: ChildProcess) async -> ChildProcess.Termination? {
        child.signalGroup(SIGTERM)
        defer {
            // Whatever ComfyUI started (a node's helper process) goes with it.
            child.signalGroup(SIGKILL)
            unlink(pidFile)
        }
        if let ended = await child.wait(timeout: policy.stopTimeout) { return ended }
        child.signalGroup(SIGKILL)
        return await child.wait(timeout: .seconds(5))
    }

    /// `NAME.pid` beside the log: the running process, so a supervisor that was killed (SIGKILL, OOM)
    /// leaves a trace its successor can act on.
    var pidFile: String { policy.logDirectory + "/" + instance.name + ".pid" }

    /// Stops an instance a killed supervisor left running (same pid file, still this instance's
    /// command line), so it does not hold the port forever: SIGTERM, then SIGKILL.
    private func stopLeftover() async {
        guard let text = try? String(contentsOfFile: pidFile, encoding: .utf8), let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)),
            pid > 1, Self.isAlive(pid),
            let command = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline")
        else {
            unlink(pidFile)
            return
        }
        let arguments = command.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        guard arguments.contains(instance.arguments[0]), arguments.contains(String(instance.port)) else {
            unlink(pidFile)
            return
        }
        kill(pid, SIGTERM)
        let clock = ContinuousClock()
        let deadline = clock.now + policy.stopTimeout
        while Self.isAlive(pid) && clock.now < deadline { try? await Task.sleep(for: .milliseconds(20)) }
        if Self.isAlive(pid) { kill(pid, SIGKILL) }
        while Self.isAlive(pid) && clock.now < deadline + .seconds(5) { try? await Task.sleep(for: .milliseconds(20)) }
        await update(.exited(reason: "stopped \(instance.name) (pid \(pid)) left running by an earlier supervisor")) { $0.lastExit = "left over, stopped" }
        unlink(pidFile)
    }

    /// Running and not a zombie.
    static func isAlive(_ pid: Int32) -> Bool {
        guard kill(pid, 0) == 0, let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return false }
        let state = stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).first
        return state != "Z" && state != "X"
    }

    private func idleUntilCancelled() async {
        while !Task.isCancelled { try? await Task.sleep(for: .milliseconds(200)) }
    }

    private func backoff(_ crashes: Int) async {
        let exponent = min(max(crashes - 1, 0), 10)
        let delay = min(policy.backoffMax, policy.backoffBase * (1 << exponent))
        try? await Task.sleep(for: delay)
    }

    private func lastLogLine(from offset: Int64) -> String? {
        log.read(from: offset).split(separator: "\n").last.map { String($0.prefix(300)) }
    }

    /// At most two requests in any second: `slots` holds the times of the last two.
    private struct Limiter {
        var slots: [ContinuousClock.Instant] = []
        func allows(at now: ContinuousClock.Instant, cost: Int) -> Bool {
            slots.filter { now - $0 < .seconds(1) }.count + cost <= 2
        }
        mutating func record(_ now: ContinuousClock.Instant) {
            slots.append(now)
            if slots.count > 2 { slots.removeFirst(slots.count - 2) }
        }
    }

    /// Step 19: probes when the log says the server listens, else once a second; at most two
    /// requests per second.
    private func probe(_ child: ChildProcess, logStart: Int64, deadline: ContinuousClock.Instant?) async -> ProbeOutcome {
        let clock = ContinuousClock()
        var limiter = Limiter()
        var text = ""
        var offset = logStart
        var nextPoll = clock.now + .milliseconds(1000)
        var probedListening = false
        var answeredOnce = false
        while !Task.isCancelled {
            if let ended = child.poll() { return .exited(ended) }
            if offset < log.size {
                let more = log.read(from: offset)
                offset += Int64(more.utf8.count)
                text += more
            } else if offset > log.size {
                offset = 0  // rotated under us
            }
            let listening = ComfyUILog.saysListening(text)
            if let deadline, clock.now >= deadline {
                let seconds = readiness.deadlineSeconds
                let message = listening || answeredOnce
                    ? "\(instance.name) listens on port \(instance.port) but did not answer /system_stats and /object_info within \(Self.format(seconds)) s."
                    : "\(instance.name) did not start serving on port \(instance.port) within \(Self.format(seconds)) s" + (lastLogLine(from: logStart).map { "; its last line: \($0)" } ?? "") + "."
                return .failed(InstanceFailure(type: "no_answer", message: message))
            }
            let now = clock.now
            if (listening && !probedListening) || now >= nextPoll, limiter.allows(at: now, cost: 1) {
                probedListening = probedListening || listening
                nextPoll = now + .seconds(1)
                limiter.record(now)
                requests.add(1, ordering: .relaxed)
                let timeout = min(.seconds(2), deadline.map { max(.milliseconds(100), $0 - now) } ?? .seconds(2))
                if let stats = try? await LoopbackHTTP.get(host: probeHost, port: instance.port, path: "/system_stats", timeout: timeout),
                    stats.status == 200
                {
                    answeredOnce = true
                    // The second request of the round waits for the limiter only if it must.
                    while !limiter.allows(at: clock.now, cost: 1) { try? await Task.sleep(for: .milliseconds(50)) }
                    limiter.record(clock.now)
                    requests.add(1, ordering: .relaxed)
                    if let info = try? await LoopbackHTTP.get(host: probeHost, port: instance.port, path: "/object_info", timeout: .seconds(30)),
                        info.status == 200, let classes = parseObjectInfo(info.body)
                    {
                        // Import lines come before the server listens, so the log read so far has them all.
                        text += log.read(from: offset)
                        if let failure = readiness.judge(objectInfo: classes, log: text) { return .failed(failure) }
                        return .ready
                    }
                }
                continue
            }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return .cancelled
    }

    /// Step 20: the first `status` message of `/ws?clientId=…`, retried once a second until the deadline.
    private func connect(_ child: ChildProcess, deadline: ContinuousClock.Instant?) async -> Bool {
        let clock = ContinuousClock()
        let giveUp = deadline ?? clock.now + .seconds(60)
        while !Task.isCancelled && child.isRunning {
            let path = "/ws?clientId=provision-\(instance.workerID)-\(UUID().uuidString.prefix(8))"
            if let message = try? await LoopbackHTTP.firstWebSocketMessage(host: probeHost, port: instance.port, path: path, timeout: .seconds(5)),
                let object = try? JSONSerialization.jsonObject(with: Data(message.utf8)) as? [String: Any],
                object["type"] as? String == "status"
            {
                return true
            }
            if clock.now >= giveUp { return false }
            try? await Task.sleep(for: .seconds(1))
        }
        return false
    }

    /// A serving instance: its end is seen as it happens, /system_stats is asked every liveness
    /// interval and the log's size once a second.
    private func watch(_ child: ChildProcess) async -> ServeOutcome {
        let clock = ContinuousClock()
        var nextCheck = clock.now + policy.livenessInterval
        var misses = 0
        var nextRotate = clock.now + .seconds(1)
        while !Task.isCancelled {
            if let ended = child.poll() { return .exited(ended) }
            let now = clock.now
            if now >= nextRotate {
                log.rotateIfNeeded()
                nextRotate = now + .seconds(1)
            }
            if now >= nextCheck {
                requests.add(1, ordering: .relaxed)
                let answer = try? await LoopbackHTTP.get(host: probeHost, port: instance.port, path: "/system_stats", timeout: policy.livenessTimeout)
                if answer?.status == 200 {
                    misses = 0
                    state.withLock { $0.lastAnswer = Self.milliseconds() }
                } else if child.isRunning {
                    misses += 1
                    if misses >= 2 { return .hung }
                }
                nextCheck = clock.now + policy.livenessInterval
            }
            // Asleep until the next probe or log check (one wake-up a second), unless the process
            // ends first: its waitid thread wakes this at once, so a crash is seen without polling.
            _ = await child.wait(timeout: max(.milliseconds(1), min(nextCheck, nextRotate) - clock.now), cancellable: true)
        }
        return .cancelled
    }

    static func format(_ seconds: Double) -> String {
        seconds == seconds.rounded() ? String(Int(seconds)) : String(format: "%.1f", seconds)
    }
}
