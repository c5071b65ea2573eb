import Foundation
#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// The loopback HTTP origin of `Tests/origin/origin.py` (Range, If-Range, injected faults, byte
/// counts), serving the files of a temporary folder.
public final class TestOrigin: Sendable {
    public let root: URL
    public let port: Int
    private let process: TestProcess

    public init() async throws {
        root = try makeTemporaryDirectory("origin")
        let portFile = root.appendingPathComponent(".port").path
        let python = ProcessInfo.processInfo.environment["PROVISION_PYTHON"] ?? "python3"
        process = try TestProcess(python, [packageRoot().appendingPathComponent("Tests/origin/origin.py").path, "--root", root.path, "--port-file", portFile])
        var found: Int?
        _ = await eventually(timeout: .seconds(10), every: .milliseconds(20)) {
            found = (try? String(contentsOfFile: portFile, encoding: .utf8)).flatMap { Int($0) }
            return found != nil
        }
        guard let found else { throw OriginError.notStarted(process.output) }
        port = found
    }

    public var base: String { "http://127.0.0.1:\(port)" }

    /// `http://127.0.0.1:PORT/files/NAME?QUERY`
    public func url(_ name: String, _ query: String = "") -> String {
        "\(base)/files/\(name)" + (query.isEmpty ? "" : "?\(query)")
    }

    /// Writes `bytes` deterministic pseudo-random bytes to the served folder; returns their SHA-256.
    @discardableResult
    public func addFile(_ name: String, size: Int, seed: UInt64 = 1) throws -> Data {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        var bytes = [UInt8](repeating: 0, count: size)
        for i in 0..<size {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            bytes[i] = UInt8(truncatingIfNeeded: state)
        }
        let data = Data(bytes)
        try data.write(to: root.appendingPathComponent(name))
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
        process.terminate()
        try? FileManager.default.removeItem(at: root)
    }

    deinit { stop() }
}

enum OriginError: Error, CustomStringConvertible {
    case notStarted(String)
    var description: String {
        if case .notStarted(let output) = self { return "the test origin did not start: \(output)" }
        return ""
    }
}
