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
        /// A plan with more jobs or bytes than this is sent in slices of this size (capped at the
        /// script's 2000 jobs and 4 MiB per call), so no call blocks Redis for long.
        public var sliceJobs = 1000
        public var sliceBytes = 1 << 20
        public init() {}
    }

    /// Largest re-encoded `meta` the script accepts (queue.lua MAX_META).
    public static let maxMetaBytes = 65_536
    /// Most jobs and JSON bytes one `enqueue` or `enqueue_slice` call may carry (queue.lua).
    public static let maxSliceJobs = 2_000
    public static let maxSliceBytes = 4 << 20
    /// A job depending on more jobs than this goes in a slice of its own (queue.lua LINK_BUDGET).
    public static let fanInDependencies = 4_000

    /// What an accepted enqueue created.
    public struct Enqueued: Sendable, Equatable {
        public let generation: Int
        public let jobs: Int
        public let ready: Int
    }

    /// Enqueues a plan (JSON per protocols/schemas/plan.schema.json) atomically: either every job is
    /// written or, when the plan is refused, nothing is. A plan larger than one slice is staged in
    /// slices (`enqueue_begin`, `enqueue_slice`, `enqueue_commit`) and becomes visible at the last call;
    /// its jobs are sent after the jobs they depend on. `betweenSlices` runs after each slice with the
    /// number of jobs staged so far.
    public func enqueue(
        planJSON: String, replace: Bool = false, limits: Limits = Limits(),
        betweenSlices: (@Sendable (Int) async -> Void)? = nil
    ) async throws(JobQueueError) -> Enqueued {
        let sliceJobs = max(1, min(limits.sliceJobs, Self.maxSliceJobs))
        let sliceBytes = max(1, min(limits.sliceBytes, Self.maxSliceBytes))
        let object = (try? JSONSerialization.jsonObject(with: Data(planJSON.utf8))) as? [String: Any]
        let jobs = object?["jobs"] as? [Any]
        if let meta = object?["meta"], JSONSerialization.isValidJSONObject(meta),
            let data = try? JSONSerialization.data(withJSONObject: meta), data.count > Self.maxMetaBytes
        {
            throw .planRejected("meta is \(data.count) bytes, more than the limit of \(Self.maxMetaBytes)")
        }
        for case let job as [String: Any] in jobs ?? [] {
            guard let payload = job["payload"], JSONSerialization.isValidJSONObject(payload),
                let data = try? JSONSerialization.data(withJSONObject: payload), data.count > limits.maxPayloadBytes
            else { continue }
            throw .planRejected(
                "job '\((job["id"] as? String)?.prefix(200) ?? "?")' has a payload of \(data.count) bytes, more than the limit of \(limits.maxPayloadBytes)")
        }
        guard let object, let jobs, jobs.count > sliceJobs || planJSON.utf8.count > sliceBytes else {
            // Small, or not a plan at all: one call, and the script's sentence says what is wrong.
            return try Self.parseEnqueued(try await call("enqueue", [keys.machine, planJSON] + limitArguments(replace, limits)))
        }
        var head = object
        head["jobs"] = nil
        guard let headData = try? JSONSerialization.data(withJSONObject: head) else {
            throw .planRejected("the plan is not a JSON object")
        }
        let upload = "u\(UInt64.random(in: 0...UInt64.max))"
        try await enqueueBegin(upload: upload, planHeadJSON: String(decoding: headData, as: UTF8.self), replace: replace, limits: limits)
        for slice in try Self.slices(Self.dependenciesFirst(jobs), jobs: sliceJobs, bytes: sliceBytes) {
            let staged = try await enqueueSlice(upload: upload, jobsJSON: slice)
            await betweenSlices?(staged)
        }
        return try await enqueueCommit(upload: upload)
    }

    /// Starts a sliced enqueue (`enqueue_begin`): checks the plan without its jobs and the machine,
    /// and starts the staging that `upload` names; an earlier staging of the machine is dropped.
    public func enqueueBegin(upload: String, planHeadJSON: String, replace: Bool = false, limits: Limits = Limits()) async throws(JobQueueError) {
        _ = try await call("enqueue_begin", [keys.machine, upload, planHeadJSON] + limitArguments(replace, limits))
    }

    /// Stages one slice of jobs (a JSON array), and links what it left to `enqueue_link` (a job that
    /// depends on many jobs of earlier slices); returns the number of jobs staged so far. A refused
    /// slice drops the whole staging.
    public func enqueueSlice(upload: String, jobsJSON: String) async throws(JobQueueError) -> Int {
        let reply = try await call("enqueue_slice", [upload, jobsJSON])
        guard let items = reply.array, items.count == 3, let staged = items[1].int, var left = items[2].int else {
            throw .protocolViolation("enqueue_slice returned \(reply)")
        }
        while left > 0 {
            let linked = try await call("enqueue_link", [upload])
            guard let parts = linked.array, parts.count == 2, let rest = parts[1].int else {
                throw .protocolViolation("enqueue_link returned \(linked)")
            }
            left = rest
        }
        return Int(staged)
    }

    /// Makes the staged plan the machine's plan, at once.
    public func enqueueCommit(upload: String) async throws(JobQueueError) -> Enqueued {
        try Self.parseEnqueued(try await call("enqueue_commit", [upload]))
    }

    private func limitArguments(_ replace: Bool, _ limits: Limits) -> [String] {
        [String(limits.maxPayloadBytes), String(limits.maxJobs), replace ? "1" : "0", String(limits.retentionSeconds)]
    }

    private static func parseEnqueued(_ reply: RedisReply) throws(JobQueueError) -> Enqueued {
        guard let items = reply.array, items.count == 3, let generation = items[0].int, let jobs = items[1].int,
            let ready = items[2].int
        else { throw .protocolViolation("enqueue returned \(reply)") }
        return Enqueued(generation: Int(generation), jobs: Int(jobs), ready: Int(ready))
    }

    /// The jobs with each one after the jobs it depends on, otherwise in plan order (a plan already in
    /// that order is unchanged). A cycle is left as it is: the script refuses it.
    static func dependenciesFirst(_ jobs: [Any]) -> [Any] {
        func id(_ job: Any) -> String? { (job as? [String: Any])?["id"] as? String }
        func dependencies(_ job: Any) -> [String] { ((job as? [String: Any])?["depends_on"] as? [Any])?.compactMap { $0 as? String } ?? [] }
        var byID: [String: Any] = [:]
        for job in jobs { if let key = id(job) { byID[key] = job } }
        var seen = Set<String>()
        var ordered = true
        for job in jobs {
            if dependencies(job).contains(where: { byID[$0] != nil && !seen.contains($0) }) {
                ordered = false
                break
            }
            if let key = id(job) { seen.insert(key) }
        }
        if ordered { return jobs }
        var placed = Set<String>()
        var result: [Any] = []
        result.reserveCapacity(jobs.count)
        for root in jobs {
            guard let rootID = id(root), byID[rootID] != nil else {
                result.append(root)
                continue
            }
            if placed.contains(rootID) { continue }
            placed.insert(rootID)
            var stack: [(job: Any, id: String, next: [String], at: Int)] = [(root, rootID, dependencies(root), 0)]
            while !stack.isEmpty {
                let top = stack.count - 1
                if stack[top].at < stack[top].next.count {
                    let dep = stack[top].next[stack[top].at]
                    stack[top].at += 1
                    if let target = byID[dep], !placed.contains(dep) {
                        placed.insert(dep)
                        stack.append((target, dep, dependencies(target), 0))
                    }
                } else {
                    result.append(stack.removeLast().job)
                }
            }
        }
        return result
    }

    /// JSON arrays of at most `jobs` jobs and about `bytes` bytes (one job alone may be larger); a job
    /// with more than `fanInDependencies` dependencies is a slice of its own.
    static func slices(_ list: [Any], jobs: Int, bytes: Int) throws(JobQueueError) -> [String] {
        var result: [String] = []
        var part: [Data] = []
        var size = 2
        for job in list {
            guard JSONSerialization.isValidJSONObject(job), let data = try? JSONSerialization.data(withJSONObject: job) else {
                throw .planRejected("the plan has a job that is not a JSON object")
            }
            let fanIn = (((job as? [String: Any])?["depends_on"] as? [Any])?.count ?? 0) > fanInDependencies
            if !part.isEmpty && (fanIn || part.count == jobs || size + data.count + 1 > bytes) {
                result.append(join(part))
                part = []
                size = 2
            }
            if fanIn {
                result.append(join([data]))
                continue
            }
            part.append(data)
            size += data.count + 1
        }
        if !part.isEmpty { result.append(join(part)) }
        return result
    }

    private static func join(_ parts: [Data]) -> String {
        var data = Data("[".utf8)
        for (index, part) in parts.enumerated() {
            if index > 0 { data.append(UInt8(ascii: ",")) }
            data.append(part)
        }
        data.append(UInt8(ascii: "]"))
        return String(decoding: data, as: UTF8.self)
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

    /// Cancels every unfinished job of the plan; returns how many were cancelled. The plan is
    /// cancelled by the first call; its records follow in slices of `slice` jobs, one script call
    /// each, so a big plan never holds Redis for long (a call that fails midway is finished by the
    /// next cancel).
    @discardableResult
    public func cancel(plan: String, reason: String, slice: Int = 2000) async throws(JobQueueError) -> Int {
        var cancelled = 0
        while true {
            let step = try await cancelSlice(plan: plan, reason: reason, limit: slice)
            cancelled += step.cancelled
            if !step.more { return cancelled }
        }
    }

    /// One call of a sliced cancel: the first flips the plan and cancels what runs, each later one
    /// up to `limit` more records; `more` until the last.
    public func cancelSlice(plan: String, reason: String, limit: Int) async throws(JobQueueError) -> (cancelled: Int, more: Bool) {
        let reply = try await call("cancel", [plan, reason, String(max(1, limit))])
        guard let items = reply.array, items.count == 3, let cancelled = items[1].int else {
            throw .protocolViolation("cancel returned \(reply)")
        }
        return (Int(cancelled), items[2].int == 1)
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
            let reply: [RedisReply]
            do {
                reply = try await redis.send(["HMGET", key, "|plan_id", id] + Self.sideFields.map { "\(id)|\($0)" }).array ?? []
            } catch { throw .redis(error) }
            guard reply.count == 2 + Self.sideFields.count, reply[0].string == plan else { continue }
            guard let text = reply[1].string else { return nil }
            var record = Self.decodeRecord(text)
            for (name, value) in zip(Self.sideFields, reply.dropFirst(2)) {
                record[name] = Self.sideValue(name, value.string)
            }
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
            let ids = (hash["|ids"] ?? "").split(separator: " ").map(String.init)
            return ids.compactMap { id in
                guard let text = hash[id] else { return nil }
                var record = Self.decodeRecord(text)
                for name in Self.sideFields { record[name] = Self.sideValue(name, hash["\(id)|\(name)"]) }
                record["id"] = id
                record["plan"] = plan
                return record
            }
        }
        return []
    }

    /// A job's record (the JSON object stored at `<job_id>`), its values as text: integers in decimal.
    public static func decodeRecord(_ text: String) -> [String: String] {
        guard let object = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] else { return [:] }
        var record: [String: String] = [:]
        for (name, value) in object {
            if let text = value as? String {
                record[name] = text
            } else if let number = value as? NSNumber {
                let double = number.doubleValue
                record[name] = double.rounded() == double && abs(double) < 1e15 ? String(Int64(double)) : number.stringValue
            }
        }
        return record
    }

    /// The large fields stored beside a job's record as `<job_id>|<name>` (protocols/redis.md §4).
    static let sideFields = ["payload", "depends_on", "dependents", "result"]

    /// An absent or empty list of ids is `[]`, as protocol 2 stored it.
    private static func sideValue(_ name: String, _ value: String?) -> String? {
        if let value, !value.isEmpty { return value }
        return name == "depends_on" || name == "dependents" ? "[]" : nil
    }

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
