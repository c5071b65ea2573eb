import Foundation
import JobQueue
import Scheduler

/// The `download` job kind: fetches one model file into the models folder.
///
/// Payload (protocols/schemas/job-payloads/download.schema.json):
/// `{"url", "path"}` or `{"url", "directory", "filename"}`, optional `sha256`, `size`,
/// `connections`, `headers` (values may name worker environment variables as `${VAR}`, so that no
/// secret is stored in Redis).
public struct DownloadExecutor: JobExecutor {
    public let kind = "download"
    public var modelsRoot: String
    public var policy: URLPolicy
    public var defaultConnections: Int
    public var chunkSize: Int64?
    public var environment: [String: String]

    public init(modelsRoot: String, policy: URLPolicy = URLPolicy(), defaultConnections: Int = 8, environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.modelsRoot = modelsRoot
        self.policy = policy
        self.defaultConnections = defaultConnections
        self.environment = environment
    }

    struct Payload: Decodable {
        var url: String
        var path: String?
        var directory: String?
        var filename: String?
        var sha256: String?
        var size: Int64?
        var connections: Int?
        var headers: [String: String]?

        var relativePath: String? {
            if let path { return path }
            guard let directory, let filename else { return nil }
            return directory + "/" + filename
        }
    }

    public func validate(payload: String) throws(JobFailure) {
        let decoded = try decode(payload)
        do {
            _ = try policy.checkWithoutResolving(decoded.url)
        } catch {
            throw JobFailure(type: error.type, message: error.description, retryable: false)
        }
    }

    public func run(_ job: ClaimedJob, context: JobContext) async throws -> String {
        let payload = try decode(job.payload)
        guard let relative = payload.relativePath else { throw JobFailure.invalidPayload("a download needs path, or directory and filename") }
        let destination: String
        do {
            destination = try Destination.resolve(relative, under: modelsRoot)
        } catch {
            throw JobFailure(type: error.type, message: error.description, retryable: false)
        }
        var request = DownloadRequest(url: payload.url, destination: destination)
        request.expectedSHA256 = payload.sha256?.lowercased()
        request.expectedSize = payload.size
        request.connections = payload.connections ?? defaultConnections
        request.chunkSize = chunkSize
        request.policy = policy
        request.environment = environment
        request.headers = try expandHeaders(payload.headers ?? [:])
        let result: DownloadResult
        do throws(DownloadError) {
            result = try await Downloader().download(request) { progress in
                context.progress(JobProgress(bytesDone: progress.bytesDone, bytesTotal: progress.bytesTotal, bytesPerSecond: progress.bytesPerSecond))
            }
        } catch {
            throw JobFailure(type: error.type, message: error.description, retryable: error.isRetryable)
        }
        let summary: [String: Any] = [
                "path": relative, "bytes": result.bytes, "sha256": result.sha256, "skipped": result.skipped,
                "resumed_bytes": result.resumedBytes, "fetched_bytes": result.fetchedBytes,
                "seconds": (result.seconds * 1000).rounded() / 1000, "ranged": result.ranged, "restarts": result.restarts,
            ]
        let data = try JSONSerialization.data(withJSONObject: summary, options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }

    /// Header values with `${VAR}` expanded from the worker's environment.
    func expandHeaders(_ headers: [String: String]) throws(JobFailure) -> [(name: String, value: String)] {
        var result: [(name: String, value: String)] = []
        for (name, template) in headers.sorted(by: { $0.key < $1.key }) {
            let value = try EnvironmentTemplate.expand(template, environment: environment, field: "header \(name)")
            guard !value.contains("\r"), !value.contains("\n") else { throw .invalidPayload("header \(name) contains a line break") }
            result.append((name, value))
        }
        return result
    }

    private func decode(_ text: String) throws(JobFailure) -> Payload {
        let payload: Payload
        do {
            payload = try JSONDecoder().decode(Payload.self, from: Data(text.utf8))
        } catch {
            throw .invalidPayload("a download needs a payload {\"url\", \"path\"} (or directory and filename)")
        }
        if let sha = payload.sha256, sha.count != 64 || !sha.allSatisfy(\.isHexDigit) {
            throw .invalidPayload("sha256 must be 64 hexadecimal digits")
        }
        if let size = payload.size, size < 0 { throw .invalidPayload("size must not be negative") }
        if let connections = payload.connections, !(1...64).contains(connections) {
            throw .invalidPayload("connections must be between 1 and 64")
        }
        for name in (payload.headers ?? [:]).keys {
            guard !name.isEmpty, name.count <= 100, name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_".contains($0)) }) else {
                throw .invalidPayload("a header name must be letters, digits, '-' or '_'")
            }
        }
        if payload.relativePath == nil { throw .invalidPayload("a download needs path, or directory and filename") }
        return payload
    }
}
