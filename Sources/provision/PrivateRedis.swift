import ArgumentParser
import Foundation
import RedisClient
import RedisServerProcess

/// Where `provision up` keeps its private Redis, and how the one-shot readers (`status`, `events`)
/// reach that machine's state without a `--redis`: the live server while `up` runs, else, with
/// `--offline`, a throw-away server started on a copy of its append-only file.
struct PrivateRedis {
    let directory: URL

    init(stateDir: String?) {
        let environment = ProcessInfo.processInfo.environment
        let base = stateDir ?? environment["PROVISION_STATE_DIR"]
            ?? ((environment["XDG_STATE_HOME"] ?? (NSHomeDirectory() + "/.local/state")) + "/provision")
        directory = URL(fileURLWithPath: base).appendingPathComponent("redis")
    }

    var socket: String { directory.appendingPathComponent("redis.sock").path }
    var url: String { "unix://" + socket }

    /// True when the private server answers on its socket (a `provision up` is running).
    func isLive() async -> Bool {
        guard FileManager.default.fileExists(atPath: socket), let configuration = try? RedisConfiguration(url: url) else { return false }
        var quick = configuration
        quick.connectTimeout = .milliseconds(500)
        quick.commandTimeout = .seconds(1)
        quick.reconnectWindow = .zero
        let client = RedisClient(configuration: quick, label: "probe")
        defer { client.close() }
        return (try? await client.send("PING")) == .status("PONG")
    }

    /// True when a stopped private server left data behind.
    var hasData: Bool {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.contains { $0 == "appendonlydir" || $0.hasSuffix(".aof") || $0 == "dump.rdb" }
    }

    /// A Redis URL for a reader given no `--redis`, and the throw-away server to stop after reading
    /// (offline). Without data, or with data but no `--offline`, one sentence says what to do.
    func reader(offline: Bool, command: String) async throws -> (url: String, server: LocalRedisServer?) {
        if await isLive() { return (url, nil) }
        guard hasData else {
            throw ValidationError("Say which Redis to use with --redis URL or REDIS_URL (no private Redis of `provision up` was found in \(directory.path)).")
        }
        guard offline else {
            throw UserFacingError(message: "provision up's private Redis is stopped (its data is in \(directory.path)): read it with `provision \(command) --offline`, or start it again with `provision up --state-dir \(directory.deletingLastPathComponent().path)`.")
        }
        // A copy: the reader must not change the machine's own files.
        let copy = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("provision-offline-\(getpid())-\(UUID().uuidString.prefix(8))")
        do {
            try FileManager.default.createDirectory(at: copy, withIntermediateDirectories: true)
            for name in try FileManager.default.contentsOfDirectory(atPath: directory.path) where name == "appendonlydir" || name.hasSuffix(".aof") || name == "dump.rdb" {
                try FileManager.default.copyItem(at: directory.appendingPathComponent(name), to: copy.appendingPathComponent(name))
            }
        } catch {
            try? FileManager.default.removeItem(at: copy)
            throw UserFacingError(message: "The private Redis data in \(directory.path) could not be copied: \(error.localizedDescription).")
        }
        let server = LocalRedisServer(directory: copy, listen: .socket(path: copy.appendingPathComponent("r.sock").path))
        do {
            try await server.start()
        } catch {
            try? FileManager.default.removeItem(at: copy)
            throw UserFacingError(message: "The private Redis data in \(directory.path) could not be read: \(error).")
        }
        return (server.url, server)
    }

    /// Stops a throw-away reader and removes its copy.
    static func finish(_ server: LocalRedisServer?) {
        guard let server else { return }
        server.stop()
        try? FileManager.default.removeItem(at: server.directory)
    }
}

/// Options of the one-shot readers for a machine run by `provision up` with its private Redis.
struct PrivateRedisOptions: ParsableArguments {
    @Option(name: .customLong("state-dir"), help: "Where `provision up` keeps its private Redis (env PROVISION_STATE_DIR); read when no --redis is given.")
    var stateDir: String?

    @Flag(help: "Read the state `provision up` left behind after its private Redis stopped (a throw-away server on a copy of its data).")
    var offline = false
}

extension QueueOptions {
    /// The Redis a reader uses: `--redis`/`REDIS_URL`, else `provision up`'s private one.
    func readerURL(_ local: PrivateRedisOptions, command: String) async throws -> (url: String, server: LocalRedisServer?) {
        if let given = try? redisURL {
            guard !local.offline else { throw ValidationError("--offline reads the private Redis of `provision up`; leave out --redis and REDIS_URL.") }
            return (given, nil)
        }
        return try await PrivateRedis(stateDir: local.stateDir).reader(offline: local.offline, command: command)
    }

    /// True when `url` is not one the user gave: `up`'s private server (whose machine defaults to `local`).
    func isPrivate(_ url: String) -> Bool {
        (try? redisURL) == nil
    }
}
