import Foundation

/// The side files of one download, beside its destination: `NAME.partial` (preallocated, written
/// in place by the chunks), its resume state `NAME.partial.state`, and the claim
/// `NAME.partial.lock`. The partial file becomes the destination in one rename, after it is
/// verified and on disk.
struct PartialFile {
    let destination: String
    /// What the side files are named after: the destination, or, when `NAME.partial.state` would be
    /// longer than a file name may be (NAME_MAX, 255 bytes), `.provision-HASH` beside it, the hash
    /// taken from the name so that every process finds the same side files for one destination.
    let sideBase: String

    var path: String { sideBase + ".partial" }
    var statePath: String { sideBase + ".partial.state" }
    var lockPath: String { sideBase + ".partial.lock" }

    /// The longest suffix a side file adds to the destination's name.
    static let longestSideSuffix = ".partial.state"

    init(destination: String) {
        self.destination = destination
        self.sideBase = Self.sideBase(for: destination)
    }

    static func sideBase(for destination: String) -> String {
        let name = (destination as NSString).lastPathComponent
        guard name.utf8.count + longestSideSuffix.utf8.count > Int(NAME_MAX) else { return destination }
        var hasher = SHA256Hasher()
        hasher.update(Data(name.utf8))
        let directory = (destination as NSString).deletingLastPathComponent
        return (directory as NSString).appendingPathComponent(".provision-" + hasher.finalize().prefix(40))
    }

    /// A new partial file of `size` bytes, its space reserved now so that a full disk fails here and
    /// not at 90 %.
    func create(size: Int64) throws(DownloadError) {
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw ioError(path, "create") }
        defer { close(fd) }
        if size > 0 {
            let status = posix_fallocate(fd, 0, off_t(size))
            if status != 0 {
                if status == ENOSPC { throw .insufficientSpace(path: destination, needed: size, available: freeSpace()) }
                guard ftruncate(fd, off_t(size)) == 0 else { throw ioError(path, "size") }
            }
        }
    }

    /// Opens the partial file for writing in place.
    func openForWriting() throws(DownloadError) -> Int32 {
        let fd = open(path, O_RDWR)
        guard fd >= 0 else { throw ioError(path, "open") }
        return fd
    }

    /// A fresh, empty partial file for one stream written from its start.
    func truncated() throws(DownloadError) -> Int32 {
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw ioError(path, "create") }
        return fd
    }

    func checkFreeSpace(needed: Int64) throws(DownloadError) {
        let available = freeSpace()
        if available >= 0 && available < needed {
            throw .insufficientSpace(path: destination, needed: needed, available: available)
        }
    }

    func freeSpace() -> Int64 {
        var info = statvfs()
        let directory = (destination as NSString).deletingLastPathComponent
        guard statvfs(directory.isEmpty ? "." : directory, &info) == 0 else { return -1 }
        return Int64(info.f_bavail) * Int64(info.f_frsize)
    }

    /// The partial file's size on disk, -1 when there is none.
    var size: Int64 { Self.fileSize(path) }

    static func fileSize(_ path: String) -> Int64 {
        var info = stat()
        return stat(path, &info) == 0 ? Int64(info.st_size) : -1
    }

    func discard() {
        unlink(path)
        unlink(statePath)
    }

    func loadState() -> ResumeState? { ResumeState.load(statePath) }

    /// Saves which bytes of each chunk are written and how far the hasher got.
    func saveState(url: String, validator: String?, table: ChunkTable) {
        let snapshot = table.snapshot()
        let state = ResumeState(
            url: URLPolicy.redact(url), size: table.size, validator: validator, chunkSize: table.chunkSize, taper: table.taper, ramp: table.ramp,
            written: snapshot.written, hashedOffset: snapshot.hashedOffset, hashState: snapshot.hashState.base64EncodedString())
        state.save(statePath)
    }

    /// The partial file (open as `fd`, verified by the caller) becomes the destination: flushed to
    /// disk, renamed in one step, the state file removed, the directory entry flushed.
    func commit(fd: Int32) throws(DownloadError) {
        guard fsync(fd) == 0 else { throw ioError(path, "flush") }
        guard rename(path, destination) == 0 else { throw ioError(destination, "rename the partial file to") }
        unlink(statePath)
        let directory = (destination as NSString).deletingLastPathComponent
        let dirfd = open(directory.isEmpty ? "." : directory, O_RDONLY)
        if dirfd >= 0 {
            fsync(dirfd)
            close(dirfd)
        }
    }

    /// The size of the open partial file, for the check before it is placed.
    func size(of fd: Int32) throws(DownloadError) -> Int64 {
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw ioError(path, "inspect") }
        return Int64(info.st_size)
    }

    private func ioError(_ path: String, _ operation: String) -> DownloadError {
        .io(path: path, operation: operation, errno: errno)
    }
}
