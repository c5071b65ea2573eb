import Foundation

/// The two ways ComfyUI saves a workflow.
package enum WorkflowFormat: String, Sendable, Codable {
    /// The editor's format: `nodes`, `links`, `definitions.subgraphs`, widget values by position.
    case ui
    /// The format `/prompt` executes: `{id: {class_type, inputs}}`.
    case api
}

/// Reads a file the user named, refusing what is too big, missing or not a regular file.
package func readInput(path: String, what: String, limit: Int) throws(SpecError) -> Data {
    try checkInput(path: path, what: what, limit: limit)
    guard let handle = FileHandle(forReadingAtPath: path) else { throw .unreadable(file: path, what: what, reason: nil) }
    defer { try? handle.close() }
    let data: Data
    do {
        data = try handle.read(upToCount: limit + 1) ?? Data()
    } catch {
        throw .unreadable(file: path, what: what, reason: error.localizedDescription)
    }
    guard data.count <= limit else { throw .tooLarge(file: path, what: what, size: nil, limit: limit) }
    return data
}

/// Refuses, in one sentence, a path that is missing, not a regular file or larger than `limit`.
package func checkInput(path: String, what: String, limit: Int) throws(SpecError) {
    var info = stat()
    guard stat(path, &info) == 0 else {
        throw .unreadable(file: path, what: what, reason: String(cString: strerror(errno)))
    }
    guard (info.st_mode & S_IFMT) == S_IFREG else { throw .notRegularFile(file: path, what: what) }
    guard Int(info.st_size) <= limit else {
        throw .tooLarge(file: path, what: what, size: Int(info.st_size), limit: limit)
    }
}

/// Windows separators become `/`; leading and trailing slashes go.
package func normalizedPath(_ text: String) -> String {
    var path = text.replacingOccurrences(of: "\\", with: "/")
    while path.hasPrefix("/") { path.removeFirst() }
    while path.hasSuffix("/") { path.removeLast() }
    return path
}
