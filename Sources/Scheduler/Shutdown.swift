import Dispatch
import Foundation
import Synchronization

/// A one-way "please stop" shared by the parts of a process: set by SIGTERM/SIGINT or by code,
/// awaited by loops that should wind down.
public final class Shutdown: Sendable {
    private let state = Mutex<(requested: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    public init() {}

    private let signalled = Mutex<Int32?>(nil)

    public var isRequested: Bool { state.withLock { $0.requested } }

    /// The signal that asked for the stop, when one did (the first one).
    public var requestedBySignal: Int32? { signalled.withLock { $0 } }

    public func request() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            guard !state.requested else { return [] }
            state.requested = true
            defer { state.waiters = [] }
            return state.waiters
        }
        waiters.forEach { $0.resume() }
    }

    /// Returns once a stop was requested.
    public func wait() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let resumeNow = state.withLock { state -> Bool in
                if state.requested { return true }
                state.waiters.append(continuation)
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }

    /// Requests a stop when the process receives one of `signals`.
    public func onSignals(_ signals: [Int32] = [SIGTERM, SIGINT]) -> [any DispatchSourceSignal] {
        signals.map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { [self] in
                signalled.withLock { if $0 == nil { $0 = number } }
                self.request()
            }
            source.resume()
            return source
        }
    }
}
