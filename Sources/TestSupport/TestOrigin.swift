import Foundation
#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// The loopback HTTP origin of `Tests/origin/origin.py` (Range, If-Range, injected faults, byte
/// counts), serving the files of a temporary folder: a `LoopbackOrigin`, like the demo's nginx.
public final class TestOrigin: Sendable {
    public let root: URL
    public let port: Int
    private let origin: LoopbackOrigin

    public init() async throws {
        root = try makeTemporaryDirectory("origin")
        let python = ProcessInfo.processInfo.environment["PROVISION_PYTHON"] ?? "python3"
        origin = try await LoopbackOrigin.script(python: python, script: packageRoot().appendingPathComponent("Tests/origin/origin.py").path, root: root)
        port = origin.port
    }

    public var base: String { origin.base }

    /// `http://127.0.0.1:PORT/files/NAME?QUERY`
    public func url(_ name: String, _ query: String = "") -> String {
        "\(base)/files/\(name)" + (query.isEmpty ? "" : "?\(query)")
    }

    /// Writes `size` deterministic pseudo-random bytes to the served folder; returns them.
    @discardableResult
    public func addFile(_ name: String, size: Int, seed: UInt64 = 1) throws -> Data {
        var data = Data(capacity: size)
        try origin.addFile(name, size: Int64(size), seed: seed) { data.append($0) }
        return data
    }

    public struct Request: Decodable, Sendable {
        public var path: String
        public var range: String?
        public var status: Int
        public var bytes: Int
        public var authorization: String?
        public var x_test: String?
        public var if_range: String?
    }

    public struct Stats: Decodable, Sendable {
        public var requests: [Request]
        public var bytes_sent: Int
    }

    public func stats() async throws -> Stats {
        let (data, _) = try await URLSession.shared.data(from: URL(string: "\(base)/_stats")!)
        return try JSONDecoder().decode(Stats.self, from: data)
    }

    public func reset() async throws {
        _ = try await URLSession.shared.data(from: URL(string: "\(base)/_reset")!)
    }

    public func stop() {
        origin.stop()
        try? FileManager.default.removeItem(at: root)
    }

    deinit { stop() }
}
