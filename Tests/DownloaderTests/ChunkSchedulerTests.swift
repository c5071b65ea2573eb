@testable import Downloader
import TestSupport
import Foundation
import Testing

/// The chunk scheduler alone: which chunk a free connection gets, what a failure leads to, and what
/// a resumed download still fetches. No network, no files.
@Suite("Chunk scheduling without a network")
struct ChunkSchedulerTests {
    static let mib: Int64 = 1 << 20
    let retry = RetryPolicy(maxAttempts: 3, baseSeconds: 0.5, maxSeconds: 30)
    let clock = ContinuousClock()

    @Test func thePlanCoversTheFileOnceAndTapersToTwoMiB() {
        for size: Int64 in [0, 1, 2 * Self.mib - 1, 100 * Self.mib + 7, 2048 * Self.mib] {
            let chunk = ChunkPlan.chunkSize(for: size, connections: 8)
            let starts = ChunkPlan.starts(size: size, chunkSize: chunk, taper: ChunkPlan.taper(connections: 8))
            let lengths = starts.indices.map { ChunkPlan.length(of: $0, starts: starts, size: size) }
            #expect(lengths.reduce(0, +) == size)
            #expect(lengths.allSatisfy { $0 > 0 && $0 <= chunk })
            #expect(zip(lengths, lengths.dropFirst()).allSatisfy { $0 >= $1 || $1 == lengths.last }, "without a ramp chunks never grow, size \(size)")
            if size >= 64 * Self.mib { #expect(lengths.dropLast().last == 2 * Self.mib || lengths.count < 2) }
        }
        #expect(ChunkPlan.chunkSize(for: 2048 * Self.mib, connections: 8) == 32 * Self.mib)
        #expect(ChunkPlan.chunkSize(for: 2048 * Self.mib, connections: 16) == 16 * Self.mib)
        #expect(ChunkPlan.chunkSize(for: 10 * Self.mib, connections: 8) == 8 * Self.mib)
        #expect(ChunkPlan.chunkSize(for: 1 << 40, connections: 1) == 64 * Self.mib)
    }

    @Test func theTaperFollowsTheConnectionsAndOldStatesReadAsSixteen() throws {
        #expect(ChunkPlan.taper(connections: 1) == 16)
        #expect(ChunkPlan.taper(connections: 8) == 24)
        #expect(ChunkPlan.taper(connections: 16) == 48)
        #expect(ChunkPlan.taper(connections: 64) == 192)
        let size = 2048 * Self.mib
        let n16 = ChunkPlan.starts(size: size, chunkSize: 16 * Self.mib, taper: 48)
        let old = ChunkPlan.starts(size: size, chunkSize: 16 * Self.mib, taper: 16)
        #expect(n16.count > old.count, "a finer taper cuts more, smaller chunks near the end")
        // A state saved before the taper was stored: its chunks were cut with 16.
        let json = #"{"version":3,"url":"https://h/f","size":100,"validator":"\"e\"","chunk_size":10,"written":[],"hashed_offset":0,"hash_state":""}"#
        let state = try JSONDecoder().decode(ResumeState.self, from: Data(json.utf8))
        #expect(state.taper == nil && state.chunkTaper == 16)
    }

    @Test func largeFirstRoundsRampUpOnePerConnectionAndVersionThreeStatesHaveNoRamp() throws {
        #expect(ChunkPlan.ramp(connections: 1, chunkSize: 64 * Self.mib) == 1)
        #expect(ChunkPlan.ramp(connections: 8, chunkSize: 32 * Self.mib) == 8)
        #expect(ChunkPlan.ramp(connections: 16, chunkSize: 16 * Self.mib) == 16)
        #expect(ChunkPlan.ramp(connections: 500, chunkSize: 64 * Self.mib) == 64)
        // A first round under 256 MiB is not ramped: 8 MiB chunks on 8 connections.
        #expect(ChunkPlan.ramp(connections: 8, chunkSize: 8 * Self.mib) == 1)
        #expect(ChunkPlan.ramp(connections: 8, chunkSize: Int64.max) == 8)
        let size = 2048 * Self.mib
        let starts = ChunkPlan.starts(size: size, chunkSize: 32 * Self.mib, taper: 24, ramp: 8)
        let lengths = starts.indices.map { ChunkPlan.length(of: $0, starts: starts, size: size) }
        #expect(Array(lengths.prefix(9)) == [4, 8, 12, 16, 20, 24, 28, 32, 32].map { $0 * Self.mib })
        #expect(lengths.reduce(0, +) == size)
        // At N=16 the first steps (1 and 2 MiB of 16) are raised to the 2 MiB floor.
        let n16 = ChunkPlan.starts(size: size, chunkSize: 16 * Self.mib, taper: 48, ramp: 16)
        #expect(Array(n16.indices.prefix(4).map { ChunkPlan.length(of: $0, starts: n16, size: size) }) == [2, 2, 3, 4].map { $0 * Self.mib })
        // A ramp of 1 is the layout of the states saved before there was a ramp.
        #expect(ChunkPlan.starts(size: size, chunkSize: 32 * Self.mib, taper: 24, ramp: 1) == ChunkPlan.starts(size: size, chunkSize: 32 * Self.mib, taper: 24))

        // A version 3 state (no ramp) is still read, and its chunks are cut without one.
        let v3 = ChunkPlan.starts(size: 100 * Self.mib, chunkSize: 10 * Self.mib, taper: 24)
        let written = v3.map { _ in Int64(0) }
        let json = #"{"version":3,"url":"https://h/f","size":\#(100 * Self.mib),"validator":"\"e\"","chunk_size":\#(10 * Self.mib),"taper":24,"written":\#(written),"hashed_offset":0,"hash_state":""}"#
        let folder = try makeTemporaryDirectory("ramp-state")
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("f.partial.state").path
        try Data(json.utf8).write(to: URL(fileURLWithPath: path))
        let state = try #require(ResumeState.load(path))
        #expect(state.ramp == nil && state.chunkRamp == 1)
        let remote = RemoteFile(url: "https://h/f", credentialOrigin: "https://h", size: 100 * Self.mib, acceptsRanges: true, etag: "\"e\"", lastModified: nil)
        #expect(state.matches(remote, size: 100 * Self.mib))
        // The same written counts under a ramp of 8 no longer fit: the chunk count differs.
        var ramped = state
        ramped.ramp = 8
        #expect(!ramped.matches(remote, size: 100 * Self.mib))
        // Versions before 3 are not read.
        try Data(json.replacingOccurrences(of: #""version":3"#, with: #""version":2"#).utf8).write(to: URL(fileURLWithPath: path))
        #expect(ResumeState.load(path) == nil)
    }

    @Test func aRampedStateIsSavedAndReadBackWithItsRamp() throws {
        let folder = try makeTemporaryDirectory("ramped-state")
        defer { try? FileManager.default.removeItem(at: folder) }
        let partial = PartialFile(destination: folder.appendingPathComponent("m.bin").path)
        let size = 2048 * Self.mib
        let table = ChunkTable(size: size, chunkSize: 32 * Self.mib, taper: 24, ramp: 8)
        table.add(3 * Self.mib, to: 0)
        table.add(4 * Self.mib, to: 1)
        partial.saveState(url: "https://h/f", validator: "\"e\"", table: table)
        let state = try #require(partial.loadState())
        #expect(state.version == 4 && state.ramp == 8 && state.chunkTaper == 24)
        let remote = RemoteFile(url: "https://h/f", credentialOrigin: "https://h", size: size, acceptsRanges: true, etag: "\"e\"", lastModified: nil)
        #expect(state.matches(remote, size: size))
        // Resumed at any number of connections, the table is cut as it was saved.
        let resumed = ChunkTable(size: size, chunkSize: state.chunkSize, taper: state.chunkTaper, ramp: state.chunkRamp, written: state.written)
        #expect(resumed.starts == table.starts && resumed.bytesDone == 7 * Self.mib)
        #expect(resumed.waitForPrefix(beyond: 0) == 3 * Self.mib)
    }

    @Test func freeConnectionsTakeTheLowestChunksAndCompleteOnesAreSkipped() {
        let starts: [Int64] = [0, 10, 20, 30]
        // Chunk 1 is complete from an earlier run, chunk 2 half written.
        var scheduler = ChunkScheduler(starts: starts, size: 40, written: [0, 10, 5, 0], retry: retry)
        #expect(scheduler.pending == [0, 2, 3])
        #expect(scheduler.connectionsWanted == 3)
        let now = clock.now
        #expect(scheduler.next(at: now) == 0)
        #expect(scheduler.next(at: now) == 2)
        let rest = ChunkScheduler.missingRange(of: 2, starts: starts, size: 40, written: 5)
        #expect(rest.start == 25 && rest.end == 29)
        let whole = ChunkScheduler.missingRange(of: 3, starts: starts, size: 40, written: 0)
        #expect(whole.start == 30 && whole.end == 39)
        scheduler.completed(0)
        #expect(!scheduler.isFinished)
        #expect(scheduler.next(at: now) == 3)
        #expect(scheduler.next(at: now) == nil)
        scheduler.completed(2)
        scheduler.completed(3)
        #expect(scheduler.isFinished)
    }

    @Test func aFailedChunkWaitsForItsBackoffThenComesBackInOrder() {
        var scheduler = ChunkScheduler(starts: [0, 10, 20], size: 30, written: [0, 0, 0], retry: retry)
        let now = clock.now
        #expect(scheduler.next(at: now) == 0)
        let verdict = scheduler.failed(0, received: 0, retryable: true, retryAfter: nil, at: now)
        guard case .retry(let attempt, let delay) = verdict else {
            Issue.record("a first retryable failure is retried, got \(verdict)")
            return
        }
        #expect(attempt == 1)
        #expect(delay >= 0.25 && delay <= 0.5)
        // Chunk 0 waits; the others go first.
        #expect(scheduler.hasReady(at: now))
        #expect(scheduler.next(at: now) == 1)
        #expect(scheduler.next(at: now) == 2)
        #expect(scheduler.next(at: now) == nil)
        let due = scheduler.nextReadyInstant()
        #expect(due != nil)
        let later = now + .milliseconds(Int(delay * 1000) + 1)
        #expect(scheduler.hasReady(at: later))
        #expect(scheduler.next(at: later) == 0)
    }

    @Test func attemptsRunOutUnlessTheRequestMadeProgress() {
        var scheduler = ChunkScheduler(starts: [0], size: 10 * Self.mib, written: [0], retry: retry)
        var now = clock.now
        var verdicts: [ChunkScheduler.Verdict] = []
        for _ in 0..<3 {
            now = now + .seconds(60)
            #expect(scheduler.next(at: now) == 0)
            verdicts.append(scheduler.failed(0, received: 100, retryable: true, retryAfter: 0, at: now))
        }
        #expect(verdicts == [.retry(attempt: 1, delay: 0), .retry(attempt: 2, delay: 0), .fail(attempt: 3)])

        // A request that delivered a MiB or more starts the count over.
        var progressing = ChunkScheduler(starts: [0], size: 10 * Self.mib, written: [0], retry: retry)
        for _ in 0..<5 {
            now = now + .seconds(60)
            #expect(progressing.next(at: now) == 0)
            #expect(progressing.failed(0, received: Self.mib, retryable: true, retryAfter: 0, at: now) == .retry(attempt: 1, delay: 0))
        }
    }

    @Test func aFailureThatIsNotRetryableFailsAtOnceAndARequeueCostsNoAttempt() {
        var scheduler = ChunkScheduler(starts: [0, 10], size: 20, written: [0, 0], retry: retry)
        let now = clock.now
        #expect(scheduler.next(at: now) == 0)
        #expect(scheduler.next(at: now) == 1)
        scheduler.requeue(1)
        #expect(scheduler.pending == [1])
        #expect(scheduler.hasReady(at: now))
        #expect(scheduler.failed(0, received: 0, retryable: false, retryAfter: nil, at: now) == .fail(attempt: 1))
    }

    @Test func backoffDoublesIsCappedAndRetryAfterWins() {
        #expect(retry.delay(attempt: 1, retryAfter: nil, jitter: 1) == 0.5)
        #expect(retry.delay(attempt: 3, retryAfter: nil, jitter: 1) == 2)
        #expect(retry.delay(attempt: 3, retryAfter: nil, jitter: 0.5) == 1)
        #expect(retry.delay(attempt: 20, retryAfter: nil, jitter: 1) == 30)
        #expect(retry.delay(attempt: 1, retryAfter: 7, jitter: 0.5) == 7)
        #expect(retry.delay(attempt: 1, retryAfter: 1e9) == 120, "a huge Retry-After is capped at four times the cap")
        #expect(retry.delay(attempt: 1, retryAfter: -5) == 0)
    }

    @Test func theHasherIsWokenByWritesThatMoveThePrefixAndByAStop() async throws {
        let table = ChunkTable(size: 30, chunkSize: 10, taper: 16)
        // Chunk 1 first: the prefix does not move, a waiter stays asleep.
        table.add(10, to: 1)
        let waiter = Task.detached { table.waitForPrefix(beyond: 0) }
        table.add(4, to: 0)
        #expect(await waiter.value == 4)
        table.add(6, to: 0)
        #expect(table.waitForPrefix(beyond: 4) == 20, "chunk 0 completing joins the prefix to chunk 1")
        let stopped = Task.detached { table.waitForPrefix(beyond: 20) }
        table.stop()
        #expect(await stopped.value == nil)
        // A resumed table knows its prefix at once.
        let resumed = ChunkTable(size: 30, chunkSize: 10, taper: 16, written: [10, 10, 3])
        #expect(resumed.waitForPrefix(beyond: 0) == 23)
    }

    @Test func theHasherWaitsForAWholeWindowUnlessTheFileEndsOrStops() async throws {
        let table = ChunkTable(size: 30, chunkSize: 10, taper: 16)
        table.add(4, to: 0)
        let waiter = Task.detached { table.waitForPrefix(beyond: 0, minimum: 8) }
        try await Task.sleep(for: .milliseconds(50))
        table.add(2, to: 0)
        try await Task.sleep(for: .milliseconds(50))
        table.add(4, to: 0)
        #expect(await waiter.value == 10, "6 bytes are less than the window; 10 are enough")
        table.add(10, to: 1)
        table.add(10, to: 2)
        #expect(table.waitForPrefix(beyond: 20, minimum: 1 << 20) == 30, "the end of the file is enough")
        #expect(table.hashLag == 30, "nothing recorded as hashed yet")
        table.recordHash(offset: 30, state: Data())
        #expect(table.hashLag == 0)

        let stopping = ChunkTable(size: 30, chunkSize: 10, taper: 16)
        stopping.add(3, to: 0)
        let partial = Task.detached { stopping.waitForPrefix(beyond: 0, minimum: 8) }
        try await Task.sleep(for: .milliseconds(50))
        stopping.stop()
        #expect(await partial.value == 3, "after a stop the hasher takes what is there")
        #expect(stopping.waitForPrefix(beyond: 3, minimum: 8) == nil)
        stopping.hasherEnded()
        #expect(stopping.hashLag == 0, "an ended hasher holds nothing back")
    }
}
