import Foundation

/// A custom node that ComfyUI could not import, read from its log.
package struct NodeImportFailure: Sendable, Equatable, Codable {
    /// The folder name under custom_nodes/ (the node as the plan names it).
    package var node: String
    /// The path ComfyUI printed.
    package var path: String
    /// The traceback's last line (`ValueError: boom`), else the error ComfyUI printed.
    package var error: String
}

/// What ComfyUI's own log lines say (ComfyUI 0.8: `Cannot import PATH module for custom nodes:
/// ERROR` after the traceback, and `0.0 seconds (IMPORT FAILED): PATH` under "Import times for
/// custom nodes:").
package enum ComfyUILog {
    /// Every import failure in `text`, one per node, in the order they appear.
    package static func importFailures(in text: String) -> [NodeImportFailure] {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map {
            String($0).trimmingCharacters(in: CharacterSet(charactersIn: "\r"))
        }
        var failures: [NodeImportFailure] = []
        var seen = Set<String>()
        func add(path: String, error: String) {
            let node = (path.hasSuffix("/") ? String(path.dropLast()) : path).split(separator: "/").last.map(String.init) ?? path
            let name = node.hasSuffix(".py") ? String(node.dropLast(3)) : node
            guard seen.insert(name).inserted else { return }
            failures.append(NodeImportFailure(node: name, path: path, error: error))
        }
        let cannot = "Cannot import "
        let marker = " module for custom nodes: "
        for (number, line) in lines.enumerated() {
            if let start = line.range(of: cannot), let middle = line.range(of: marker, range: start.upperBound..<line.endIndex) {
                let path = String(line[start.upperBound..<middle.lowerBound])
                var error = String(line[middle.upperBound...])
                // The traceback ends just above: its last non-blank line names the exception.
                if let last = lines[..<number].last(where: { !$0.trimmingCharacters(in: .whitespaces).isEmpty }),
                    !last.hasPrefix(" "), lines[..<number].contains(where: { $0.hasPrefix("Traceback (most recent call last)") })
                {
                    error = last
                }
                add(path: path, error: error)
            } else if let range = line.range(of: "(IMPORT FAILED): ") {
                add(path: String(line[range.upperBound...]).trimmingCharacters(in: .whitespaces), error: "import failed")
            }
        }
        return failures
    }

    /// Whether the server has said it listens (`To see the GUI go to: …`), so a probe is worth it.
    package static func saysListening(_ text: String) -> Bool {
        text.contains("To see the GUI go to:")
    }
}

/// An instance's output file, kept under a size cap by copying it to `NAME.1` (older ones shift to
/// `.2` … `.keep`) and truncating it in place: the child writes with O_APPEND, so it goes on at the
/// start of the emptied file without reopening anything.
package struct RotatingLog: Sendable {
    package let path: String
    package var maxBytes: Int64
    package var keep: Int

    package init(path: String, maxBytes: Int64 = 10 << 20, keep: Int = 3) {
        self.path = path
        self.maxBytes = max(4096, maxBytes)
        self.keep = max(1, keep)
    }

    package var size: Int64 {
        var info = stat()
        return stat(path, &info) == 0 ? Int64(info.st_size) : 0
    }

    /// Rotates when the file has passed its cap; returns whether it did.
    @discardableResult
    package func rotateIfNeeded() -> Bool {
        guard size > maxBytes else { return false }
        let manager = FileManager.default
        try? manager.removeItem(atPath: "\(path).\(keep)")
        if keep > 1 {
            for generation in stride(from: keep - 1, through: 1, by: -1) {
                try? manager.moveItem(atPath: "\(path).\(generation)", toPath: "\(path).\(generation + 1)")
            }
        }
        try? manager.copyItem(atPath: path, toPath: "\(path).1")
        truncate(path, 0)
        return true
    }

    /// The file's text from `offset` (bytes) to its end, at most `limit` bytes.
    package func read(from offset: Int64 = 0, limit: Int = 4 << 20) -> String {
        guard let handle = FileHandle(forReadingAtPath: path) else { return "" }
        defer { try? handle.close() }
        let start = max(0, min(offset, size))
        try? handle.seek(toOffset: UInt64(start))
        let data = (try? handle.read(upToCount: limit)) ?? nil
        return String(decoding: data ?? Data(), as: UTF8.self)
    }
}
