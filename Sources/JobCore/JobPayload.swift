import Foundation

/// The step of the startup flow (seed 002) a job kind reports under.
package enum JobStep: Int, Sendable {
    /// Step 17: ComfyUI, custom nodes, their Python requirements and scripts.
    case customNodes = 17
    /// Step 18: model files and the final check.
    case models = 18
    /// Step 19: ComfyUI started and proven to serve every node (then 20, 21).
    case comfyUIServer = 19
}

/// The contract of one job kind: its name, its telemetry step, and its payload's fields, encoded
/// by the planner and decoded once by the worker. The JSON Schemas in
/// `protocols/schemas/job-payloads/KIND.schema.json` publish the same contract (a test holds the two
/// together).
package protocol JobPayload: Codable, Sendable {
    static var kind: String { get }
    static var step: JobStep { get }
    /// The rules a schema cannot say (ref names, paths, sizes): a broken payload fails for good.
    func validate() throws(JobFailure)
}

extension JobPayload {
    package func validate() throws(JobFailure) {}

    /// Decodes a payload from its JSON text, naming the field that is wrong.
    package static func decode(_ text: String) throws(JobFailure) -> Self {
        guard text.utf8.count <= 1 << 20 else { throw .invalidPayload("a \(kind) payload is larger than 1 MiB") }
        do {
            return try JSONDecoder().decode(Self.self, from: Data(text.utf8))
        } catch let error as DecodingError {
            throw .invalidPayload("the \(kind) payload is malformed: \(PayloadDecoding.describe(error))")
        } catch {
            throw .invalidPayload("the \(kind) payload is not JSON")
        }
    }

    /// The payload as JSON text, keys sorted.
    package func encoded() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: (try? encoder.encode(self)) ?? Data("{}".utf8), as: UTF8.self)
    }
}

/// The kinds this project defines, for whoever needs a kind's step without its executor (telemetry).
package enum JobKinds {
    package static let all: [any JobPayload.Type] = [
        NoopPayload.self, SleepPayload.self, DownloadPayload.self, ComfyUIPayload.self, NodePayload.self,
        PythonDepsPayload.self, InstallScriptsPayload.self, VerifyPayload.self, ServicesPayload.self,
    ]

    /// The step a kind reports under; nil for a kind this project does not define.
    package static func step(of kind: String) -> JobStep? {
        all.first { $0.kind == kind }?.step
    }
}

/// Helpers for payload decoding.
package enum PayloadDecoding {
    /// A field path and what is wrong with it, for one sentence.
    package static func describe(_ error: DecodingError) -> String {
        func path(_ keys: [any CodingKey]) -> String {
            keys.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".").replacingOccurrences(of: ".[", with: "[")
        }
        switch error {
        case .keyNotFound(let key, let context): return "\(context.codingPath.isEmpty ? "it" : path(context.codingPath)) has no \(key.stringValue)"
        case .typeMismatch(_, let context), .valueNotFound(_, let context): return "\(path(context.codingPath)) has the wrong type"
        case .dataCorrupted(let context): return context.codingPath.isEmpty ? "it is not a JSON object" : "\(path(context.codingPath)) is unusable"
        @unknown default: return "it does not have the expected shape"
        }
    }
}

extension KeyedDecodingContainer {
    /// A list that Redis's cjson may have stored as `{}` when it was empty.
    package func decodeListIfPresent<T: Decodable>(_ type: [T].Type, forKey key: Key) throws -> [T]? {
        guard contains(key) else { return nil }
        if let list = try? decode([T].self, forKey: key) { return list }
        if let object = try? decode([String: Int].self, forKey: key), object.isEmpty { return [] }
        return try decode([T].self, forKey: key)
    }
}
