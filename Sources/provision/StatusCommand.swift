import Aggregator
import ArgumentParser
import Foundation
import JobQueue
import RedisClient
import RedisServerProcess

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show a machine's plan state, job counts and running jobs; --wait exits 0 on ready, 1 on failed, 2 on timeout, 3 when Redis cannot be used.",
        discussion: "On a terminal, --wait redraws a live view (a line and progress bar per running job, totals, ETA) until the machine settles. --json prints one stable JSON object (protocols/schemas/status.schema.json).")

    @OptionGroup var queue: QueueOptions
    @OptionGroup var telemetry: TelemetryOptions
    @OptionGroup var local: PrivateRedisOptions

    @Flag(help: "Wait until the machine is ready, failed or cancelled.")
    var wait = false

    @Option(help: "With --wait: give up after this many seconds (exit 2).")
    var timeout: Double = 3600

    @Flag(help: "Print JSON (protocols/schemas/status.schema.json).")
    var json = false

    @Flag(inversion: .prefixedNo, help: "With --wait on a terminal, redraw a live view.")
    var live = true

    @Flag(help: "List every job of the current plan with its outcome (state, attempts, error or result).")
    var jobs = false

    func validate() throws {
        guard timeout.isFinite, timeout >= 0, timeout <= 366 * 86400 else {
            throw ValidationError("--timeout must be between 0 and 31622400 seconds.")
        }
    }

    func run() async throws {
        try await reportingErrors {
            let reader: (url: String, server: LocalRedisServer?)
            do {
                reader = try await queue.readerURL(local, command: "status")
            } catch let error as UserFacingError {
                // No Redis to read (up's private one stopped): a Redis problem, not the machine's.
                throw unreachable(error)
            }
            let (redisURL, offlineServer) = reader
            defer { PrivateRedis.finish(offlineServer) }
            let machine = try? queue.machineID
            let keys = try MachineKeys(prefix: queue.keyPrefix, machine: machine ?? (queue.isPrivate(redisURL) ? "local" : try queue.machineID))
            let redis = RedisClient(configuration: QueueOptions.oneShot(try RedisConfiguration(url: redisURL)), label: "status")
            let monitor = MachineMonitor(redis: redis, keys: keys, stallAfter: telemetry.stallDuration)
            var snapshot: MachineSnapshot
            do {
                snapshot = try await monitor.snapshot()
            } catch {
                throw unreachable(error)
            }
            let view = (wait && live && !json && isatty(STDOUT_FILENO) == 1) ? LiveView() : nil
            // The last step event seen: the wait wakes on the next one (the flip writes one) instead
            // of a fixed pace, so a script timing enqueue → ready measures the machine, not the poll.
            var lastEvent = wait ? ((try? await redis.send("XREVRANGE", keys.events, "+", "-", "COUNT", "1"))?.array?.first?.array?.first?.string ?? "0-0") : "0-0"
            if wait {
                let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
                // A Redis restarting while we wait is not the machine failing: reads that fail on
                // the connection are tried again until the deadline.
                var lost: (any Error)?
                while !snapshot.status.isSettled && snapshot.status.state != .failed {
                    view?.draw(StatusText.live(snapshot, width: terminalWidth()))
                    if ContinuousClock.now >= deadline {
                        view?.clear()
                        if let lost { throw unreachable(lost) }
                        say(render(snapshot, jobs: nil))
                        throw ExitCode(2)
                    }
                    do {
                        let woken = try await redis.send("XREAD", "COUNT", "1000", "BLOCK", view == nil ? "200" : "250", "STREAMS", keys.events, lastEvent)
                        if let last = woken.array?.first?.array?.last?.array?.last?.array?.first?.string { lastEvent = last }
                    } catch {
                        // The snapshot below tells a lost Redis apart; only the pace falls back.
                        try await Task.sleep(for: .milliseconds(200))
                    }
                    do {
                        snapshot = try await monitor.snapshot()
                        lost = nil
                    } catch where Self.isTransport(error) {
                        lost = error
                    }
                }
                view?.clear()
            }
            var jobRecords: [[String: String]] = []
            if jobs, let plan = snapshot.status.planID {
                let jobQueue = try JobQueue(redis: redis, machine: keys.machine, prefix: queue.keyPrefix)
                do {
                    jobRecords = try await jobQueue.jobs(plan: plan)
                } catch {
                    // A Redis problem, not the machine's: exit 3, never 1.
                    throw unreachable(error)
                }
            }
            say(render(snapshot, jobs: jobs ? jobRecords : nil))
            if wait && snapshot.status.state != .ready { throw ExitCode(1) }
        }
    }

    /// Exit status when Redis cannot be reached or answered with an error: never 1 (failed) or 2
    /// (timeout), which are the machine's.
    static let unreachableExitCode: Int32 = 3

    static func isTransport(_ error: any Error) -> Bool {
        if case .redis(let redis) = error as? JobQueueError { return redis.isRetryable }
        return false
    }

    /// Prints the Redis problem as one sentence and gives the exit status for it.
    private func unreachable(_ error: any Error) -> ExitCode {
        writeAll(STDERR_FILENO, "provision: \(processRedactor.scrub("\(error)"))\n")
        return ExitCode(Self.unreachableExitCode)
    }

    private func render(_ snapshot: MachineSnapshot, jobs: [[String: String]]?) -> String {
        if json {
            guard let jobs, var object = (try? JSONSerialization.jsonObject(with: Data(snapshot.json.utf8))) as? [String: Any] else { return snapshot.json }
            object["jobs"] = jobs.map(Self.jobEntry)
            let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data(snapshot.json.utf8)
            return String(decoding: data, as: UTF8.self)
        }
        var text = StatusText.summary(snapshot)
        if !snapshot.activeJobs.isEmpty {
            text += "\n" + StatusText.live(snapshot, width: terminalWidth()).dropFirst().joined(separator: "\n")
        }
        if let jobs {
            let width = min(48, jobs.map { ($0["id"] ?? "").count }.max() ?? 0)
            for record in jobs {
                let id = (record["id"] ?? "?").padding(toLength: width, withPad: " ", startingAt: 0)
                let state = (record["state"] ?? "?").padding(toLength: 10, withPad: " ", startingAt: 0)
                var line = "  \(id)  \(state) \(record["kind"] ?? "?"), attempt \(record["attempts"] ?? "0")"
                if let error = record["error"], !error.isEmpty, record["state"] != "succeeded" {
                    line += ": \(record["error_type"] ?? "error"): \(error.prefix(300))"
                } else if let notes = Self.notes(record["result"]) {
                    line += ": " + notes
                }
                text += "\n" + line
            }
        }
        return text
    }

    /// What a job's result says that a person must see: install.py error lines, dropped builds.
    static func notes(_ result: String?) -> String? {
        guard let result, let object = (try? JSONSerialization.jsonObject(with: Data(result.utf8))) as? [String: Any] else { return nil }
        var notes: [String] = []
        for script in object["scripts"] as? [[String: Any]] ?? [] {
            if let lines = script["error_lines"] as? [String], let name = script["name"] as? String {
                notes.append("install.py of \(name) printed: \(lines.joined(separator: " / ").prefix(200))")
            }
        }
        for choice in object["exclusive"] as? [[String: Any]] ?? [] {
            notes.append("kept \(choice["kept"] as? String ?? "?") over \((choice["dropped"] as? [String] ?? []).joined(separator: ", "))")
        }
        return notes.isEmpty ? nil : notes.joined(separator: "; ")
    }

    static func jobEntry(_ record: [String: String]) -> [String: Any] {
        var entry: [String: Any] = ["job": record["id"] ?? "", "kind": record["kind"] ?? "", "state": record["state"] ?? ""]
        if let attempts = record["attempts"].flatMap(Int.init) { entry["attempts"] = attempts }
        if let type = record["error_type"], !type.isEmpty { entry["error_type"] = type }
        if let error = record["error"], !error.isEmpty { entry["error"] = error }
        if let result = record["result"], let object = (try? JSONSerialization.jsonObject(with: Data(result.utf8))) as? [String: Any] { entry["result"] = object }
        return entry
    }
}

/// Redraws a block of lines in place on a terminal (cursor up, clear to the end of the screen).
final class LiveView {
    private var drawn = 0

    func draw(_ lines: [String]) {
        var text = drawn > 0 ? "\u{1B}[\(drawn)F\u{1B}[J" : ""
        text += lines.joined(separator: "\n") + "\n"
        FileHandle.standardOutput.write(Data(processRedactor.scrub(text).utf8))
        drawn = lines.count
    }

    func clear() {
        if drawn > 0 { FileHandle.standardOutput.write(Data("\u{1B}[\(drawn)F\u{1B}[J".utf8)) }
        drawn = 0
    }
}

/// Columns of the terminal on standard output (100 when it is not a terminal).
func terminalWidth() -> Int {
    var size = winsize()
    if ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 { return Int(size.ws_col) }
    return 100
}
