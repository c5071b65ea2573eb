import JobQueue

/// The jobs one worker process is running: their leases, their tasks, and the free slots.
actor ActiveJobs {
    private struct Entry {
        let task: Task<Void, Never>
        let leaseMilliseconds: Int
        let deadline: ContinuousClock.Instant
    }

    private var entries: [Lease: Entry] = [:]
    /// Jobs whose outcome Redis has recorded and whose slot went to a new job; their tasks are only
    /// finishing bookkeeping (events), so they hold no slot and no lease but still count for a drain.
    private var retired: Set<Lease> = []
    private var lost: Set<Lease> = []
    private var overdue: Set<Lease> = []
    private var reporting: Set<Lease> = []
    private var slotWaiters: [CheckedContinuation<Void, Never>] = []
    private var emptyWaiters: [CheckedContinuation<Void, Never>] = []
    private(set) var peak = 0

    /// Jobs holding a slot.
    var count: Int { entries.count - retired.count }
    /// The leases to keep alive.
    var leases: [Lease] { entries.keys.filter { !retired.contains($0) } }

    /// The shortest lease held, which sets the heartbeat pace.
    var shortestLeaseMilliseconds: Int? {
        entries.lazy.filter { !self.retired.contains($0.key) }.map(\.value.leaseMilliseconds).min()
    }

    /// Starts `body` for the job and tracks it until it returns.
    func launch(_ job: ClaimedJob, _ body: @escaping @Sendable () async -> Void) {
        let lease = job.lease
        let task = Task {
            await body()
            self.finish(lease)
        }
        entries[lease] = Entry(
            task: task, leaseMilliseconds: job.leaseMilliseconds,
            deadline: .now + .milliseconds(job.timeoutMilliseconds))
        peak = max(peak, count)
    }

    /// Gives the slots of jobs whose outcome Redis has recorded to newly claimed jobs in one step,
    /// so the number of jobs holding a slot never exceeds the capacity.
    func handOver(retiring: [Lease], to jobs: [ClaimedJob], _ body: @escaping @Sendable (ClaimedJob) async -> Void) {
        var freed = 0
        for lease in retiring where entries[lease] != nil && !retired.contains(lease) {
            retired.insert(lease)
            freed += 1
        }
        for job in jobs { launch(job) { await body(job) } }
        for _ in 0..<max(0, min(freed - jobs.count, slotWaiters.count)) { slotWaiters.removeFirst().resume() }
    }

    /// The queue says this lease is gone: stop the job and do not report on it. A job whose outcome
    /// is on its way to Redis is left alone: a heartbeat that crossed its completion reads it as
    /// gone, and the completion itself tells whether it counted. Returns whether the job was stopped.
    func loseLease(_ lease: Lease) -> Bool {
        guard let entry = entries[lease], !retired.contains(lease), !reporting.contains(lease) else { return false }
        lost.insert(lease)
        entry.task.cancel()
        return true
    }

    /// The job has run; its outcome is being sent.
    func startReporting(_ lease: Lease) { if entries[lease] != nil { reporting.insert(lease) } }

    /// Cancels every job that has run past its timeout (one watchdog instead of a timer per job);
    /// such a job's attempt is reported as a timeout whatever its executor returns.
    func cancelOverdue(now: ContinuousClock.Instant) {
        for (lease, entry) in entries where entry.deadline <= now && !overdue.contains(lease) && !retired.contains(lease) {
            overdue.insert(lease)
            entry.task.cancel()
        }
    }

    /// What happened to a job's lease while it ran (taken away, and/or past its timeout); from now
    /// on the job only reports (`startReporting`).
    func fate(of lease: Lease) -> (lost: Bool, overdue: Bool) {
        startReporting(lease)
        return (lost.contains(lease), overdue.contains(lease))
    }

    func cancelAll() {
        for (lease, entry) in entries where !retired.contains(lease) { entry.task.cancel() }
    }

    /// Returns when at least one slot is free (or `wakeAll` is called).
    func waitForSlot(capacity: Int) async {
        if count < capacity { return }
        await withCheckedContinuation { slotWaiters.append($0) }
    }

    /// Returns when no job's task is running, retired ones included.
    func waitUntilEmpty() async {
        if entries.isEmpty { return }
        await withCheckedContinuation { emptyWaiters.append($0) }
    }

    func wakeAll() {
        let waiters = slotWaiters
        slotWaiters = []
        waiters.forEach { $0.resume() }
    }

    private func finish(_ lease: Lease) {
        entries[lease] = nil
        lost.remove(lease)
        overdue.remove(lease)
        reporting.remove(lease)
        // A retired job's slot was handed over already.
        if retired.remove(lease) == nil, !slotWaiters.isEmpty { slotWaiters.removeFirst().resume() }
        if entries.isEmpty {
            let waiters = emptyWaiters
            emptyWaiters = []
            waiters.forEach { $0.resume() }
        }
    }
}
