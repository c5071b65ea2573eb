/// Why an input (workflow, manifest, lockfile, registry) cannot be used or a step failed, in one
/// sentence that names the file and what is wrong with it.
public struct ManifestError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String

    public init(_ message: String) {
        self.message = message
    }

    public var description: String { message }
}
