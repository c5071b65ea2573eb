import JobQueue
@testable import Scheduler
import Testing

/// The slot and lease bookkeeping of one worker process, without Redis: the cases a heartbeat or a
/// completion batch can only hit by timing.
@Suite("Active jobs of a worker process")
struct ActiveJobsTests {
    static func job(_ id: String, token: String = "1") -> ClaimedJob {
        ClaimedJob(id: id, kind: "noop", payload: "{}", lease: Lease(plan: "p", job: id, token: token))
    }

    /// Starts a job whose task waits until `release` is called, even when it is cancelled: a
    /// cancelled job that ended at once would clear its fate before the test could read it.
    static func launchWaiting(_ active: ActiveJobs, _ job: ClaimedJob) async -> AsyncStream<Void>.Continuation {
        let (stream, release) = AsyncStream<Void>.makeStream()
        await active.launch(job) {
            await Task { for await _ in stream {} }.value
        }
        return release
    }

    @Test func aHeartbeatThatCrossesACompletionDoesNotStopTheJob() async {
        let active = ActiveJobs()
        let reporting = Self.job("reporting"), running = Self.job("running")
        let first = await Self.launchWaiting(active, reporting)
        let second = await Self.launchWaiting(active, running)
        _ = await active.fate(of: reporting.lease)  // it ran; its outcome is on its way to Redis
        #expect(await active.loseLease(reporting.lease) == false)
        #expect(await active.loseLease(running.lease) == true)
        #expect(await active.fate(of: running.lease).lost)
        #expect(await !active.fate(of: reporting.lease).lost)
        first.finish()
        second.finish()
        await active.waitUntilEmpty()
        #expect(await active.count == 0)
    }

    @Test func handedOverSlotsNeverExceedTheCapacity() async {
        let active = ActiveJobs()
        let old = [Self.job("a"), Self.job("b")]
        var releases = [AsyncStream<Void>.Continuation]()
        for job in old { releases.append(await Self.launchWaiting(active, job)) }
        #expect(await active.count == 2)
        // A batch of two completions brings one new job: one slot stays free, none is double-booked.
        let (stream, releaseNew) = AsyncStream<Void>.makeStream()
        await active.handOver(retiring: old.map(\.lease), to: [Self.job("c")]) { _ in
            for await _ in stream {}
        }
        #expect(await active.count == 1)
        #expect(await active.leases == [Self.job("c").lease])
        #expect(await active.peak == 2)
        // The retired jobs' tasks still count for a drain until they end.
        releases.forEach { $0.finish() }
        releaseNew.finish()
        await active.waitUntilEmpty()
        #expect(await active.count == 0)
    }
}
