import Foundation

/// Resolves a job's destination inside a root folder, refusing anything that could escape it.
package enum Destination {
    /// `relative` must be a plain relative path: no `..`, no absolute path, no empty or hidden-control
    /// components; its parent folders are created, and checked after symlinks are resolved.
    package static func resolve(_ relative: String, under root: String) throws(DownloadError) -> String {
        guard !relative.isEmpty, relative.utf8.count <= 1024 else {
            throw .invalidDestination(relative, reason: "it must be 1-1024 bytes")
        }
        guard !relative.hasPrefix("/") else { throw .invalidDestination(relative, reason: "it must be relative to the models folder") }
        let parts = relative.split(separator: "/", omittingEmptySubsequences: false)
        for part in parts {
            if part.isEmpty || part == "." || part == ".." {
                throw .invalidDestination(relative, reason: "it may not contain empty, '.' or '..' components")
            }
            if part.contains(where: { $0.asciiValue.map { $0 < 32 || $0 == 127 } ?? false }) || part.contains("\\") {
                throw .invalidDestination(relative, reason: "it contains control characters or backslashes")
            }
            if part.utf8.count > Int(NAME_MAX) {
                throw .invalidDestination(relative, reason: "a name in it is longer than \(NAME_MAX) bytes")
            }
            if part.hasPrefix(".provision-") {
                throw .invalidDestination(relative, reason: "names starting with .provision- are reserved")
            }
            if part.hasSuffix(".partial") || part.hasSuffix(".partial.state") || part.hasSuffix(".partial.lock") {
                throw .invalidDestination(relative, reason: "names ending in .partial are reserved")
            }
        }
        let fm = FileManager.default
        do {
            try fm.createDirectory(atPath: root, withIntermediateDirectories: true)
        } catch {
            throw .io(path: root, operation: "create", reason: "\(error.localizedDescription)")
        }
        guard let realRoot = realPath(root) else { throw .io(path: root, operation: "resolve", reason: "it does not exist") }
        let target = (realRoot as NSString).appendingPathComponent(relative)
        let parent = (target as NSString).deletingLastPathComponent
        // Create the parent folders one by one, refusing a symlink that leads out of the root.
        var current = realRoot
        for part in parts.dropLast() {
            current = (current as NSString).appendingPathComponent(String(part))
            // Another download may create the same folder at the same moment: EEXIST is fine, and
            // what exists is checked below like any other folder on the path.
            if mkdir(current, 0o755) != 0 && errno != EEXIST {
                throw .io(path: current, operation: "create", reason: String(cString: strerror(errno)))
            }
            guard let resolved = realPath(current), resolved == realRoot || resolved.hasPrefix(realRoot + "/") else {
                throw .invalidDestination(relative, reason: "a folder on its path leads outside the models folder")
            }
        }
        guard let resolvedParent = realPath(parent), resolvedParent == realRoot || resolvedParent.hasPrefix(realRoot + "/") else {
            throw .invalidDestination(relative, reason: "it leads outside the models folder")
        }
        // The file itself may exist; it must not be a symlink (its target could be anywhere).
        var info = stat()
        if lstat(target, &info) == 0, (info.st_mode & S_IFMT) == S_IFLNK {
            throw .invalidDestination(relative, reason: "it is a symbolic link")
        }
        return target
    }

    static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}
