/// The fields of a machine's `B:metrics` hash: counters that only grow, added to by every worker
/// (`HINCRBY`), read by the health server's `/metrics`. Labels are joined with `|`.
package enum MetricField {
    /// Bytes that downloads reported as received.
    package static let bytesDownloaded = "bytes_downloaded"
    /// Events a worker dropped because Redis was unreachable for too long.
    package static let eventsDropped = "events_dropped"

    /// Upper bounds (seconds) of the job duration histogram.
    package static let durationBuckets: [Double] = [
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600,
    ]

    /// Jobs of `kind` whose attempt took at most `durationBuckets[index]` (not cumulative; `index ==
    /// durationBuckets.count` is the overflow bucket).
    package static func durationBucket(kind: String, index: Int) -> String { "job_duration_bucket|\(kind)|\(index)" }
    package static func durationSumMilliseconds(kind: String) -> String { "job_duration_sum_ms|\(kind)" }
    package static func durationCount(kind: String) -> String { "job_duration_count|\(kind)" }
    /// Attempts that ended in each outcome: `succeeded`, `retried`, `dead`.
    package static func attempts(kind: String, outcome: String) -> String { "job_attempts|\(kind)|\(outcome)" }

    /// The histogram bucket of a duration.
    package static func bucketIndex(seconds: Double) -> Int {
        durationBuckets.firstIndex { seconds <= $0 } ?? durationBuckets.count
    }
}
