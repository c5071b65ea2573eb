import JobQueue
import Telemetry

/// Renders a machine's metrics in the Prometheus text exposition format (version 0.0.4): gauges
/// from the snapshot (state, jobs by state, workers, download rate) and counters and a histogram
/// from `B:metrics` (bytes downloaded, attempts by outcome, job durations).
package enum PrometheusText {
    package static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    package static func render(_ snapshot: MachineSnapshot, counters: [String: Int64]) -> String {
        var out = Output(machine: snapshot.status.machineID)
        let status = snapshot.status

        out.family("provision_machine_state", "gauge", "1 for the machine's current condition (stalled: no worker heartbeat for the stall time).")
        for condition in ["idle", "pending", "running", "stalled", "ready", "failed", "cancelled"] {
            out.sample("provision_machine_state", ["state": condition], snapshot.condition.rawValue == condition ? 1 : 0)
        }
        out.family("provision_machine_ready", "gauge", "1 when every job of the current plan succeeded.")
        out.sample("provision_machine_ready", [:], snapshot.condition == .ready ? 1 : 0)
        out.family("provision_plan_generation", "gauge", "Plans enqueued for this machine so far.")
        out.sample("provision_plan_generation", [:], Double(status.generation))

        out.family("provision_jobs", "gauge", "Jobs of the current plan by state.")
        for state in ["waiting", "ready", "active", "delayed", "succeeded", "failed", "dead", "cancelled"] {
            out.sample("provision_jobs", ["state": state], Double(status.count(state)))
        }
        out.family("provision_jobs_total_in_plan", "gauge", "Jobs in the current plan.")
        out.sample("provision_jobs_total_in_plan", [:], Double(status.count("total")))
        out.family("provision_plan_retries", "gauge", "Retries scheduled in the current plan (failed attempts retried and expired leases taken back).")
        out.sample("provision_plan_retries", [:], Double(status.count("retries")))
        out.family("provision_plan_leases_reclaimed", "gauge", "Expired leases taken back in the current plan.")
        out.sample("provision_plan_leases_reclaimed", [:], Double(status.count("reclaimed")))

        out.family("provision_workers_registered", "gauge", "Worker processes registered with the queue.")
        out.sample("provision_workers_registered", [:], Double(snapshot.workers.registered))
        out.family("provision_workers_alive", "gauge", "Worker processes whose last heartbeat is younger than the stall time.")
        out.sample("provision_workers_alive", [:], Double(snapshot.workers.alive))

        // Counters from B:metrics.
        var kinds = Set<String>()
        var attempts: [(kind: String, outcome: String, value: Int64)] = []
        var buckets: [String: [Int: Int64]] = [:]
        var sums: [String: Int64] = [:]
        for (field, value) in counters {
            let parts = field.split(separator: "|", omittingEmptySubsequences: false).map(String.init)
            switch parts.first {
            case "job_attempts" where parts.count == 3:
                attempts.append((parts[1], parts[2], value))
            case "job_duration_bucket" where parts.count == 3:
                if let index = Int(parts[2]) {
                    buckets[parts[1], default: [:]][index, default: 0] += value
                    kinds.insert(parts[1])
                }
            case "job_duration_sum_ms" where parts.count == 2:
                sums[parts[1], default: 0] += value
                kinds.insert(parts[1])
            default: break
            }
        }
        out.family("provision_job_attempts_total", "counter", "Job attempts that ended, by kind and outcome (succeeded, retried, dead), since the machine's first plan.")
        for item in attempts.sorted(by: { ($0.kind, $0.outcome) < ($1.kind, $1.outcome) }) {
            out.sample("provision_job_attempts_total", ["kind": item.kind, "outcome": item.outcome], Double(item.value))
        }
        out.family("provision_job_retries_total", "counter", "Failed job attempts that were retried, since the machine's first plan.")
        out.sample("provision_job_retries_total", [:], Double(attempts.filter { $0.outcome == "retried" }.reduce(0) { $0 + $1.value }))

        out.family("provision_download_bytes_total", "counter", "Bytes that downloads reported as received.")
        out.sample("provision_download_bytes_total", [:], Double(counters[MetricField.bytesDownloaded] ?? 0))
        let fresh = snapshot.activeJobs.filter { job in
            job.progressAt.map { snapshot.serverTime - $0 < 5_000 } ?? false
        }
        out.family("provision_download_bytes_per_second", "gauge", "Download rate of the running jobs (sum of their latest reported rates).")
        out.sample("provision_download_bytes_per_second", [:], fresh.compactMap(\.bytesPerSecond).reduce(0, +))
        out.family("provision_download_bytes_remaining", "gauge", "Bytes the running downloads still expect.")
        out.sample(
            "provision_download_bytes_remaining", [:],
            Double(snapshot.activeJobs.reduce(Int64(0)) { $0 + max(0, ($1.bytesTotal ?? 0) - ($1.bytesDone ?? 0)) }))

        out.family("provision_job_duration_seconds", "histogram", "Duration of job attempts that ended, by kind.")
        for kind in kinds.sorted() {
            let counts = buckets[kind] ?? [:]
            var cumulative: Int64 = 0
            for (index, bound) in MetricField.durationBuckets.enumerated() {
                cumulative += counts[index] ?? 0
                out.sample("provision_job_duration_seconds_bucket", ["kind": kind, "le": number(bound)], Double(cumulative))
            }
            cumulative += counts[MetricField.durationBuckets.count] ?? 0
            out.sample("provision_job_duration_seconds_bucket", ["kind": kind, "le": "+Inf"], Double(cumulative))
            out.sample("provision_job_duration_seconds_sum", ["kind": kind], Double(sums[kind] ?? 0) / 1000)
            out.sample("provision_job_duration_seconds_count", ["kind": kind], Double(cumulative))
        }

        out.family("provision_events_dropped_total", "counter", "Step events dropped because Redis was unreachable for too long.")
        out.sample("provision_events_dropped_total", [:], Double(counters[MetricField.eventsDropped] ?? 0))
        return out.text
    }

    /// A number as Prometheus writes it: integers without a fraction.
    static func number(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return String(value)
    }

    private struct Output {
        let machine: String
        var text = ""

        mutating func family(_ name: String, _ type: String, _ help: String) {
            text += "# HELP \(name) \(help.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\n", with: "\\n"))\n"
            text += "# TYPE \(name) \(type)\n"
        }

        mutating func sample(_ name: String, _ labels: [String: String], _ value: Double) {
            var all = [("machine_id", machine)]
            all += labels.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
            let rendered = all.map { "\($0.0)=\"\(escape($0.1))\"" }.joined(separator: ",")
            text += "\(name){\(rendered)} \(PrometheusText.number(value))\n"
        }

        private func escape(_ value: String) -> String {
            value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                .replacingOccurrences(of: "\n", with: "\\n")
        }
    }
}
