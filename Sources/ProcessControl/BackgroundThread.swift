import CSpawn
import Foundation

/// Runs closures one at a time, in order, on an OS thread of its own at a lower CPU priority: for
/// background work (telemetry) that must yield the CPU to the jobs when both want it.
package final class BackgroundThread: @unchecked Sendable {
    // `condition` guards `work` and `stopped`.
    private let condition = NSCondition()
    private var work: [@Sendable () -> Void] = []
    private var stopped = false

    /// `nice` is added to the thread's priority (0-19; best effort: a refused change leaves it as is).
    package init(name: String, nice: Int32) {
        let thread = Thread { [self] in
            _ = provision_set_thread_nice(nice)
            while let next = take() { next() }
        }
        thread.name = name
        thread.start()
    }

    /// Queues `body` behind what is already queued; after `stop`, runs it at once on the caller's
    /// thread (a late caller still gets its work done, and whoever awaits it is not left hanging).
    package func run(_ body: @escaping @Sendable () -> Void) {
        condition.lock()
        if stopped {
            condition.unlock()
            body()
            return
        }
        work.append(body)
        condition.signal()
        condition.unlock()
    }

    /// Lets the thread end once the queued work is done.
    package func stop() {
        condition.lock()
        stopped = true
        condition.signal()
        condition.unlock()
    }

    private func take() -> (@Sendable () -> Void)? {
        condition.lock()
        defer { condition.unlock() }
        while work.isEmpty && !stopped { condition.wait() }
        return work.isEmpty ? nil : work.removeFirst()
    }
}
