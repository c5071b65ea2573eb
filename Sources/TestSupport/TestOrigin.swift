import Foundation
#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// The loopback HTTP origin of `Tests/origin/origin.py` (Range, If-Range, injected faults, byte
/// counts), serving the files of a temporary folder: a `LoopbackOrigin`, like the demo's nginx.
package final class TestOrigin: Sendable {
    package let root: URL
    package let port: Int
    private let origin: LoopbackOrigin

    package init() async throws {
        root = try makeTemporaryDirectory("origin")
        let python = ProcessInfo.processInfo.environment["PROVISION_PYTHON"] ?? "python3"
        origin = try await LoopbackOrigin.script(python: python, script: packageRoot().appendingPathComponent("Tests/origin/origin.py").path, root: root)
        port = origin.port
    }

    package var base: String { origin.base }

    /// `http://127.0.0.1:PORT/files/NAME?QUERY`
    package func url(_ name: String, _ query: String = "") -> String {
        "\(base)/files/\(name)" + (query.isEmpty ? "" : "?\(query)")
    }

    /// Writes `size` deterministic pseudo-random bytes to the served folder; returns them.
    @discardableResult
    package func addFile(_ name: String, size: Int, seed: UInt64 = 1) throws -> Data {
        var data = Data(capacity: size)
        try origin.addFile(name, size: Int64(size), seed: seed) { data.append($0) }
        return data
    }

    package struct Request: Decodable, Sendable {
        package var path: String
        package var range: String?
        package var status: Int
        package var bytes: Int
        package var authorization: String?
        package var x_test: String?
        package var if_range: String?
    }

    package struct Stats: Decodable, Sendable {
        package var requests: [Request]
        package var bytes_sent: Int
    }

    package func stats() async throws -> Stats {
        let (data, _) = try await URLSession.shared.data(from: URL(string: "\(base)/_stats")!)
        return try JSONDecoder().decode(Stats.self, from: data)
    }

    package func reset() async throws {
        _ = try await URLSession.shared.data(from: URL(string: "\(base)/_reset")!)
    }

    package func stop() {
        origin.stop()
        try? FileManager.default.removeItem(at: root)
    }

    deinit { stop() }
}
