import Foundation
import Logging

/// Keeps `processes` copies of a worker command running: restarts one that dies (with backoff),
/// and on shutdown passes SIGTERM on and waits for every child to drain.
public final class Supervisor: Sendable {
    public struct Configuration: Sendable {
        public var executable: String
        public var arguments: [String]
        public var environment: [String: String]
        public var processes: Int
        /// How long children may drain after SIGTERM before they are killed.
        public var stopTimeout: Duration = .seconds(60)

        public init(executable: String, arguments: [String], environment: [String: String], processes: Int) {
            self.executable = executable
            self.arguments = arguments
            self.environment = environment
            self.processes = max(1, processes)
        }
    }

    private let configuration: Configuration
    private let logger: Logger

    public init(configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    private enum Event: Sendable {
        case exited(slot: Int, pid: Int32, status: Int32, reason: Process.TerminationReason)
        case restart(slot: Int)
        case stop
    }

    /// Runs the children until `shutdown`; returns once all have exited.
    public func run(until shutdown: Shutdown) async throws {
        let (events, sink) = AsyncStream<Event>.makeStream()
        var children: [Int: Process] = [:]
        var startedAt: [Int: ContinuousClock.Instant] = [:]
        var crashes: [Int: Int] = [:]
        let clock = ContinuousClock()

        func start(_ slot: Int) throws {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: configuration.executable)
            process.arguments = configuration.arguments
            process.environment = configuration.environment
            process.terminationHandler = { finished in
                sink.yield(.exited(slot: slot, pid: finished.processIdentifier, status: finished.terminationStatus, reason: finished.terminationReason))
            }
            try process.run()
            children[slot] = process
            startedAt[slot] = clock.now
            logger.info("worker process started", metadata: ["slot": "\(slot)", "pid": "\(process.processIdentifier)"])
        }

        for slot in 0..<configuration.processes { try start(slot) }
        let stopWatcher = Task {
            await shutdown.wait()
            sink.yield(.stop)
        }
        defer { stopWatcher.cancel() }

        var stopping = false
        for await event in events {
            switch event {
            case .stop:
                stopping = true
                logger.notice("stopping worker processes", metadata: ["count": "\(children.count)"])
                for child in children.values where child.isRunning { kill(child.processIdentifier, SIGTERM) }
                let pids = children.values.map(\.processIdentifier)
                let timeout = configuration.stopTimeout
                Task {
                    try? await Task.sleep(for: timeout)
                    for pid in pids { kill(pid, SIGKILL) }
                }
            case .exited(let slot, let pid, let status, let reason):
                guard children[slot]?.processIdentifier == pid else { break }
                children[slot] = nil
                let how = reason == .uncaughtSignal ? "signal \(status)" : "exit status \(status)"
                if stopping {
                    logger.info("worker process exited", metadata: ["slot": "\(slot)", "pid": "\(pid)", "how": "\(how)"])
                } else {
                    // A child that lived a while counts as healthy: its next crash starts the
                    // backoff from scratch.
                    let lived = startedAt[slot].map { clock.now - $0 } ?? .zero
                    crashes[slot] = lived > .seconds(30) ? 1 : (crashes[slot] ?? 0) + 1
                    let delay = Duration.milliseconds(min(30_000, 250 * (1 << min((crashes[slot] ?? 1) - 1, 7))))
                    logger.warning("worker process died; restarting", metadata: ["slot": "\(slot)", "pid": "\(pid)", "how": "\(how)", "delay": "\(delay)"])
                    Task {
                        try? await Task.sleep(for: delay)
                        sink.yield(.restart(slot: slot))
                    }
                }
            case .restart(let slot):
                if !stopping && children[slot] == nil {
                    do { try start(slot) } catch {
                        logger.error("could not start a worker process; trying again in 5 s", metadata: ["error": "\(error)"])
                        Task {
                            try? await Task.sleep(for: .seconds(5))
                            sink.yield(.restart(slot: slot))
                        }
                    }
                }
            }
            if stopping && children.isEmpty { break }
        }
    }
}
