import ArgumentParser
import Foundation
import JobQueue
import RedisClient
import Scheduler
import Telemetry

struct EventsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "events",
        abstract: "Print a machine's step events (protocols/events.md), one JSON object per line, or as OTLP/JSON log records.",
        discussion: "Each JSON line is the stored event plus its stream entry id as stream_id; pass the last one to --since to go on from there. --format otlp prints one OTLP/JSON ExportLogsServiceRequest per line (up to 500 records each), which an OpenTelemetry collector's OTLP/HTTP receiver accepts at /v1/logs. --fleet reads the fleet stream of machine_ready / machine_failed announcements instead.")

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case json, otlp
    }

    @OptionGroup var queue: QueueOptions
    @OptionGroup var local: PrivateRedisOptions

    @Flag(help: "Keep printing new events until interrupted.")
    var follow = false

    @Option(help: "Only events after this stream entry id (e.g. 1732540000000-0).")
    var since: String?

    @Option(help: "json (one event per line) or otlp (OTLP/JSON log records).")
    var format: Format = .json

    @Flag(help: "Read the fleet stream (<prefix>:fleet:events) instead of one machine's events.")
    var fleet = false

    func validate() throws {
        if let since, since.range(of: #"^[0-9]{1,20}(-[0-9]{1,20})?$"#, options: .regularExpression) == nil {
            throw ValidationError("--since must be a stream entry id such as 1732540000000-0.")
        }
        if fleet && format == .otlp { throw ValidationError("--format otlp is for step events, not the fleet stream.") }
    }

    func run() async throws {
        try await reportingErrors {
            let (redisURL, offlineServer) = try await queue.readerURL(local, command: "events")
            defer { PrivateRedis.finish(offlineServer) }
            let keys: MachineKeys
            if fleet {
                keys = try MachineKeys(prefix: queue.keyPrefix, machine: (try? queue.machineID) ?? "fleet")
            } else {
                keys = try MachineKeys(prefix: queue.keyPrefix, machine: (try? queue.machineID) ?? (queue.isPrivate(redisURL) ? "local" : try queue.machineID))
            }
            let stream = fleet ? keys.fleetEvents : keys.events
            var configuration = try RedisConfiguration(url: redisURL)
            configuration.commandTimeout = max(configuration.commandTimeout, .seconds(5))
            // Following is a long-running reader that rides out restarts; a one-time read is not.
            if !follow { configuration = QueueOptions.oneShot(configuration) }
            let redis = RedisClient(configuration: configuration, label: "events")
            // Following ends on SIGTERM or SIGINT (within the second a blocking read lasts).
            let signals = follow ? await SignalWatch.start() : nil
            defer { signals?.cancel() }

            var last = since
            // History first, in pages.
            while signals?.received == nil {
                let start = last.map { "(" + $0 } ?? "-"
                let page = try await redis.send("XRANGE", stream, start, "+", "COUNT", "500").array ?? []
                let entries = page.compactMap(Entry.init)
                if !print(entries) { return }
                if let id = entries.last?.id { last = id }
                if page.count < 500 { break }
            }
            guard follow else { return }
            while signals?.received == nil {
                let reply = try await redis.send("XREAD", "COUNT", "500", "BLOCK", "1000", "STREAMS", stream, last ?? "0-0")
                // [[stream, [[id, [field, value...]], ...]]] or null on timeout
                guard let streams = reply.array, let first = streams.first?.array, first.count == 2,
                    let page = first[1].array
                else { continue }
                let entries = page.compactMap(Entry.init)
                // Nobody reads any more (`provision events --follow | head`): stop, as SIGPIPE did.
                if !print(entries) { return }
                if let id = entries.last?.id { last = id }
            }
        }
    }

    /// One stream entry: its id and the JSON it carries (`event` for step events, `data` for the fleet).
    struct Entry {
        let id: String
        let json: String

        init?(_ reply: RedisReply) {
            guard let parts = reply.array, parts.count == 2, let id = parts[0].string, let fields = parts[1].hash,
                let json = fields["event"] ?? fields["data"], json.hasPrefix("{")
            else { return nil }
            self.id = id
            self.json = json
        }

        /// The stored JSON with `stream_id` added first.
        var line: String {
            let rest = json.dropFirst()
            return "{\"stream_id\":\"\(id)\"" + (rest.hasPrefix("}") ? "" : ",") + rest
        }
    }

    /// Prints the entries; false when standard output is gone.
    @discardableResult
    private func print(_ entries: [Entry]) -> Bool {
        guard !entries.isEmpty else { return true }
        switch format {
        case .json:
            return say(entries.map(\.line).joined(separator: "\n"))
        case .otlp:
            let events = entries.compactMap { entry -> [String: EventValue]? in
                guard var event = StepEvent.decode(entry.json) else { return nil }
                event["stream_id"] = .string(entry.id)
                return event
            }
            return say(OTLPLogs.request(events: events))
        }
    }
}
