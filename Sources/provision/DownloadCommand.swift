import ArgumentParser
import Downloader
import Foundation

struct DownloadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "download",
        abstract: "Download one file with parallel Range requests, resumable, verified, placed atomically.")

    @Argument(help: "http(s) URL. HF_TOKEN / CIVITAI_TOKEN are sent to huggingface.co / civitai.com only.")
    var url: String

    @Option(name: [.short, .long], help: "Where the file goes (NAME.partial, its .state and its .lock sit beside it until done).")
    var output: String

    @Option(help: "Parallel connections.")
    var connections = 8

    @Option(help: "Expected SHA-256 (hex): verified before the file is placed; an existing file with it is kept.")
    var sha256: String?

    @Option(help: "Expected size in bytes.")
    var size: Int64?

    @Option(name: .customLong("header"), help: "An extra request header 'Name: value' (repeatable; sent to the URL's host only).")
    var headers: [String] = []

    @Option(help: "Chunk size in bytes (default: 16-64 MiB from the file size).")
    var chunkSize: Int64?

    @Option(help: "Seconds without data before a request is retried.")
    var stallTimeout = 30

    @Flag(help: "Allow loopback and private addresses (tests, local mirrors).")
    var allowLoopback = false

    @Option(name: .customLong("allow-origin"), help: "Allow connections to this one local ADDRESS:PORT, e.g. 127.0.0.1:8080 or [::1]:8080 (repeatable; redirects elsewhere are still checked).")
    var allowedOrigins: [String] = []

    @Option(name: .customLong("ca-file"), help: "A PEM file of CA certificates to trust instead of the system's (a private mirror). Certificates are still verified.")
    var caFile: String?

    @Flag(help: "Print one JSON object with the result instead of text.")
    var json = false

    func validate() throws {
        guard (1...64).contains(connections) else { throw ValidationError("--connections must be between 1 and 64.") }
        if let sha256, sha256.count != 64 || !sha256.allSatisfy(\.isHexDigit) {
            throw ValidationError("--sha256 must be 64 hexadecimal digits.")
        }
        if let chunkSize, chunkSize < 1 { throw ValidationError("--chunk-size must be positive.") }
        _ = try parseAllowedOrigins(allowedOrigins)
    }

    func run() async throws {
        try await reportingErrors {
            var request = DownloadRequest(url: url, destination: absolute(output))
            request.connections = connections
            request.expectedSHA256 = sha256?.lowercased()
            request.expectedSize = size
            request.chunkSize = chunkSize
            request.stallSeconds = stallTimeout
            if let caFile {
                guard FileManager.default.isReadableFile(atPath: caFile) else { throw ValidationError("--ca-file \(caFile) is not a readable file.") }
                request.caFile = absolute(caFile)
            }
            request.policy = URLPolicy(
                allowLoopback: allowLoopback || ProcessInfo.processInfo.environment["PROVISION_ALLOW_LOOPBACK"] == "1",
                allowedOrigins: try parseAllowedOrigins(allowedOrigins))
            request.headers = try headers.map { line in
                guard let colon = line.firstIndex(of: ":"), colon != line.startIndex else {
                    throw ValidationError("--header must look like 'Name: value'.")
                }
                return (String(line[..<colon]).trimmingCharacters(in: .whitespaces), String(line[line.index(after: colon)...]).trimmingCharacters(in: .whitespaces))
            }
            _ = try request.policy.check(url)
            let directory = (request.destination as NSString).deletingLastPathComponent
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)

            let bar = ProgressLine(name: (output as NSString).lastPathComponent, interactive: isatty(STDERR_FILENO) == 1 && !json)
            let result = try await Downloader().download(request) { progress in bar.update(progress) }
            bar.finish()
            if json {
                let fields: [String: Any] = [
                    "path": result.path, "bytes": result.bytes, "sha256": result.sha256, "skipped": result.skipped,
                    "resumed_bytes": result.resumedBytes, "fetched_bytes": result.fetchedBytes, "seconds": result.seconds,
                    "ranged": result.ranged, "restarts": result.restarts,
                ]
                let data = try JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys])
                say(String(decoding: data, as: UTF8.self))
            } else if result.skipped {
                say("\(output): already present with SHA-256 \(result.sha256)")
            } else {
                let rate = Double(result.fetchedBytes) / max(result.seconds, 0.001)
                var line = "\(output): \(formatBytes(result.bytes)) in \(String(format: "%.2f", result.seconds)) s (\(formatBytes(Int64(rate)))/s), SHA-256 \(result.sha256)"
                if result.resumedBytes > 0 { line += ", resumed \(formatBytes(result.resumedBytes))" }
                if result.restarts > 0 { line += ", started over \(result.restarts)× because the file changed on the server" }
                if !result.ranged { line += ", one stream (the server does not support Range)" }
                say(line)
            }
        }
    }

    private func absolute(_ path: String) -> String {
        path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
    }
}

/// A progress bar on a terminal (redrawn in place), plain lines every few seconds otherwise.
final class ProgressLine: @unchecked Sendable {
    private let name: String
    private let interactive: Bool
    private let lock = NSLock()
    private var lastPlain = Date.distantPast
    private var drawn = false

    init(name: String, interactive: Bool) {
        self.name = name
        self.interactive = interactive
    }

    func update(_ progress: DownloadProgress) {
        lock.lock()
        defer { lock.unlock() }
        if progress.waitingForAnotherDownload {
            // Said once, as a line of its own, on a terminal too: the wait can be long.
            FileHandle.standardError.write(Data("\(name): waiting for another download of this file to finish\n".utf8))
            return
        }
        let total = progress.bytesTotal
        let fraction = total.map { $0 > 0 ? Double(progress.bytesDone) / Double($0) : 1 } ?? 0
        let eta = total.map { progress.bytesPerSecond > 0 ? Double($0 - progress.bytesDone) / progress.bytesPerSecond : 0 }
        let text = "\(formatBytes(progress.bytesDone))" + (total.map { " / \(formatBytes($0))" } ?? "")
            + "  \(formatBytes(Int64(progress.bytesPerSecond)))/s" + (eta.map { "  ETA \(formatSeconds($0))" } ?? "")
            + "  \(progress.activeConnections) conn"
        if interactive {
            let width = 30
            let filled = Int(fraction * Double(width))
            let bar = String(repeating: "█", count: filled) + String(repeating: "░", count: max(0, width - filled))
            FileHandle.standardError.write(Data("\r\u{1B}[2K\(name) \(bar) \(String(format: "%3.0f%%", fraction * 100)) \(text)".utf8))
            drawn = true
        } else if Date().timeIntervalSince(lastPlain) >= 5 {
            lastPlain = Date()
            FileHandle.standardError.write(Data("\(name): \(String(format: "%.0f%%", fraction * 100)) \(text)\n".utf8))
        }
    }

    func finish() {
        lock.lock()
        defer { lock.unlock() }
        if drawn { FileHandle.standardError.write(Data("\r\u{1B}[2K".utf8)) }
    }
}

func formatBytes(_ bytes: Int64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1024 && unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    return unit == 0 ? "\(bytes) B" : String(format: "%.1f %@", value, units[unit])
}

func formatSeconds(_ seconds: Double) -> String {
    let s = Int(seconds.rounded())
    return s >= 3600 ? "\(s / 3600)h\(String(format: "%02d", s % 3600 / 60))m" : s >= 60 ? "\(s / 60)m\(String(format: "%02d", s % 60))s" : "\(s)s"
}

/// `--allow-origin ADDRESS:PORT` values, or a usage error naming the one that is not.
func parseAllowedOrigins(_ values: [String]) throws -> Set<URLPolicy.AllowedOrigin> {
    var origins: Set<URLPolicy.AllowedOrigin> = []
    for value in values {
        guard let origin = URLPolicy.AllowedOrigin(value) else {
            throw ValidationError("--allow-origin takes a numeric ADDRESS:PORT such as 127.0.0.1:8080 or [::1]:8080, not '\(value)'.")
        }
        origins.insert(origin)
    }
    return origins
}
