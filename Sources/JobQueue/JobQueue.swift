import Foundation
import RedisClient

/// The machine-side and API-side operations of the Redis job protocol for one machine. Every state
/// change runs inside `queue.lua`, so it is atomic and identical for callers in any language.
public final class JobQueue: Sendable {
    public let keys: MachineKeys
    public let redis: RedisClient
    private let script = QueueScript.queue

    public init(redis: RedisClient, machine: String, prefix: String = "provision") throws(JobQueueError) {
        self.keys = try MachineKeys(prefix: prefix, machine: machine)
        self.redis = redis
    }

    /// Limits applied at enqueue (the script also enforces hard caps of its own).
    public struct Limits: Sendable {
        public var maxPayloadBytes = 65_536
        public var maxJobs = 50_000
        /// How long a finished or superseded plan's records stay readable (then they expire), and how
        /// long its plan id is refused again.
        public var retentionSeconds = 7 * 24 * 3600
        public init() {}
    }

    /// What an accepted enqueue created.
    public struct Enqueued: Sendable, Equatable {
        public let generation: Int
        public let jobs: Int
        public let ready: Int
    }

    /// Enqueues a plan (JSON per protocols/schemas/plan.schema.json) atomically: either every job is
    /// written or, when the plan is refused, nothing is.
    public func enqueue(planJSON: String, replace: Bool = false, limits: Limits = Limits()) async throws(JobQueueError) -> Enqueued {
        let reply = try await call(
            "enqueue",
            [keys.machine, planJSON, String(limits.maxPayloadBytes), String(limits.maxJobs), replace ? "1" : "0",
             String(limits.retentionSeconds)])
        guard let items = reply.array, items.count == 3, let generation = items[0].int, let jobs = items[1].int,
            let ready = items[2].int
        else { throw .protocolViolation("enqueue returned \(reply)") }
        return Enqueued(generation: Int(generation), jobs: Int(jobs), ready: Int(ready))
    }

    /// Leases up to `count` ready jobs to `worker`. Also promotes due retries and takes back expired
    /// leases (at most `upkeepLimit` of each), and reports a flip that upkeep caused.
    public func claim(worker: String, count: Int, upkeepLimit: Int = 100) async throws(JobQueueError) -> (jobs: [ClaimedJob], flip: MachineFlip?) {
        let claimed = try await claimWithUpkeep(worker: worker, count: count, upkeepLimit: upkeepLimit)
        return (claimed.jobs, claimed.flip)
    }

    /// What a claim returned, with when the machine next needs a claim for upkeep.
    public struct Claimed: Sendable {
        public let jobs: [ClaimedJob]
        public let flip: MachineFlip?
        /// Milliseconds until a retry is due or a lease runs out (a claim then has upkeep to do), nil
        /// when nothing is scheduled: an idle worker may then wait for a wake marker alone.
        public let nextUpkeepMilliseconds: Int?
    }

    /// `claim`, also returning when upkeep is next due.
    public func claimWithUpkeep(worker: String, count: Int, upkeepLimit: Int = 100) async throws(JobQueueError) -> Claimed {
        try Self.parseClaim(try await call("claim", [worker, String(count), String(upkeepLimit)]))
    }

    private static func parseClaim(_ reply: RedisReply) throws(JobQueueError) -> Claimed {
        guard let items = reply.array, items.count >= 2, let first = items.first, let next = items[1].int else {
            throw .protocolViolation("claim returned \(reply)")
        }
        var jobs: [ClaimedJob] = []
        for item in items.dropFirst(2) {
            guard let f = item.array, f.count == 11, let id = f[0].string, let kind = f[1].string,
                let payload = f[2].string, let attempt = f[3].int, let maxAttempts = f[4].int,
                let token = f[5].string, let leaseMs = f[6].int, let timeoutMs = f[7].int,
                let plan = f[8].string, let generation = f[9].int
            else { throw .protocolViolation("claim returned a job as \(item)") }
            jobs.append(
                ClaimedJob(
                    id: id, kind: kind, payload: payload, attempt: Int(attempt), maxAttempts: Int(maxAttempts),
                    lease: Lease(plan: plan, job: id, token: token), leaseMilliseconds: Int(leaseMs),
                    timeoutMilliseconds: Int(timeoutMs), generation: Int(generation), label: f[10].string ?? ""))
        }
        return Claimed(
            jobs: jobs, flip: first.string.flatMap(MachineFlip.init(rawValue:)), nextUpkeepMilliseconds: next < 0 ? nil : Int(next))
    }

    /// Renews the leases a worker holds; returns the leases it has lost (expired, cancelled, superseded).
    public func heartbeat(worker: String, leases: [Lease]) async throws(JobQueueError) -> Set<Lease> {
        let reply = try await call("heartbeat", [worker] + leases.flatMap { [$0.plan, $0.job, $0.token] })
        guard let held = reply.array, held.count == leases.count else {
            throw .protocolViolation("heartbeat returned \(reply)")
        }
        return Set(zip(leases, held).compactMap { $1.int == 1 ? nil : $0 })
    }

    /// Marks the leased job succeeded and makes its dependents ready; only the current lease may.
    public func complete(_ lease: Lease, resultJSON: String = "{}") async throws(JobQueueError) -> (outcome: CompletionOutcome, flip: MachineFlip?) {
        let reply = try await call("complete", [lease.plan, lease.job, lease.token, resultJSON])
        guard let items = reply.array, items.count == 2, let outcome = items[0].string.flatMap(CompletionOutcome.init(rawValue:))
        else { throw .protocolViolation("complete returned \(reply)") }
        return (outcome, items[1].string.flatMap(MachineFlip.init(rawValue:)))
    }

    /// Completes several leased jobs in one script call (`complete_many`): one outcome per lease, in
    /// order, and the flip if this call made the machine ready.
    public func complete(_ items: [(lease: Lease, resultJSON: String)]) async throws(JobQueueError) -> (outcomes: [CompletionOutcome], flip: MachineFlip?) {
        if items.isEmpty { return ([], nil) }
        return try Self.parseCompleteMany(try await call("complete_many", Self.completeArguments(items)), count: items.count)
    }

    /// What `complete(_:thenClaim:worker:)` did: the batch's outcomes and flip, then the claim's.
    public struct CompletedAndClaimed: Sendable {
        public let outcomes: [CompletionOutcome]
        public let flip: MachineFlip?
        public let claimed: [ClaimedJob]
        public let claimFlip: MachineFlip?
        /// Why the claim failed when the completion succeeded (the jobs are finished either way).
        public let claimError: JobQueueError?
    }

    /// Completes a batch and, in the same round trip (a pipeline of two script calls), claims up to
    /// `count` jobs for the slots the batch frees, so a busy worker needs one round trip per batch.
    public func complete(
        _ items: [(lease: Lease, resultJSON: String)], thenClaim count: Int, worker: String, upkeepLimit: Int = 100
    ) async throws(JobQueueError) -> CompletedAndClaimed {
        guard count > 0 else {
            let (outcomes, flip) = try await complete(items)
            return CompletedAndClaimed(outcomes: outcomes, flip: flip, claimed: [], claimFlip: nil, claimError: nil)
        }
        let replies: [RedisReply]
        do {
            replies = try await redis.evalPipeline([
                (script, keys.scriptKeys, ["complete_many", keys.base] + Self.completeArguments(items)),
                (script, keys.scriptKeys, ["claim", keys.base, worker, String(count), String(upkeepLimit)]),
            ])
        } catch { throw .redis(error) }
        guard replies.count == 2 else { throw .protocolViolation("a pipeline of 2 calls returned \(replies.count) replies") }
        if case .error(let message) = replies[0] {
            throw .redis(.server(server: redis.configuration.serverDescription, command: "EVALSHA queue complete_many", message: message))
        }
        let (outcomes, flip) = try Self.parseCompleteMany(replies[0], count: items.count)
        if case .error(let message) = replies[1] {
            let error = JobQueueError.redis(
                .server(server: redis.configuration.serverDescription, command: "EVALSHA queue claim", message: message))
            return CompletedAndClaimed(outcomes: outcomes, flip: flip, claimed: [], claimFlip: nil, claimError: error)
        }
        let claimed = try Self.parseClaim(replies[1])
        return CompletedAndClaimed(outcomes: outcomes, flip: flip, claimed: claimed.jobs, claimFlip: claimed.flip, claimError: nil)
    }

    private static func completeArguments(_ items: [(lease: Lease, resultJSON: String)]) -> [String] {
        var arguments: [String] = []
        arguments.reserveCapacity(items.count * 4)
        for item in items {
            arguments += [item.lease.plan, item.lease.job, item.lease.token, item.resultJSON]
        }
        return arguments
    }

    private static func parseCompleteMany(_ reply: RedisReply, count: Int) throws(JobQueueError) -> (outcomes: [CompletionOutcome], flip: MachineFlip?) {
        guard let parts = reply.array, parts.count == 2, let list = parts[1].array, list.count == count else {
            throw .protocolViolation("complete_many returned \(reply)")
        }
        var outcomes: [CompletionOutcome] = []
        outcomes.reserveCapacity(list.count)
        for item in list {
            guard let outcome = item.string.flatMap(CompletionOutcome.init(rawValue:)) else {
                throw .protocolViolation("complete_many returned the outcome \(item)")
            }
            outcomes.append(outcome)
        }
        return (outcomes, parts[0].string.flatMap(MachineFlip.init(rawValue:)))
    }

    /// Records a failed attempt: a retry after backoff while attempts remain and the error is
    /// retryable, else dead (which fails its dependents and the machine).
    public func fail(
        _ lease: Lease, errorType: String, message: String, retryable: Bool = true,
        jitter: Double = Double.random(in: 0..<1)
    ) async throws(JobQueueError) -> (outcome: FailureOutcome, flip: MachineFlip?) {
        let reply = try await call(
            "fail", [lease.plan, lease.job, lease.token, errorType, message, retryable ? "1" : "0", String(jitter)])
        guard let items = reply.array, items.count == 3, let kind = items[0].string else {
            throw .protocolViolation("fail returned \(reply)")
        }
        let flip = items[1].string.flatMap(MachineFlip.init(rawValue:))
        switch kind {
        case "retry": return (.retry(delayMilliseconds: Int(items[2].int ?? 0)), flip)
        case "dead": return (.dead, flip)
        case "stale": return (.stale, flip)
        default: throw .protocolViolation("fail returned \(reply)")
        }
    }

    /// Hands a job back unfinished (graceful drain); the attempt does not count. False when stale.
    public func release(_ lease: Lease) async throws(JobQueueError) -> Bool {
        try await call("release", [lease.plan, lease.job, lease.token]).string == "released"
    }

    /// Cancels every unfinished job of the plan; returns how many were cancelled.
    @discardableResult
    public func cancel(plan: String, reason: String) async throws(JobQueueError) -> Int {
        let reply = try await call("cancel", [plan, reason])
        return Int(reply.array?.last?.int ?? 0)
    }

    /// Registers a worker (its info is JSON: id, host, pid, capabilities, …) and records a heartbeat.
    public func register(worker: String, infoJSON: String) async throws(JobQueueError) {
        _ = try await call("register", [worker, infoJSON])
    }

    public func unregister(worker: String) async throws(JobQueueError) {
        _ = try await call("unregister", [worker])
    }

    /// What `announce` answered: the claim of the current generation's fleet announcement.
    public enum AnnounceClaim: Sendable, Equatable {
        /// This claimant announces: the generation, whether it took over a dead claim, the status
        /// hash and the failure reasons at the moment of the claim.
        case claimed(generation: Int, tookOver: Bool, status: [String: String], failures: [String])
        /// Nothing to announce (not ready or failed).
        case none
        /// Already announced.
        case done
        /// The flip is younger than the grace period: the flipper announces.
        case wait
        /// Another claimant is announcing.
        case busy
    }

    /// Claims the fleet announcement of the machine's flip (protocols/events.md). The flipper passes
    /// `graceMilliseconds` 0; anyone re-announcing for a publisher that died passes more.
    public func announce(claimant: String, graceMilliseconds: Int, takeoverMilliseconds: Int) async throws(JobQueueError) -> AnnounceClaim {
        let reply = try await call("announce", [claimant, String(graceMilliseconds), String(takeoverMilliseconds)])
        guard let items = reply.array, let kind = items.first?.string else {
            throw .protocolViolation("announce returned \(reply)")
        }
        switch kind {
        case "claimed":
            guard items.count == 5, let generation = items[1].int, let tookOver = items[2].int,
                let status = items[3].hash, let reasons = items[4].array
            else { throw .protocolViolation("announce returned \(reply)") }
            return .claimed(
                generation: Int(generation), tookOver: tookOver == 1, status: status,
                failures: reasons.compactMap(\.string))
        case "none": return .none
        case "done": return .done
        case "wait": return .wait
        case "busy": return .busy
        default: throw .protocolViolation("announce returned \(reply)")
        }
    }

    /// Marks the claimed announcement done and appends the machine's own event to `B:events`, at
    /// once. False when the claim was lost (taken over, or a new plan enqueued).
    public func announced(
        claimant: String, eventJSON: String, eventsMaxLength: Int, eventsMaxAge: Duration = .seconds(7 * 24 * 3600)
    ) async throws(JobQueueError) -> Bool {
        try await call("announced", [claimant, eventJSON, String(eventsMaxLength), String(Int(eventsMaxAge / .milliseconds(1)))])
            .string == "announced"
    }

    /// Deletes every key of the machine (`queue.lua retire`); refused with `.busy` while a plan is
    /// pending or running unless `force`. Returns how many keys existed. The machine's entry in the
    /// fleet index is another slot's: `FleetIndex.forget` removes it.
    @discardableResult
    public func retire(force: Bool = false) async throws(JobQueueError) -> Int {
        let reply: RedisReply
        do {
            reply = try await call("retire", [force ? "1" : "0"])
        } catch {
            if case .busy(let reason) = error { throw .retireRefused(machine: keys.machine, reason: reason) }
            throw error
        }
        guard let items = reply.array, items.count == 2, let deleted = items[1].int else {
            throw .protocolViolation("retire returned \(reply)")
        }
        return Int(deleted)
    }

    /// The machine's status hash and failure reasons.
    public func status() async throws(JobQueueError) -> MachineStatus {
        let replies: [RedisReply]
        do {
            replies = try await redis.pipeline([["HGETALL", keys.status], ["LRANGE", keys.failures, "0", "-1"]])
        } catch { throw .redis(error) }
        guard replies.count == 2, let hash = replies[0].hash, let reasons = replies[1].array else {
            throw .protocolViolation("status read returned \(RedisReply.array(replies))")
        }
        return MachineStatus(machineID: keys.machine, hash: hash, reasons: reasons.compactMap(\.string))
    }

    /// One job's record (its fields, with `id` and `plan`), or nil when the plan is neither the
    /// current nor the previous one, or its records expired.
    public func job(plan: String, id: String) async throws(JobQueueError) -> [String: String]? {
        for key in [keys.jobs, keys.previous] {
            let fields = Self.jobFields.map { "\(id)|\($0)" }
            let reply: RedisReply
            do {
                let replies = try await redis.pipeline([["HGET", key, "|plan_id"], ["HMGET", key] + fields])
                guard replies.count == 2, replies[0].string == plan else { continue }
                reply = replies[1]
            } catch { throw .redis(error) }
            var record: [String: String] = [:]
            for (name, value) in zip(Self.jobFields, reply.array ?? []) {
                if let text = value.string { record[name] = text }
            }
            if record.isEmpty { return nil }
            record["id"] = id
            record["plan"] = plan
            return record
        }
        return nil
    }

    /// Every job of a plan (the current or the previous one), in enqueue order.
    public func jobs(plan: String) async throws(JobQueueError) -> [[String: String]] {
        for key in [keys.jobs, keys.previous] {
            let hash: [String: String]
            do { hash = try await redis.send("HGETALL", key).hash ?? [:] } catch { throw .redis(error) }
            guard hash["|plan_id"] == plan else { continue }
            var records: [String: [String: String]] = [:]
            for (field, value) in hash {
                guard let bar = field.firstIndex(of: "|"), bar != field.startIndex else { continue }
                records[String(field[..<bar]), default: [:]][String(field[field.index(after: bar)...])] = value
            }
            let ids = (hash["|ids"] ?? "").split(separator: " ").map(String.init)
            return ids.compactMap { id in
                guard var record = records[id] else { return nil }
                record["id"] = id
                record["plan"] = plan
                return record
            }
        }
        return []
    }

    /// Every field a job record may have (protocols/redis.md §4).
    static let jobFields = [
        "kind", "payload", "label", "depends_on", "dependents", "pending", "state", "attempts", "max_attempts",
        "backoff_ms", "backoff_max_ms", "lease_ms", "timeout_ms", "created_at", "token", "owner", "lease_until",
        "started_at", "finished_at", "result", "error_type", "error", "retry_at",
    ]

    /// Registered workers with their info JSON and last heartbeat (ms since the epoch).
    public func workers() async throws(JobQueueError) -> [(id: String, info: String, heartbeat: Int?)] {
        do {
            let replies = try await redis.pipeline([
                ["HGETALL", keys.workers], ["ZRANGE", keys.heartbeats, "0", "-1", "WITHSCORES"],
            ])
            let infos = replies[0].hash ?? [:]
            let beats = replies[1].hash ?? [:]
            return infos.keys.sorted().map { ($0, infos[$0] ?? "{}", beats[$0].flatMap { Double($0) }.map { Int($0) }) }
        } catch { throw .redis(error) }
    }

    private func call(_ op: String, _ arguments: [String]) async throws(JobQueueError) -> RedisReply {
        do {
            return try await redis.eval(script, keys: keys.scriptKeys, arguments: [op, keys.base] + arguments)
        } catch {
            if let message = error.serverMessage {
                if let reason = Self.stripCode("PLAN_INVALID", message) { throw .planRejected(reason) }
                if let reason = Self.stripCode("MACHINE_BUSY", message) { throw .busy(reason) }
                if let reason = Self.stripCode("PROTOCOL_MISMATCH", message) { throw .protocolMismatch(reason) }
            }
            throw .redis(error)
        }
    }

    private static func stripCode(_ code: String, _ message: String) -> String? {
        guard message.hasPrefix(code + " ") else { return nil }
        return clipQuoted(String(message.dropFirst(code.count + 1)))
    }

    /// queue.lua's reasons quote what the plan said ('…'): a quoted value of kilobytes (a job kind
    /// 50 000 characters long, found by bench/fuzz) is shortened so the refusal stays one sentence.
    static func clipQuoted(_ text: String, limit: Int = 80) -> String {
        var out = ""
        var inQuote = false
        var quoted = 0
        for character in text {
            if character == "'" {
                inQuote.toggle()
                quoted = 0
            } else if inQuote {
                quoted += 1
                if quoted == limit + 1 { out.append("…") }
                if quoted > limit { continue }
            }
            out.append(character)
        }
        return out.count > 1000 ? String(out.prefix(1000)) + "…" : out
    }
}
