import ArgumentParser
import Foundation
import Logging
import RedisClient
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
            LockCommand.self, PlanCommand.self, VerifyCommand.self, ExportCommand.self, ServicesCommand.self,
        ])

    static func main() async {
        // A write to a socket or pipe whose reader is gone (a Redis restarted under a unix socket,
        // `provision … | head`) must come back as EPIPE to the caller that can handle it, not
        // kill the process with SIGPIPE (exit 141). Children start with default signals again.
        signal(SIGPIPE, SIG_IGN)
        appendToSharedLogFiles()
        await main(nil)
    }
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

    /// A client for a command that runs once and ends (`status`, `enqueue`, `events`, `cancel`): a
    /// Redis that cannot be reached is reported within about 5 s (2 s to connect, 3 s of retries),
    /// where workers keep the URL's long reconnect window to ride out a restart.
    func oneShotClient(label: String = "redis") throws -> RedisClient {
        RedisClient(configuration: Self.oneShot(try RedisConfiguration(url: try redisURL)), label: label)
    }

    static func oneShot(_ configuration: RedisConfiguration) -> RedisConfiguration {
        var configuration = configuration
        configuration.connectTimeout = min(configuration.connectTimeout, .seconds(2))
        configuration.reconnectWindow = min(configuration.reconnectWindow, .seconds(3))
        return configuration
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
        writeAll(STDERR_FILENO, "provision: \(processRedactor.scrub("\(error)"))\n")
        throw ExitCode.failure
    }
}

/// The absolute path of this executable, for starting worker processes.
func currentExecutable() -> String {
    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
}

/// Writes one line to standard output at once (unbuffered), so progress reaches a pipe as it happens.
/// A reader that went away (EPIPE) loses the line and false comes back; the command decides
/// whether to end (`events --follow`) or to go on to its orderly end (`up`).
@discardableResult
func say(_ line: String) -> Bool {
    writeAll(STDOUT_FILENO, processRedactor.scrub(line) + "\n")
}

/// Worker processes write to their supervisor's standard error. When that is a file opened without
/// O_APPEND (`provision worker > pool.log 2>&1`), each process writes at its own offset and their
/// lines overwrite each other; with O_APPEND every write lands at the end of the file.
func appendToSharedLogFiles() {
    for fd in [STDOUT_FILENO, STDERR_FILENO] {
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { continue }
        let flags = fcntl(fd, F_GETFL)
        if flags >= 0 && flags & O_APPEND == 0 { _ = fcntl(fd, F_SETFL, flags | O_APPEND) }
    }
}

/// Writes `text` to `fd` whole, retrying short writes and EINTR; false on any other error.
@discardableResult
func writeAll(_ fd: Int32, _ text: String) -> Bool {
    let bytes = Array(text.utf8)
    var done = 0
    while done < bytes.count {
        let n = bytes.withUnsafeBytes { buffer in write(fd, buffer.baseAddress.map { $0 + done }, buffer.count - done) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { return false }
        done += n
    }
    return true
}
