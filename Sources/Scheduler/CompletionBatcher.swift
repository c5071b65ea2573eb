import JobQueue

/// Sends the successes of one worker process to Redis in batches: while one `complete_many` call
/// is in flight the next completions gather, so a busy worker makes one round trip (and Redis one
/// script call) for many jobs, and an idle one still reports a lone job at once. With a `Refill`,
/// the same round trip claims new jobs for the slots the batch frees.
actor CompletionBatcher {
    typealias Reply = Result<(outcome: CompletionOutcome, flip: MachineFlip?), JobQueueError>

    /// How the batcher hands freed slots to new jobs.
    struct Refill: Sendable {
        let workerID: String
        /// False once the worker drains: freed slots stay empty.
        let wanted: @Sendable () -> Bool
        /// Retires the batch's leases and starts the claimed jobs (and reports a claim's flip).
        let handOver: @Sendable (_ retiring: [Lease], _ claimed: [ClaimedJob], _ flip: MachineFlip?) async -> Void
        /// A failed claim: the worker's own claim loop takes over.
        let claimFailed: @Sendable (JobQueueError) -> Void
    }

    private struct Pending {
        let lease: Lease
        let resultJSON: String
        let continuation: CheckedContinuation<Reply, Never>
    }

    private let queue: JobQueue
    private let maxBatch: Int
    private var refill: Refill?
    private var pending: [Pending] = []
    private var flushing = false

    init(queue: JobQueue, maxBatch: Int = 256) {
        self.queue = queue
        self.maxBatch = max(1, maxBatch)
    }

    func setRefill(_ refill: Refill?) { self.refill = refill }

    /// Completes the job under `lease`; the flip, when this batch caused one, is given to the last
    /// job of the batch that succeeded, so exactly one caller announces it.
    func complete(_ lease: Lease, resultJSON: String) async throws(JobQueueError) -> (outcome: CompletionOutcome, flip: MachineFlip?) {
        let reply = await withCheckedContinuation { (continuation: CheckedContinuation<Reply, Never>) in
            pending.append(Pending(lease: lease, resultJSON: resultJSON, continuation: continuation))
            if !flushing {
                flushing = true
                Task { await self.flush() }
            }
        }
        return try reply.get()
    }

    private func flush() async {
        while !pending.isEmpty {
            let batch = Array(pending.prefix(maxBatch))
            pending.removeFirst(batch.count)
            let refill = self.refill.flatMap { $0.wanted() ? $0 : nil }
            do {
                let done = try await queue.complete(
                    batch.map { ($0.lease, $0.resultJSON) }, thenClaim: refill == nil ? 0 : batch.count,
                    worker: refill?.workerID ?? "")
                if let refill {
                    if let error = done.claimError { refill.claimFailed(error) }
                    await refill.handOver(batch.map(\.lease), done.claimed, done.claimFlip)
                }
                let flipper = done.flip == nil ? nil : done.outcomes.lastIndex(of: .ok)
                for (index, item) in batch.enumerated() {
                    item.continuation.resume(returning: .success((done.outcomes[index], index == flipper ? done.flip : nil)))
                }
            } catch {
                for item in batch { item.continuation.resume(returning: .failure(error)) }
            }
        }
        flushing = false
    }
}
