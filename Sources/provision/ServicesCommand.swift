import ArgumentParser
import Foundation
import JobQueue
import RedisClient
import Services

struct ServicesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "services",
        abstract: "List the machine's ComfyUI instances (name, pid, port, GPU, state, restarts, uptime) from Redis, or with --dry-run what would run.")

    @OptionGroup var queue: QueueOptions
    @OptionGroup var services: ServicesOptions

    @Option(help: "The machine's workspace (env PROVISION_WORKSPACE, default /workspace).")
    var workspace: String?

    @Flag(help: "Print the instances that would run here (hardware detection, commands, ports, environment) and exit.")
    var dryRun = false

    @Flag(help: "Print the instances' records as JSON.")
    var json = false

    func run() async throws {
        try await reportingErrors {
            if dryRun {
                let root = workspace ?? ProcessInfo.processInfo.environment["PROVISION_WORKSPACE"] ?? "/workspace"
                let hardware = await Hardware.detect()
                let instances = try services.planner(workspace: root).instances(hardware: hardware, workers: try services.workers())
                if json {
                    let encoder = JSONEncoder()
                    encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
                    say(String(decoding: try encoder.encode(instances), as: UTF8.self))
                } else {
                    say(InstancePlanner.describe(instances, hardware: hardware))
                }
                return
            }
            let keys = ServiceKeys(machine: try MachineKeys(prefix: queue.keyPrefix, machine: try queue.machineID))
            let client = try RedisClient(url: try queue.redisURL, label: "services")
            defer { client.close() }
            let hash = try await client.send(["HGETALL", keys.services]).hash ?? [:]
            let records = hash.filter { $0.key != ServiceKeys.supervisorField }.compactMap {
                try? JSONSerialization.jsonObject(with: Data($0.value.utf8)) as? [String: Any]
            }.sorted { ($0["index"] as? Int ?? 0) < ($1["index"] as? Int ?? 0) }
            if json {
                say("[" + hash.filter { $0.key != ServiceKeys.supervisorField }.sorted { $0.key < $1.key }.map(\.value).joined(separator: ",") + "]")
                return
            }
            if hash[ServiceKeys.supervisorField] == nil {
                say("no service supervisor is running for machine \(keys.machine.machine)")
            }
            say(Self.table(records, now: Int64(Date().timeIntervalSince1970 * 1000)))
        }
    }

    static func table(_ records: [[String: Any]], now: Int64) -> String {
        var rows = [["NAME", "PID", "PORT", "GPU", "STATE", "RESTARTS", "UPTIME", "LAST EXIT / REASON"]]
        for record in records {
            let uptime = (record["serving_since"] as? Int64 ?? (record["serving_since"] as? Int).map(Int64.init)).map { formatUptime(now - $0) } ?? "-"
            let failure = (record["failure"] as? [String: Any])?["message"] as? String
            rows.append([
                record["name"] as? String ?? "?", (record["pid"] as? Int).map(String.init) ?? "-",
                (record["port"] as? Int).map(String.init) ?? "-", (record["gpu"] as? Int).map(String.init) ?? "cpu",
                record["state"] as? String ?? "?", (record["restarts"] as? Int).map(String.init) ?? "0", uptime,
                failure ?? record["last_exit"] as? String ?? "",
            ])
        }
        if records.isEmpty { return "no ComfyUI instance recorded" }
        let widths = (0..<rows[0].count).map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { $0.offset == row.count - 1 ? $0.element : $0.element.padding(toLength: widths[$0.offset], withPad: " ", startingAt: 0) }
                .joined(separator: "  ")
        }.joined(separator: "\n")
    }

    static func formatUptime(_ milliseconds: Int64) -> String {
        let seconds = max(0, milliseconds / 1000)
        if seconds < 60 { return "\(seconds)s" }
        if seconds < 3600 { return "\(seconds / 60)m\(seconds % 60)s" }
        return "\(seconds / 3600)h\(seconds % 3600 / 60)m"
    }
}
