import Dispatch
import Foundation
import Synchronization

/// Wakes one waiting loop early, from a signal or another task, without a Redis connection of its
/// own: the service supervisor waits on it between its slow looks at Redis (protocols/redis.md,
/// "Services"), so an idle machine keeps to its connection and command budget.
final class Doorbell: Sendable {
    private struct State {
        /// Rung while nobody waited: the next wait returns at once, so no ring is lost.
        var rung = false
        var waiter: CheckedContinuation<Void, Never>?
        /// Which wait a timer or cancellation belongs to, so a late one cannot end a later wait.
        var round = 0
        var endedRound = -1
    }
    private let state = Mutex(State())

    func ring() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard let waiter = state.waiter else {
                state.rung = true
                return nil
            }
            state.waiter = nil
            return waiter
        }
        waiter?.resume()
    }

    /// Returns at the next ring (at once if it rang since the last wait), after `timeout`, or when
    /// the task is cancelled, whichever comes first.
    func wait(timeout: Duration) async {
        let round = state.withLock { state in
            state.round += 1
            return state.round
        }
        let timer = Task {
            try? await Task.sleep(for: timeout)
            self.end(round: round)
        }
        defer { timer.cancel() }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLock { state -> Bool in
                    if state.rung || state.endedRound == round || Task.isCancelled {
                        state.rung = false
                        return true
                    }
                    state.waiter = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            self.end(round: round)
        }
    }

    private func end(round: Int) {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard state.round == round else { return nil }
            state.endedRound = round
            let waiter = state.waiter
            state.waiter = nil
            return waiter
        }
        waiter?.resume()
    }

    /// Rings on each `signal` to this process, which no longer ends or interrupts it (the source
    /// keeps it until `stop`). Children are spawned with default signal handling, so they do not
    /// inherit the ignore.
    func ring(on signal: Int32) -> DispatchSourceSignal {
        Foundation.signal(signal, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: signal, queue: .global())
        source.setEventHandler { [self] in ring() }
        source.resume()
        return source
    }
}
