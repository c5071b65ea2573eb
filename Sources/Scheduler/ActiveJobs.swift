import JobQueue

/// The jobs one worker process is running: their leases, their tasks, and the free slots.
actor ActiveJobs {
    private struct Entry {
        let task: Task<Void, Never>
        let leaseMilliseconds: Int
        let deadline: ContinuousClock.Instant
    }

    private var entries: [Lease: Entry] = [:]
    private var lost: Set<Lease> = []
    private var overdue: Set<Lease> = []
    private var slotWaiters: [CheckedContinuation<Void, Never>] = []
    private var emptyWaiters: [CheckedContinuation<Void, Never>] = []
    private(set) var peak = 0

    var count: Int { entries.count }
    var leases: [Lease] { Array(entries.keys) }

    /// The shortest lease held, which sets the heartbeat pace.
    var shortestLeaseMilliseconds: Int? { entries.values.map(\.leaseMilliseconds).min() }

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
        peak = max(peak, entries.count)
    }

    /// The queue says this lease is gone: stop the job and do not report on it.
    func loseLease(_ lease: Lease) {
        guard let entry = entries[lease] else { return }
        lost.insert(lease)
        entry.task.cancel()
    }

    /// Cancels every job that has run past its timeout (one watchdog instead of a timer per job);
    /// such a job's attempt is reported as a timeout whatever its executor returns.
    func cancelOverdue(now: ContinuousClock.Instant) {
        for (lease, entry) in entries where entry.deadline <= now && !overdue.contains(lease) {
            overdue.insert(lease)
            entry.task.cancel()
        }
    }

    /// What happened to a job's lease while it ran: taken away, and/or past its timeout.
    func fate(of lease: Lease) -> (lost: Bool, overdue: Bool) { (lost.contains(lease), overdue.contains(lease)) }

    func cancelAll() {
        for entry in entries.values { entry.task.cancel() }
    }

    /// Returns when at least one slot is free (or `wakeAll` is called).
    func waitForSlot(capacity: Int) async {
        if entries.count < capacity { return }
        await withCheckedContinuation { slotWaiters.append($0) }
    }

    /// Returns when no job is running.
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
        if !slotWaiters.isEmpty { slotWaiters.removeFirst().resume() }
        if entries.isEmpty {
            let waiters = emptyWaiters
            emptyWaiters = []
            waiters.forEach { $0.resume() }
        }
    }
}
