/// A failed attempt, classified: `type` is a short machine-readable cause, `message` one sentence.
package struct JobFailure: Error, Sendable, Equatable, CustomStringConvertible {
    package var type: String
    package var message: String
    package var retryable: Bool

    package init(type: String, message: String, retryable: Bool) {
        self.type = type
        self.message = message
        self.retryable = retryable
    }

    package static func invalidPayload(_ message: String) -> JobFailure {
        JobFailure(type: "invalid_payload", message: message, retryable: false)
    }

    package var description: String { message }
}
