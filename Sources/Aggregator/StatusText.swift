import Foundation
import JobQueue

/// The machine status as text for people: a summary (`provision status`), and a live view with a
/// line and progress bar per running job, totals and an ETA (`provision status --wait` on a terminal).
package enum StatusText {
    /// The summary: state, counts, retries, time taken, failures.
    package static func summary(_ snapshot: MachineSnapshot) -> String {
        let status = snapshot.status
        var lines = ["machine \(status.machineID): \(status.state.rawValue)"]
        if let plan = status.planID {
            lines[0] += " (plan \(plan), generation \(status.generation))"
            let shown = ["succeeded", "active", "ready", "waiting", "delayed", "failed", "dead", "cancelled"]
            let parts = shown.filter { status.count($0) > 0 }.map { "\(status.count($0)) \($0)" }
            lines.append("  jobs: \(status.count("total")) total" + (parts.isEmpty ? "" : " · " + parts.joined(separator: " · ")))
            if status.count("retries") > 0 || status.count("reclaimed") > 0 {
                lines.append("  retries: \(status.count("retries")), leases taken back: \(status.count("reclaimed"))")
            }
            if let start = status.enqueuedAt, let end = status.finishedAt {
                lines.append(String(format: "  took %.2f s from enqueue", Double(end - start) / 1000))
            }
        }
        if snapshot.stalled, let reason = snapshot.reason { lines.append("  ⚠ \(reason)") }
        for failure in status.failures.prefix(20) {
            lines.append("  ✗ \(failure.job): \(failure.errorType): \(failure.error)")
        }
        if status.failures.count > 20 { lines.append("  … and \(status.failures.count - 20) more failures") }
        return lines.joined(separator: "\n")
    }

    /// The live view, each line at most `width` columns.
    package static func live(_ snapshot: MachineSnapshot, width: Int = 100, maxJobs: Int = 30) -> [String] {
        let status = snapshot.status
        let width = max(40, width)
        var header = "machine \(status.machineID): \(snapshot.condition.rawValue)"
        if let plan = status.planID {
            header += " · plan \(plan)"
            header += " · \(status.count("succeeded"))/\(status.count("total")) succeeded · \(status.count("active")) active"
            let failed = status.count("failed") + status.count("dead")
            if failed > 0 { header += " · \(failed) failed" }
            if status.count("retries") > 0 { header += " · \(status.count("retries")) retries" }
            if let start = status.enqueuedAt {
                header += " · " + duration(Double((status.finishedAt ?? snapshot.serverTime) - start) / 1000)
            }
        }
        var lines = [clip(header, width)]
        let downloads = snapshot.activeJobs.filter { $0.bytesTotal != nil || $0.bytesDone != nil }
        if !downloads.isEmpty {
            let done = downloads.reduce(Int64(0)) { $0 + ($1.bytesDone ?? 0) }
            let total = downloads.reduce(Int64(0)) { $0 + ($1.bytesTotal ?? $1.bytesDone ?? 0) }
            let rate = downloads.compactMap(\.bytesPerSecond).reduce(0, +)
            var line = "  downloads: \(bytes(done)) of \(bytes(total)) · \(bytes(Int64(rate)))/s"
            if rate > 0, total > done { line += " · ETA \(duration(Double(total - done) / rate))" }
            lines.append(clip(line, width))
        }
        let nameWidth = min(32, max(12, snapshot.activeJobs.map { $0.job.count }.max() ?? 12))
        for job in snapshot.activeJobs.prefix(maxJobs) {
            let name = pad(clip(job.job, nameWidth), nameWidth)
            var line = "  \(name) "
            if let done = job.bytesDone, let total = job.bytesTotal, total > 0 {
                let fraction = min(1, max(0, Double(done) / Double(total)))
                line += bar(fraction, width: 20) + String(format: " %3d%%", Int(fraction * 100))
                line += "  \(bytes(done))/\(bytes(total))"
                if let rate = job.bytesPerSecond, rate > 0 {
                    line += "  \(bytes(Int64(rate)))/s  ETA \(duration(Double(total - done) / rate))"
                }
            } else {
                let elapsed = job.startedAt.map { Double(snapshot.serverTime - $0) / 1000 } ?? 0
                line += "running \(duration(elapsed))"
                if let done = job.bytesDone { line += " · \(bytes(done))" }
            }
            if let attempt = job.attempt, attempt > 1 { line += " (attempt \(attempt))" }
            lines.append(clip(line, width))
        }
        if snapshot.activeJobs.count > maxJobs { lines.append("  … and \(snapshot.activeJobs.count - maxJobs) more running") }
        if snapshot.condition != .running, snapshot.condition != .ready, let reason = snapshot.reason {
            lines.append(clip("  \(reason)", width))
        }
        for failure in status.failures.prefix(5) {
            lines.append(clip("  ✗ \(failure.job): \(failure.errorType): \(failure.error)", width))
        }
        return lines
    }

    static func bar(_ fraction: Double, width: Int) -> String {
        let filled = Int((fraction * Double(width)).rounded(.down))
        return "[" + String(repeating: "█", count: filled) + String(repeating: "░", count: width - filled) + "]"
    }

    /// `1.5 GiB`, `820 KiB`, `12 B`.
    package static func bytes(_ value: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var amount = Double(max(0, value))
        var unit = 0
        while amount >= 1024, unit < units.count - 1 {
            amount /= 1024
            unit += 1
        }
        return unit == 0 ? "\(Int(amount)) B" : String(format: amount < 10 ? "%.1f" : "%.0f", amount) + " " + units[unit]
    }

    /// `45s`, `3m05s`, `1h02m`.
    package static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite, seconds >= 0 else { return "?" }
        let s = Int(seconds.rounded())
        if s < 60 { return seconds < 10 ? String(format: "%.1fs", seconds) : "\(s)s" }
        if s < 3600 { return String(format: "%dm%02ds", s / 60, s % 60) }
        return String(format: "%dh%02dm", s / 3600, (s % 3600) / 60)
    }

    static func clip(_ text: String, _ width: Int) -> String {
        text.count <= width ? text : String(text.prefix(width - 1)) + "…"
    }

    static func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
    }
}
