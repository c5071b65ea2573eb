import Foundation
import JobCore

/// The `download` job kind: fetches one model file into the models folder.
///
/// Payload (protocols/schemas/job-payloads/download.schema.json):
/// `{"url", "path"}` or `{"url", "directory", "filename"}`, optional `sha256`, `size`,
/// `connections`, `headers` (values may name worker environment variables the operator exposed as
/// `${VAR}`, so that no secret is stored in Redis).
package struct DownloadExecutor: JobExecutor {
    package var modelsRoot: String
    package var policy: URLPolicy
    package var defaultConnections: Int
    package var chunkSize: Int64?
    /// The worker's environment: `HF_TOKEN` and `CIVITAI_TOKEN` are sent to their own hosts only.
    package var environment: [String: String]
    /// What `${VAR}` in a plan's headers may expand to: the names the operator exposed.
    package var templateValues: [String: String]

    package init(modelsRoot: String, policy: URLPolicy = URLPolicy(), defaultConnections: Int = 8, environmentPolicy: EnvironmentPolicy = EnvironmentPolicy()) {
        self.modelsRoot = modelsRoot
        self.policy = policy
        self.defaultConnections = defaultConnections
        self.environment = environmentPolicy.environment
        self.templateValues = environmentPolicy.templateValues
    }

    package func validate(_ payload: DownloadPayload) throws(JobFailure) {
        do {
            _ = try policy.checkWithoutResolving(payload.url)
        } catch {
            throw JobFailure(type: error.type, message: error.description, retryable: false)
        }
    }

    package func run(_ attempt: JobAttempt<DownloadPayload>, context: JobContext) async throws -> String {
        let payload = attempt.payload
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

    /// Header values with `${VAR}` expanded from the exposed part of the worker's environment.
    func expandHeaders(_ headers: [String: String]) throws(JobFailure) -> [(name: String, value: String)] {
        var result: [(name: String, value: String)] = []
        for (name, template) in headers.sorted(by: { $0.key < $1.key }) {
            let value = try EnvironmentTemplate.expand(template, environment: templateValues, field: "header \(name)")
            guard !value.contains("\r"), !value.contains("\n") else { throw .invalidPayload("header \(name) contains a line break") }
            result.append((name, value))
        }
        return result
    }
}
