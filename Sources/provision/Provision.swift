import ArgumentParser
import Foundation
import Logging
import Telemetry

/// The `provision` command line: thin wiring of the queue, workers and status.
@main
struct Provision: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "provision",
        abstract: "Make GPU machines ready to run ComfyUI workflows: plans of install and download jobs in Redis, run by a pool of workers.",
        subcommands: [
            UpCommand.self, DemoCommand.self, WorkerCommand.self, WorkerProcessCommand.self, EnqueueCommand.self,
            StatusCommand.self, EventsCommand.self, CancelCommand.self, RetireCommand.self, DownloadCommand.self, AnalyzeCommand.self,
            LockCommand.self, PlanCommand.self, VerifyCommand.self, ExportCommand.self,
        ])
}

/// Options every command that talks to one machine's queue shares.
struct QueueOptions: ParsableArguments {
    @Option(help: "Redis URL: redis://[user:password@]host:port/db or unix:///path.sock (env REDIS_URL).")
    var redis: String?

    @Option(help: "The machine whose queue to use (env MACHINE_ID).")
    var machine: String?

    @Option(help: "Key prefix of every Redis key (env PROVISION_PREFIX).")
    var prefix: String?

    @Option(help: "Log level: trace, debug, info, notice, warning, error.")
    var logLevel: String?

    var redisURL: String {
        get throws {
            if let redis { return redis }
            let env = ProcessInfo.processInfo.environment
            if let url = env["PROVISION_REDIS_URL"] ?? env["REDIS_URL"], !url.isEmpty { return url }
            throw ValidationError("Say which Redis to use with --redis URL or REDIS_URL.")
        }
    }

    var machineID: String {
        get throws {
            if let machine { return machine }
            if let id = ProcessInfo.processInfo.environment["MACHINE_ID"], !id.isEmpty { return id }
            throw ValidationError("Say which machine with --machine ID or MACHINE_ID.")
        }
    }

    var keyPrefix: String { prefix ?? ProcessInfo.processInfo.environment["PROVISION_PREFIX"] ?? "provision" }

    func bootstrapLogging(label: String = "provision") -> Logger {
        let level = (logLevel ?? ProcessInfo.processInfo.environment["PROVISION_LOG_LEVEL"]).flatMap(Logger.Level.init(rawValue:)) ?? .info
        LoggingSystem.bootstrap { name in
            var handler = StreamLogHandler.standardError(label: name)
            handler.logLevel = level
            return RedactingLogHandler(wrapping: handler, redactor: processRedactor)
        }
        return Logger(label: label)
    }
}

/// An error that reaches the user as one sentence, with no stack or type names.
struct UserFacingError: Error, CustomStringConvertible {
    let description: String
    init(_ error: any Error) { description = "\(error)" }
    init(message: String) { description = message }
}

/// Runs `body`, turning any error into one clear sentence on stderr and exit status 1.
func reportingErrors<T>(_ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch let error as ValidationError {
        throw error
    } catch let error as ExitCode {
        throw error
    } catch {
        FileHandle.standardError.write(Data("provision: \(processRedactor.scrub("\(error)"))\n".utf8))
        throw ExitCode.failure
    }
}

/// The absolute path of this executable, for starting worker processes.
func currentExecutable() -> String {
    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
}

/// Writes one line to standard output at once (unbuffered), so progress reaches a pipe as it happens.
func say(_ line: String) {
    FileHandle.standardOutput.write(Data((processRedactor.scrub(line) + "\n").utf8))
}
