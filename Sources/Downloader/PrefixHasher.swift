import CFileSync
import Foundation

/// Hashes the written prefix of the partial file as it grows; a `WriteBackThread` beside it
/// writes the hashed bytes back and drops them from the page cache.
final class HasherThread: @unchecked Sendable {
    private let fd: Int32
    private let table: ChunkTable
    private var hasher: SHA256Hasher
    private var offset: Int64
    private var thread: JoinableThread?
    private var writeBack: WriteBackThread?
    /// The least the hasher wakes for, unless the file ends sooner. Once it has caught up with the
    /// connection at the front, that connection's every 64 KiB write would otherwise cost it a
    /// mapping of its own.
    static let smallestWindow: Int64 = 1 << 20

    init(fd: Int32, table: ChunkTable, hasher: SHA256Hasher, offset: Int64) {
        self.fd = fd
        self.table = table
        self.hasher = hasher
        self.offset = offset
    }

    func start() {
        writeBack = WriteBackThread(fd: fd, from: offset)
        thread = JoinableThread(stackSize: 1 << 20) { [self] in
            defer { table.hasherEnded() }
            let window = 8 << 20
            // A buffer for `pread`, used only where the file cannot be mapped.
            var buffer: UnsafeMutableRawBufferPointer?
            defer { buffer?.deallocate() }
            while offset < table.size, let mark = table.waitForPrefix(beyond: offset, minimum: Self.smallestWindow) {
                while offset < mark {
                    let want = Int(min(Int64(window), mark - offset))
                    let n = hashMapped(want) ?? hashRead(want, buffer: &buffer, size: window)
                    guard n > 0 else { return }
                    offset += Int64(n)
                    table.recordHash(offset: offset, state: hasher.savedState)
                    writeBack?.advance(to: offset)
                }
            }
        }
        // No thread, no hashing: the transfer must not wait for it (the download then fails
        // with the hasher's position once the bytes are in).
        if thread == nil { table.hasherEnded() }
    }

    /// Returns once the hashing thread has ended completely.
    func wait() {
        thread?.join()
        writeBack?.finish()
    }

    /// Hashes `count` bytes at `offset` straight from the page cache through a read-only mapping:
    /// a `pread` into a buffer would copy every byte once more. Nil when the file cannot be mapped.
    /// Only bytes below the written prefix are read, and provision never shortens a partial file in
    /// place (a new download of the same destination unlinks it and creates another), so the
    /// mapping stays inside the file.
    private func hashMapped(_ count: Int) -> Int? {
        let page = Int64(sysconf(Int32(_SC_PAGESIZE)))
        let base = offset / page * page
        let span = Int(offset - base) + count
        // MAP_POPULATE maps the whole window in one call: 8 MiB read through page faults costs one
        // fault per 64 KiB (the kernel's fault-around), 32 k faults per 2 GiB.
        guard let map = mmap(nil, span, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, off_t(base)), map != MAP_FAILED else { return nil }
        defer { munmap(map, span) }
        hasher.update(UnsafeRawBufferPointer(start: map + Int(offset - base), count: count))
        return count
    }

    /// Hashes up to `count` bytes at `offset` read with `pread`; 0 or less on a read error.
    private func hashRead(_ count: Int, buffer: inout UnsafeMutableRawBufferPointer?, size: Int) -> Int {
        let target = buffer ?? UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 4096)
        buffer = target
        var n: Int
        repeat { n = pread(fd, target.baseAddress, count, off_t(offset)) } while n < 0 && errno == EINTR
        if n > 0 { hasher.update(UnsafeRawBufferPointer(rebasing: target[0..<n])) }
        return n
    }
}

/// Writes hashed bytes of the partial file back to disk as the hasher goes, and drops them from
/// the page cache once they are on disk. It runs beside the hasher rather than in it: on a machine
/// short of CPU the hasher is the download's critical path, and starting write-back and dropping
/// pages there cost it an eighth of its time (after the last byte it hashed 1,374 MiB/s with them,
/// 1,585 without; bench/downloads/README.md).
final class WriteBackThread: @unchecked Sendable {
    private let fd: Int32
    private let condition = NSCondition()
    /// How far the hasher got; guarded by `condition`.
    private var hashed: Int64
    private var finished = false
    private var thread: JoinableThread?
    /// Write-back is started in ranges of this size.
    static let range: Int64 = 32 << 20

    init(fd: Int32, from offset: Int64) {
        self.fd = fd
        self.hashed = offset
        thread = JoinableThread(stackSize: 256 << 10) { [self] in run(from: offset) }
    }

    /// The hasher has hashed everything below `offset`.
    func advance(to offset: Int64) {
        condition.lock()
        hashed = offset
        condition.signal()
        condition.unlock()
    }

    /// Stops after the range in hand and returns once the thread has ended. What is left unwritten
    /// is written by the fsync before the rename.
    func finish() {
        condition.lock()
        finished = true
        condition.signal()
        condition.unlock()
        thread?.join()
    }

    private func run(from start: Int64) {
        var writtenBack = start
        // Ends of the ranges whose write-back was started, oldest first.
        var writing: [Int64] = []
        var released = start
        while true {
            condition.lock()
            while !finished && hashed - writtenBack < Self.range { condition.wait() }
            let target = hashed
            let done = finished
            condition.unlock()
            if done { return }
            // Hashed bytes are final: start writing them back now, so the fsync before the rename
            // does not flush gigabytes at once.
            _ = provision_start_writeback(fd, off_t(writtenBack), off_t(target - writtenBack))
            writtenBack = target
            writing.append(target)
            // Once on disk (two ranges later, so this rarely waits) they leave the page cache.
            // Their pages go back to the kernel, which hands them out again for the next writes: a
            // download of any size cycles through a few hundred MiB instead of pushing everything
            // else out of the cache. On a VM whose host takes back free memory (free page
            // reporting), every never-reused page costs a fault in the host: 2 GiB into such pages
            // took 4.8-6.2 s here, into just-freed ones 0.5 s.
            if writing.count > 2 {
                let end = writing.removeFirst()
                _ = provision_release_written(fd, off_t(released), off_t(end - released))
                released = end
            }
        }
    }
}
