import Logging

/// A log handler that masks secrets (`Redactor`) in the message and metadata before another
/// handler writes them.
///
/// The logger's own metadata is kept here, not in the wrapped handler: it is redacted like the
/// rest, and setting it stays a dictionary insert (swift-log's StreamLogHandler re-renders its
/// whole metadata on every change, which a worker doing it per job pays for thousands of times a
/// second).
package struct RedactingLogHandler<Wrapped: LogHandler>: LogHandler {
    package var wrapped: Wrapped
    package let redactor: Redactor
    package var metadata: Logger.Metadata = [:]

    package init(wrapping handler: Wrapped, redactor: Redactor) {
        self.wrapped = handler
        self.redactor = redactor
    }

    package func log(event: LogEvent) {
        var event = event
        event.message = Logger.Message(stringLiteral: redactor.scrub(event.message.description))
        var merged = metadata
        if let given = event.metadata { merged.merge(given) { _, new in new } }
        event.metadata = merged.isEmpty ? nil : merged.mapValues(scrub)
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

    package subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    package var logLevel: Logger.Level {
        get { wrapped.logLevel }
        set { wrapped.logLevel = newValue }
    }

    package var metadataProvider: Logger.MetadataProvider? {
        get { wrapped.metadataProvider }
        set { wrapped.metadataProvider = newValue }
    }
}

/// An error's text after redaction, standing in for the original error in a log event.
struct RedactedError: Error, CustomStringConvertible {
    let description: String
}
