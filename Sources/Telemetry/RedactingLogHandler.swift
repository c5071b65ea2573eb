import Logging

/// A log handler that masks secrets (`Redactor`) in the message and metadata before another
/// handler writes them.
public struct RedactingLogHandler<Wrapped: LogHandler>: LogHandler {
    public var wrapped: Wrapped
    public let redactor: Redactor

    public init(wrapping handler: Wrapped, redactor: Redactor) {
        self.wrapped = handler
        self.redactor = redactor
    }

    public func log(event: LogEvent) {
        var event = event
        event.message = Logger.Message(stringLiteral: redactor.scrub(event.message.description))
        if let metadata = event.metadata { event.metadata = metadata.mapValues(scrub) }
        if let error = event.error { event.error = RedactedError(description: redactor.scrub("\(error)")) }
        wrapped.log(event: event)
    }

    private func scrub(_ value: Logger.MetadataValue) -> Logger.MetadataValue {
        switch value {
        case .string(let s): return .string(redactor.scrub(s))
        case .stringConvertible(let c): return .string(redactor.scrub(c.description))
        case .dictionary(let d): return .dictionary(d.mapValues(scrub))
        case .array(let a): return .array(a.map(scrub))
        }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { wrapped[metadataKey: key] }
        set { wrapped[metadataKey: key] = newValue }
    }

    public var metadata: Logger.Metadata {
        get { wrapped.metadata }
        set { wrapped.metadata = newValue }
    }

    public var logLevel: Logger.Level {
        get { wrapped.logLevel }
        set { wrapped.logLevel = newValue }
    }

    public var metadataProvider: Logger.MetadataProvider? {
        get { wrapped.metadataProvider }
        set { wrapped.metadataProvider = newValue }
    }
}

/// An error's text after redaction, standing in for the original error in a log event.
struct RedactedError: Error, CustomStringConvertible {
    let description: String
}
