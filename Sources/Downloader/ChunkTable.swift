import Foundation

/// The chunks of one file and how much of each is written, shared by the transfer loop (which
/// writes) and the hasher (which follows the written prefix). All access holds `condition`.
final class ChunkTable: @unchecked Sendable {
    let size: Int64
    let chunkSize: Int64
    /// Where each chunk starts (`ChunkTable.starts`).
    let starts: [Int64]
    private(set) var written: [Int64]
    private let condition = NSCondition()
    /// The hasher's position and state, saved with the chunk progress for resume.
    private var hashedOffset: Int64 = 0
    private var hashState = Data()
    private var stopped = false
    /// The first chunk not yet complete: only writes there (or a chunk completing) can move the
    /// hashable prefix, so only they wake the hasher.
    private var firstOpen = 0

    init(size: Int64, chunkSize: Int64, written: [Int64]? = nil) {
        self.size = size
        self.chunkSize = max(1, chunkSize)
        self.starts = Self.starts(size: size, chunkSize: self.chunkSize)
        self.written = (written?.count == starts.count ? written : nil) ?? Array(repeating: 0, count: starts.count)
    }

    var count: Int { written.count }

    func start(of index: Int) -> Int64 { starts[index] }
    func length(of index: Int) -> Int64 { Self.length(of: index, starts: starts, size: size) }

    static func length(of index: Int, starts: [Int64], size: Int64) -> Int64 {
        (index + 1 < starts.count ? starts[index + 1] : size) - starts[index]
    }

    /// The chunk plan of a file, a function of its size and chunk size alone (so a saved state can
    /// be checked against it): `chunkSize` chunks, then, over the last part of the file, chunks of
    /// a sixteenth of what is left (guided self-scheduling), down to 2 MiB. The last chunks are
    /// short, so connections run out of work within a few tens of milliseconds of each other
    /// instead of idling for up to one whole chunk while the last long one finishes.
    static func starts(size: Int64, chunkSize: Int64) -> [Int64] {
        let chunkSize = max(1, chunkSize)
        let smallest = min(chunkSize, 2 << 20)
        var starts: [Int64] = []
        var offset: Int64 = 0
        while offset < size {
            starts.append(offset)
            offset += min(chunkSize, max(smallest, (size - offset) / 16))
        }
        return starts
    }

    func add(_ bytes: Int64, to index: Int) {
        condition.lock()
        written[index] += bytes
        let completed = written[index] >= length(of: index)
        while firstOpen < written.count && written[firstOpen] >= length(of: firstOpen) { firstOpen += 1 }
        if index <= firstOpen || completed { condition.signal() }
        condition.unlock()
    }

    func snapshot() -> (written: [Int64], hashedOffset: Int64, hashState: Data) {
        condition.lock()
        defer { condition.unlock() }
        return (written, hashedOffset, hashState)
    }

    var bytesDone: Int64 {
        condition.lock()
        defer { condition.unlock() }
        return written.reduce(0, +)
    }

    func isComplete(_ index: Int) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        return written[index] >= length(of: index)
    }

    /// The end of the contiguous written prefix.
    private func watermarkLocked() -> Int64 {
        var offset: Int64 = 0
        for index in written.indices {
            let length = length(of: index)
            offset += written[index]
            if written[index] < length { break }
        }
        return offset
    }

    /// Waits until the written prefix passes `offset` (or a stop); returns the new prefix end.
    func waitForPrefix(beyond offset: Int64) -> Int64? {
        condition.lock()
        defer { condition.unlock() }
        while true {
            let mark = watermarkLocked()
            if mark > offset { return mark }
            if stopped { return nil }
            _ = condition.wait(until: Date(timeIntervalSinceNow: 0.1))
        }
    }

    func recordHash(offset: Int64, state: Data) {
        condition.lock()
        hashedOffset = offset
        hashState = state
        condition.broadcast()
        condition.unlock()
    }

    /// Waits until the hasher has covered the whole file (or stopped).
    func waitForHash() -> Int64 {
        condition.lock()
        defer { condition.unlock() }
        while hashedOffset < size && !stopped { _ = condition.wait(until: Date(timeIntervalSinceNow: 0.1)) }
        return hashedOffset
    }

    func stop() {
        condition.lock()
        stopped = true
        condition.broadcast()
        condition.unlock()
    }
}
