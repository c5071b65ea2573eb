import Dispatch
import Foundation
import Synchronization

/// The cancellation of one Redis call, shared by the awaiting task and the client's queue that runs
/// the call's blocking I/O. Cancelling resumes the caller at once, shuts down the socket a blocked
/// read or write is waiting on (so a `BLPOP` or a stalled server frees the queue without waiting out
/// the command timeout), and ends a reconnect pause.
final class CallCancellation: Sendable {
    private let state = Mutex<(cancelled: Bool, socket: Int32?)>((false, nil))
    /// Signalled once on cancellation; a pause waits on it instead of sleeping.
    private let wakeup = DispatchSemaphore(value: 0)

    init() {}

    var isCancelled: Bool { state.withLock { $0.cancelled } }

    func cancel() {
        let first = state.withLock { state -> Bool in
            guard !state.cancelled else { return false }
            state.cancelled = true
            // Under the lock: the queue unregisters the socket (under the same lock) before it can
            // free it, so this never shuts down a descriptor reused by something else.
            if let socket = state.socket { _ = shutdown(socket, Int32(SHUT_RDWR)) }
            return true
        }
        if first { wakeup.signal() }
    }

    /// Runs `body`, blocking I/O on `connection`'s socket, so that a cancellation meanwhile
    /// interrupts it. Throws `RedisError.cancelled` instead of starting when the call was already
    /// cancelled.
    func interruptible<T>(_ connection: RedisConnection, command: String, _ body: () throws(RedisError) -> T) throws(RedisError) -> T {
        let server = connection.server
        let cancelled = state.withLock { state -> Bool in
            if state.cancelled { return true }
            state.socket = connection.socket
            return false
        }
        if cancelled { throw .cancelled(server: server, command: command) }
        // A connection that breaks inside `body` frees its socket: it forgets it here first.
        connection.interrupter = self
        defer {
            connection.interrupter = nil
            forgetSocket()
        }
        do throws(RedisError) {
            return try body()
        } catch {
            if isCancelled { throw .cancelled(server: server, command: command) }
            throw error
        }
    }

    /// The socket is about to be closed: a later cancellation must not shut down its number.
    func forgetSocket() {
        state.withLock { $0.socket = nil }
    }

    /// Waits `seconds` unless cancelled first; returns false when cancelled.
    func pause(seconds: Double) -> Bool {
        if isCancelled { return false }
        let nanoseconds = Int(max(0, min(seconds, 3600)) * 1e9)
        if wakeup.wait(timeout: .now() + .nanoseconds(nanoseconds)) == .success {
            wakeup.signal()  // keep it signalled for any later pause of the same call
            return false
        }
        return !isCancelled
    }
}

/// Resumes a continuation once: with the call's result from the queue, or with `cancelled` from the
/// cancellation handler, whichever comes first.
final class OnceContinuation<T: Sendable>: Sendable {
    private let state = Mutex<(continuation: CheckedContinuation<Result<T, RedisError>, Never>?, early: Result<T, RedisError>?)>((nil, nil))

    init() {}

    func install(_ continuation: CheckedContinuation<Result<T, RedisError>, Never>) {
        let early = state.withLock { state -> Result<T, RedisError>? in
            if let early = state.early { return early }
            state.continuation = continuation
            return nil
        }
        if let early { continuation.resume(returning: early) }
    }

    func resume(_ result: Result<T, RedisError>) {
        let continuation = state.withLock { state -> CheckedContinuation<Result<T, RedisError>, Never>? in
            guard let continuation = state.continuation else {
                if state.early == nil { state.early = result }
                return nil
            }
            state.continuation = nil
            state.early = result  // later resumes see a finished call
            return continuation
        }
        continuation?.resume(returning: result)
    }
}

/// Runs `body` in a task of its own that the caller's cancellation does not reach, and waits for
/// it: for the Redis writes that end work which was cancelled (handing a job back, reporting a
/// timed-out job, removing a stopped service's records), which would otherwise be cancelled too.
public func withoutCancellation<T: Sendable>(_ body: @escaping @Sendable () async -> T) async -> T {
    await Task { await body() }.value
}
