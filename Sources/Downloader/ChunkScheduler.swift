import Foundation

/// How a file is cut into chunks: a function of its size, chunk size and taper alone, so a saved
/// resume state can be checked against it.
enum ChunkPlan {
    /// 8-64 MiB chunks, about eight per connection: the last chunks finish close together, so the
    /// hasher has little left to do after the last byte, and no connection idles long at the end.
    static func chunkSize(for size: Int64, connections: Int) -> Int64 {
        let target = size / Int64(max(1, connections) * 8)
        return min(64 << 20, max(8 << 20, target))
    }

    /// What the chunks near the end are cut to: 1/`taper` of what is left. A chunk started with
    /// 1/N of the rest on one of N connections ends just as the whole rest does, so every chunk
    /// started in the last stretch ended together at the very end, and the hasher, which can only
    /// follow the contiguous prefix, found all of them unhashed then: at N=16 (the old fixed 16) a
    /// 2 GiB download waited 0.15-0.2 s for its hash after the last byte. With 1/(3N) a late chunk
    /// ends while two thirds of the rest are still to come, so late chunks end one after another in
    /// file order and the hasher keeps up with them. Measured side by side (2 GiB, 40 MiB/s
    /// per connection, N=16): 3.44 s with 16, 3.29 s with 32, 3.25-3.28 s with 48 (ideal 3.2 s).
    static func taper(connections: Int) -> Int64 {
        Int64(min(192, max(16, 3 * connections)))
    }

    /// How many chunks at the start grow to the full size: one per connection where the first
    /// round of chunks is large (N × chunk ≥ 256 MiB), none otherwise. Connections that start
    /// together at one rate and take equal chunks finish them together, so the written prefix,
    /// which the hasher follows, moved only at one connection's rate until the first chunk ended,
    /// and then all at once: the hasher waited 0.1-0.2 s at the start of a 2 GiB download at N=8
    /// (32 MiB chunks) and ended 300-600 MiB behind. First chunks of 1/N, 2/N … N/N of the full
    /// size end one after another, and so do the chunks the connections take next. Over small
    /// rounds the wait is short and the extra requests cost more than it: five files of 32-192 MiB
    /// at once (8 MiB chunks, throttled) took 4 % longer with the ramp (bench/downloads/README.md).
    static func ramp(connections: Int, chunkSize: Int64) -> Int64 {
        let n = Int64(min(64, max(1, connections)))
        return chunkSize >= (256 << 20) / n ? n : 1
    }

    /// Where each chunk starts: `ramp` chunks growing from 1/`ramp` of `chunkSize` (2 MiB at
    /// least) to it, then `chunkSize` chunks, then, over the last part of the file, chunks of
    /// 1/`taper` of what is left (guided self-scheduling), down to 2 MiB. The last chunks are
    /// short, so connections run out of work within a few tens of milliseconds of each other
    /// instead of idling for up to one whole chunk while the last long one finishes.
    static func starts(size: Int64, chunkSize: Int64, taper: Int64, ramp: Int64 = 1) -> [Int64] {
        let chunkSize = max(1, chunkSize)
        let taper = max(1, taper)
        let ramp = max(1, ramp)
        let smallest = min(chunkSize, 2 << 20)
        var starts: [Int64] = []
        var offset: Int64 = 0
        while offset < size {
            starts.append(offset)
            let step = Int64(starts.count)
            let full = step < ramp ? max(smallest, chunkSize / ramp * step) : chunkSize
            offset += min(full, max(smallest, (size - offset) / taper))
        }
        return starts
    }

    static func length(of index: Int, starts: [Int64], size: Int64) -> Int64 {
        (index + 1 < starts.count ? starts[index + 1] : size) - starts[index]
    }
}

/// Backoff before a retry: base × 2^(attempt-1), capped, with jitter; `Retry-After` wins (capped at
/// four times the cap), so a server that asks for a pause gets it.
struct RetryPolicy: Sendable, Equatable {
    var maxAttempts: Int
    var baseSeconds: Double
    var maxSeconds: Double

    /// `jitter` in 0.5...1.0 spreads retries of many connections apart.
    func delay(attempt: Int, retryAfter: Double?, jitter: Double = Double.random(in: 0.5...1.0)) -> Double {
        if let retryAfter { return min(max(0, retryAfter), maxSeconds * 4) }
        let base = min(maxSeconds, baseSeconds * pow(2, Double(max(1, attempt) - 1)))
        return base * min(1, max(0.5, jitter))
    }
}

/// Which chunk a free connection fetches next, and what a failed request leads to. Pure
/// bookkeeping over chunk indexes and instants, no network and no files: the curl driver asks it,
/// and it is tested on its own.
struct ChunkScheduler {
    /// What to do with a chunk whose request failed.
    enum Verdict: Equatable {
        /// Fetch the rest of it again, not before `delay` seconds from now; `attempt` counts this failure.
        case retry(attempt: Int, delay: Double)
        /// Give up the download: not retryable, or out of attempts.
        case fail(attempt: Int)
    }

    /// A request that delivered this much made progress: its failure starts the count over, so a
    /// long chunk on a flaky link is not given up after a few resets.
    static let progressResetsAttempts: Int64 = 1 << 20

    let retry: RetryPolicy
    /// Chunks not complete and not being fetched, lowest first.
    private(set) var pending: [Int]
    /// Chunks being fetched.
    private(set) var busy: Set<Int> = []
    private var attempts: [Int: Int] = [:]
    private var notBefore: [Int: ContinuousClock.Instant] = [:]

    /// `written[i]` bytes of chunk i are on disk already (a resumed download); complete chunks are
    /// not fetched again.
    init(starts: [Int64], size: Int64, written: [Int64], retry: RetryPolicy) {
        self.retry = retry
        pending = written.indices.filter { written[$0] < ChunkPlan.length(of: $0, starts: starts, size: size) }
    }

    /// The byte range (inclusive) still missing from chunk `index`, given what is written of it.
    static func missingRange(of index: Int, starts: [Int64], size: Int64, written: Int64) -> (start: Int64, end: Int64) {
        (starts[index] + written, starts[index] + ChunkPlan.length(of: index, starts: starts, size: size) - 1)
    }

    var isFinished: Bool { pending.isEmpty && busy.isEmpty }

    /// How many connections the download needs at most.
    var connectionsWanted: Int { pending.count + busy.count }

    /// A pending chunk whose backoff has passed exists.
    func hasReady(at now: ContinuousClock.Instant) -> Bool {
        pending.contains { ready($0, at: now) }
    }

    /// Takes the lowest pending chunk whose backoff has passed, for a free connection.
    mutating func next(at now: ContinuousClock.Instant) -> Int? {
        guard let position = pending.firstIndex(where: { ready($0, at: now) }) else { return nil }
        let index = pending.remove(at: position)
        busy.insert(index)
        return index
    }

    /// The request for `index` ended with the chunk complete.
    mutating func completed(_ index: Int) {
        busy.remove(index)
        attempts[index] = nil
        notBefore[index] = nil
    }

    /// The request for `index` ended without a fault of the chunk's (its signed URL expired and was
    /// replaced): fetch the rest again at once, no attempt counted.
    mutating func requeue(_ index: Int) {
        busy.remove(index)
        insertPending(index)
    }

    /// The request for `index` failed after delivering `received` bytes.
    mutating func failed(_ index: Int, received: Int64, retryable: Bool, retryAfter: Double?, at now: ContinuousClock.Instant) -> Verdict {
        busy.remove(index)
        let attempt = received >= Self.progressResetsAttempts ? 1 : (attempts[index] ?? 0) + 1
        attempts[index] = attempt
        guard retryable, attempt < retry.maxAttempts else { return .fail(attempt: attempt) }
        let delay = retry.delay(attempt: attempt, retryAfter: retryAfter)
        notBefore[index] = now + .milliseconds(Int(delay * 1000))
        insertPending(index)
        return .retry(attempt: attempt, delay: delay)
    }

    /// The earliest instant a pending chunk becomes ready, if all wait for a backoff.
    func nextReadyInstant() -> ContinuousClock.Instant? {
        pending.compactMap { notBefore[$0] }.min()
    }

    private func ready(_ index: Int, at now: ContinuousClock.Instant) -> Bool {
        notBefore[index].map { $0 <= now } ?? true
    }

    private mutating func insertPending(_ index: Int) {
        let position = pending.firstIndex { $0 > index } ?? pending.endIndex
        pending.insert(index, at: position)
    }
}
