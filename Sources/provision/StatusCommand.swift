import ArgumentParser
import Foundation
import JobQueue
import RedisClient

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show a machine's plan state and job counts; --wait exits 0 on ready, 1 on failed, 2 on timeout.")

    @OptionGroup var queue: QueueOptions

    @Flag(help: "Wait until the machine is ready, failed or cancelled.")
    var wait = false

    @Option(help: "With --wait: give up after this many seconds (exit 2).")
    var timeout: Double = 3600

    @Flag(help: "Print JSON (protocols/schemas/status.schema.json).")
    var json = false

    func run() async throws {
        try await reportingErrors {
            let jobQueue = try JobQueue(redis: try RedisClient(url: try queue.redisURL), machine: try queue.machineID, prefix: queue.keyPrefix)
            var status = try await jobQueue.status()
            if wait {
                let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
                while !status.isSettled && status.state != .failed {
                    if ContinuousClock.now >= deadline {
                        say(render(status))
                        throw ExitCode(2)
                    }
                    try await Task.sleep(for: .milliseconds(200))
                    status = try await jobQueue.status()
                }
            }
            say(render(status))
            if wait && status.state != .ready { throw ExitCode(1) }
        }
    }

    private func render(_ status: MachineStatus) -> String {
        json ? renderJSON(status) : renderText(status)
    }
}

func renderJSON(_ status: MachineStatus) -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    return (try? encoder.encode(status)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
}

func renderText(_ status: MachineStatus) -> String {
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
    for failure in status.failures.prefix(20) {
        lines.append("  ✗ \(failure.job): \(failure.errorType): \(failure.error)")
    }
    if status.failures.count > 20 { lines.append("  … and \(status.failures.count - 20) more failures") }
    return lines.joined(separator: "\n")
}
