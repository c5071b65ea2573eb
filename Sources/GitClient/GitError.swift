/// Why git could not do what was asked: a refused source, a ref that does not exist, a failed or
/// timed-out command, or no git at all. `message` is a clause without a final period, so callers
/// can make it their own sentence.
package struct GitError: Error, Sendable, Equatable, CustomStringConvertible {
    package enum Kind: Sendable, Equatable {
        /// The URL or ref is not allowed (policy), before anything ran.
        case refused
        /// The repository answered: the ref or commit is not there.
        case notFound
        /// git ran and failed (network, permissions, a damaged repository).
        case failed
        case timedOut
        /// The task running git was cancelled, so git was stopped.
        case cancelled
        /// git could not be started.
        case missing
    }

    package var kind: Kind
    package var message: String

    package init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    /// Whether trying again later may help.
    package var isRetryable: Bool { kind == .failed || kind == .timedOut }

    package var description: String { message }

    /// The message as a sentence: capitalised, with a final period.
    package var sentence: String { (message.prefix(1).uppercased() + message.dropFirst()) + (message.hasSuffix(".") ? "" : ".") }
}
