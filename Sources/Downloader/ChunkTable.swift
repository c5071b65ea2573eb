import Foundation

/// The chunks of one file and how much of each is written, shared by the transfer loop (which
/// writes) and the hasher (which follows the written prefix). All access holds `condition`, which
/// is signalled only when the hashable prefix can have moved or the download stops: the hasher
/// sleeps until there is something to hash, without polling.
final class ChunkTable: @unchecked Sendable {
    let size: Int64
    let chunkSize: Int64
    let taper: Int64
    let ramp: Int64
    /// Where each chunk starts (`ChunkPlan.starts`).
    let starts: [Int64]
    private(set) var written: [Int64]
    private let condition = NSCondition()
    /// The hasher's position and state, saved with the chunk progress for resume.
    private var hashedOffset: Int64 = 0
    private var hashState = Data()
    private var stopped = false
    private var hasherRunning = true
    /// The first chunk not yet complete: only writes there (or a chunk completing) can move the
    /// hashable prefix, so only they wake the hasher.
    private var firstOpen = 0

    init(size: Int64, chunkSize: Int64, taper: Int64, ramp: Int64 = 1, written: [Int64]? = nil) {
        self.size = size
        self.chunkSize = max(1, chunkSize)
        self.taper = max(1, taper)
        self.ramp = max(1, ramp)
        self.starts = ChunkPlan.starts(size: size, chunkSize: self.chunkSize, taper: self.taper, ramp: self.ramp)
        self.written = (written?.count == starts.count ? written : nil) ?? Array(repeating: 0, count: starts.count)
        while firstOpen < self.written.count && self.written[firstOpen] >= length(of: firstOpen) { firstOpen += 1 }
    }

    var count: Int { written.count }

    func start(of index: Int) -> Int64 { starts[index] }
    func length(of index: Int) -> Int64 { ChunkPlan.length(of: index, starts: starts, size: size) }

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

    /// The end of the contiguous written prefix: every chunk before `firstOpen` is complete.
    private func watermarkLocked() -> Int64 {
        firstOpen < written.count ? starts[firstOpen] + written[firstOpen] : size
    }

    /// Waits until the written prefix reaches `minimum` bytes past `offset` (or the end of the
    /// file); returns the new prefix end. After a stop it returns what is there, nil once that is
    /// nothing.
    func waitForPrefix(beyond offset: Int64, minimum: Int64 = 1) -> Int64? {
        condition.lock()
        defer { condition.unlock() }
        let wanted = min(size, offset + max(1, minimum))
        while true {
            let mark = watermarkLocked()
            if mark >= wanted || (stopped && mark > offset) { return mark }
            if stopped { return nil }
            condition.wait()
        }
    }

    /// Bytes the hasher could hash but has not yet; 0 once it has ended.
    var hashLag: Int64 {
        condition.lock()
        defer { condition.unlock() }
        return hasherRunning ? watermarkLocked() - hashedOffset : 0
    }

    /// The hasher has ended: it hashed the last byte, failed to read one, or was stopped.
    func hasherEnded() {
        condition.lock()
        hasherRunning = false
        condition.unlock()
    }

    /// The hasher's position and state, for the resume file; nobody waits on it.
    func recordHash(offset: Int64, state: Data) {
        condition.lock()
        hashedOffset = offset
        hashState = state
        condition.unlock()
    }

    /// Wakes the hasher for good: the transfer failed or was cancelled.
    func stop() {
        condition.lock()
        stopped = true
        condition.broadcast()
        condition.unlock()
    }
}
