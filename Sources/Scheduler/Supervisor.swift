import Foundation
import Logging
import ProcessControl
import ServiceLifecycle

/// Keeps `processes` copies of a worker command running: restarts one that dies (with backoff),
/// and when its `ServiceGroup` shuts down gracefully passes SIGTERM on and waits for every child to
/// drain.
package final class Supervisor: Service {
    package struct Configuration: Sendable {
        package var executable: String
        package var arguments: [String]
        package var environment: [String: String]
        package var processes: Int
        /// How long children may drain after SIGTERM before they are killed.
        package var stopTimeout: Duration = .seconds(60)
        /// Where the children's output goes (nil: inherit nothing, /dev/null).
        package var outputPath: String?

        package init(executable: String, arguments: [String], environment: [String: String], processes: Int) {
            self.executable = executable
            self.arguments = arguments
            self.environment = environment
            self.processes = max(1, processes)
        }
    }

    private let configuration: Configuration
    private let logger: Logger

    package init(configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    private struct Slot {
        var child: ChildProcess?
        /// The mark its commands carry (`Orphans`), to stop what it leaves running when it dies.
        var mark: String?
        var startedAt: ContinuousClock.Instant?
        var crashes = 0
        var restartAt: ContinuousClock.Instant?
    }

    /// Runs the children until the group's graceful shutdown (or a cancellation); returns once all
    /// have exited.
    package func run() async {
        let clock = ContinuousClock()
        var slots = Array(repeating: Slot(), count: configuration.processes)
        for index in slots.indices { slots[index].restartAt = clock.now }

        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            for index in slots.indices {
                if let child = slots[index].child, let ended = child.poll() {
                    // A child that lived a while counts as healthy: its next crash starts the
                    // backoff from scratch.
                    let lived = slots[index].startedAt.map { clock.now - $0 } ?? .zero
                    slots[index].crashes = lived > .seconds(30) ? 1 : slots[index].crashes + 1
                    let delay = Duration.milliseconds(min(30_000, 250 * (1 << min(slots[index].crashes - 1, 7))))
                    slots[index].child = nil
                    slots[index].restartAt = clock.now + delay
                    // Its commands outlive a SIGKILL (own process groups): stop them before the
                    // job is retried, or install.py would run twice at once.
                    if let mark = slots[index].mark {
                        let left = Orphans.kill(marked: mark)
                        if !left.isEmpty {
                            logger.warning("stopped what the dead worker process left running", metadata: ["pids": "\(left)"])
                        }
                    }
                    logger.warning(
                        "worker process died; restarting",
                        metadata: ["slot": "\(index)", "pid": "\(child.pid)", "how": "\(ended)", "delay": "\(delay)"])
                }
                if slots[index].child == nil, let due = slots[index].restartAt, clock.now >= due {
                    do {
                        let mark = Orphans.newMark()
                        var environment = configuration.environment
                        environment[Orphans.markName] = mark
                        let child = try ChildProcess(
                            configuration.executable, configuration.arguments, environment: environment,
                            outputPath: configuration.outputPath)
                        slots[index].child = child
                        slots[index].mark = mark
                        slots[index].startedAt = clock.now
                        slots[index].restartAt = nil
                        logger.info("worker process started", metadata: ["slot": "\(index)", "pid": "\(child.pid)"])
                    } catch {
                        slots[index].restartAt = clock.now + .seconds(5)
                        logger.error("could not start a worker process; trying again in 5 s", metadata: ["error": "\(error)"])
                    }
                }
            }
            let restarts = slots.compactMap(\.restartAt).map { $0 - clock.now }
            await Self.waitForChange(children: slots.compactMap(\.child), timeout: max(.milliseconds(1), restarts.min() ?? .seconds(60)))
        }

        let children = slots.compactMap(\.child)
        let marks = slots.compactMap(\.mark)
        logger.notice("stopping worker processes", metadata: ["count": "\(children.count)"])
        children.forEach { $0.signal(SIGTERM) }
        let deadline = clock.now + configuration.stopTimeout
        for child in children {
            let remaining = deadline - clock.now
            if let ended = await child.wait(timeout: max(remaining, .zero)) {
                logger.info("worker process exited", metadata: ["pid": "\(child.pid)", "how": "\(ended)"])
            } else {
                logger.error("worker process did not drain in time; killing it", metadata: ["pid": "\(child.pid)"])
                child.signal(SIGKILL)
                _ = await child.wait(timeout: .seconds(5))
            }
        }
        // A worker killed at the deadline leaves its commands running: they go too.
        for mark in marks { Orphans.kill(marked: mark) }
    }

    /// Returns when a child exits, after `timeout` (a restart is due), or when the group shuts down
    /// or the task is cancelled: an idle supervisor sleeps instead of looking ten times a second.
    private static func waitForChange(children: [ChildProcess], timeout: Duration) async {
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                for child in children { group.addTask { _ = await child.wait(timeout: timeout, cancellable: true) } }
                if children.isEmpty { group.addTask { try? await Task.sleep(for: timeout) } }
                await group.next()
                group.cancelAll()
            }
        }
    }
}
