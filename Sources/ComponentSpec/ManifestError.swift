/// Why an input (workflow, manifest, lockfile, registry) cannot be used or a step failed, in one
/// sentence that names the file and what is wrong with it.
public struct ManifestError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String

    public init(_ message: String) {
        self.message = Self.clipped(message)
    }

    /// A message with every run of more than 200 non-space characters cut to its first 80 and last
    /// 20: messages quote what an input said (a node id, a class type, a URL), and a 1 MiB id made a
    /// 1 MiB "sentence" (found by bench/fuzz).
    public static func clipped(_ text: String) -> String {
        guard text.count > 200 else { return text }
        return text.split(separator: " ", omittingEmptySubsequences: false).map { word in
            word.count > 200 ? String(word.prefix(80)) + "…" + String(word.suffix(20)) : String(word)
        }.joined(separator: " ")
    }

    public var description: String { message }
}
