/// A failed attempt, classified: `type` is a short machine-readable cause, `message` one sentence.
public struct JobFailure: Error, Sendable, Equatable, CustomStringConvertible {
    public var type: String
    public var message: String
    public var retryable: Bool

    public init(type: String, message: String, retryable: Bool) {
        self.type = type
        self.message = message
        self.retryable = retryable
    }

    public static func invalidPayload(_ message: String) -> JobFailure {
        JobFailure(type: "invalid_payload", message: message, retryable: false)
    }

    public var description: String { message }
}
