import JobQueue

/// Sends the successes of one worker process to Redis in batches: while one `complete_many` call
/// is in flight the next completions gather, so a busy worker makes one round trip (and Redis one
/// script call) for many jobs, and an idle one still reports a lone job at once.
actor CompletionBatcher {
    typealias Reply = Result<(outcome: CompletionOutcome, flip: MachineFlip?), JobQueueError>

    private struct Pending {
        let lease: Lease
        let resultJSON: String
        let continuation: CheckedContinuation<Reply, Never>
    }

    private let queue: JobQueue
    private let maxBatch: Int
    private var pending: [Pending] = []
    private var flushing = false

    init(queue: JobQueue, maxBatch: Int = 256) {
        self.queue = queue
        self.maxBatch = max(1, maxBatch)
    }

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

    /// Closes the batcher's connection (after the worker drained).
    nonisolated func close() { queue.redis.close() }

    private func flush() async {
        while !pending.isEmpty {
            let batch = Array(pending.prefix(maxBatch))
            pending.removeFirst(batch.count)
            do {
                let (outcomes, flip) = try await queue.complete(batch.map { ($0.lease, $0.resultJSON) })
                let flipper = flip == nil ? nil : outcomes.lastIndex(of: .ok)
                for (index, item) in batch.enumerated() {
                    item.continuation.resume(returning: .success((outcomes[index], index == flipper ? flip : nil)))
                }
            } catch {
                for item in batch { item.continuation.resume(returning: .failure(error)) }
            }
        }
        flushing = false
    }
}
