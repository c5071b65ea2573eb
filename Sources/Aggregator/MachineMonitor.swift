import Foundation
import JobQueue
import RedisClient

/// Reads a machine's snapshot from Redis in two round trips, without changing anything: the status
/// hash, failures, heartbeats, the server clock, running jobs and their progress. A machine is
/// `stalled` when its plan is pending or running, it was enqueued more than `stallAfter` ago, and no
/// worker has sent a heartbeat for `stallAfter`.
package final class MachineMonitor: Sendable {
    package let keys: MachineKeys
    package let stallAfter: Duration
    private let redis: RedisClient

    package init(redis: RedisClient, keys: MachineKeys, stallAfter: Duration = .seconds(30)) {
        self.redis = redis
        self.keys = keys
        self.stallAfter = stallAfter
    }

    package func snapshot() async throws(JobQueueError) -> MachineSnapshot {
        let replies: [RedisReply]
        do {
            replies = try await redis.pipeline([
                ["HGETALL", keys.status], ["LRANGE", keys.failures, "0", "-1"],
                ["ZRANGE", keys.heartbeats, "0", "-1", "WITHSCORES"], ["HLEN", keys.workers], ["TIME"],
                ["ZRANGE", keys.active, "0", "-1"], ["HGETALL", keys.progress],
            ])
        } catch { throw .redis(error) }
        // An error reply (WRONGTYPE, OOM, …) is the server's sentence, not a shape to dump.
        for case .error(let message) in replies {
            throw .redis(.server(server: redis.configuration.serverDescription, command: "the status read", message: message))
        }
        guard replies.count == 7, let hash = replies[0].hash, let reasons = replies[1].array,
            let beats = replies[2].array, let time = replies[4].array, time.count == 2,
            let seconds = time[0].int, let micros = time[1].int, let active = replies[5].array
        else { throw .protocolViolation("the snapshot read returned \(RedisReply.array(replies))") }
        let status = MachineStatus(machineID: keys.machine, hash: hash, reasons: reasons.compactMap(\.string))
        let now = Int(seconds) * 1000 + Int(micros) / 1000
        let stallMs = Int(stallAfter / .milliseconds(1))

        var scores: [Int] = []
        var index = 1
        while index < beats.count {
            if let score = beats[index].string.flatMap(Double.init) { scores.append(Int(score)) }
            index += 2
        }
        let workers = MachineSnapshot.Workers(
            registered: Int(replies[3].int ?? 0), alive: scores.filter { now - $0 <= stallMs }.count,
            lastHeartbeatAt: scores.max())

        let ids = active.compactMap(\.string)
        var jobs: [MachineSnapshot.ActiveJob] = []
        if let plan = status.planID, !ids.isEmpty {
            // A job's record is the field `<job_id>` of B:jobs (JSON); its `|plan_id` says whose they are.
            let row: RedisReply
            do { row = try await redis.send(["HMGET", keys.jobs, "|plan_id"] + ids) } catch { throw .redis(error) }
            let values = row.array ?? []
            let progress = replies[6].hash ?? [:]
            for (id, value) in zip(ids, values.dropFirst()) where values.first?.string == plan {
                guard let text = value.string else { continue }
                let f = JobQueue.decodeRecord(text)
                guard f["state"] == "active" else { continue }
                var job = MachineSnapshot.ActiveJob(
                    job: id, kind: f["kind"] ?? "", label: f["label"].flatMap { $0.isEmpty ? nil : $0 },
                    attempt: f["attempts"].flatMap { Int($0) }, worker: f["owner"], startedAt: f["started_at"].flatMap { Int($0) })
                if let text = progress[id], let record = try? JSONDecoder().decode(ProgressRecord.self, from: Data(text.utf8)),
                    record.plan == plan, record.attempt == nil || record.attempt == job.attempt
                {
                    job.bytesDone = record.bytesDone
                    job.bytesTotal = record.bytesTotal
                    job.bytesPerSecond = record.bytesPerSecond
                    job.progressAt = record.atMs
                }
                jobs.append(job)
            }
        }
        jobs.sort { ($0.startedAt ?? 0, $0.job) < ($1.startedAt ?? 0, $1.job) }

        var condition = MachineSnapshot.Condition(rawValue: status.state.rawValue) ?? .idle
        if status.state == .pending || status.state == .running {
            let silent = workers.lastHeartbeatAt.map { now - $0 > stallMs } ?? true
            let old = now - (status.enqueuedAt ?? now) > stallMs
            if silent && old { condition = .stalled }
        }
        return MachineSnapshot(
            status: status, serverTime: now, condition: condition, workers: workers, activeJobs: jobs,
            stallAfterMilliseconds: stallMs)
    }

    /// The counters of `B:metrics`.
    package func counters() async throws(JobQueueError) -> [String: Int64] {
        do {
            let hash = try await redis.send("HGETALL", keys.metrics).hash ?? [:]
            return hash.compactMapValues { Int64($0) }
        } catch { throw .redis(error) }
    }
}

/// A job's progress record in `B:progress` (written by the worker's telemetry).
struct ProgressRecord: Decodable {
    var plan: String
    var kind: String?
    var attempt: Int?
    var bytesDone: Int64
    var bytesTotal: Int64?
    var bytesPerSecond: Double?
    var atMs: Int?

    enum CodingKeys: String, CodingKey {
        case plan, kind, attempt, bytesDone = "bytes_done", bytesTotal = "bytes_total"
        case bytesPerSecond = "bytes_per_second", atMs = "at_ms"
    }
}
