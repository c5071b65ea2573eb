import Foundation
import RedisClient
import TestSupport
import Testing

@Suite("Redis URLs")
struct RedisURLTests {
    @Test func parsesTCPWithUserPasswordAndDatabase() throws {
        let c = try RedisConfiguration(url: "redis://worker:s3cr%40t@127.0.0.1:6380/3")
        #expect(c.endpoint == .tcp(host: "127.0.0.1", port: 6380))
        #expect(c.username == "worker")
        #expect(c.password == "s3cr@t")
        #expect(c.database == 3)
        #expect(!c.serverDescription.contains("s3cr"))
    }

    @Test func parsesPasswordOnlyAndDefaults() throws {
        let c = try RedisConfiguration(url: "redis://:pw@localhost")
        #expect(c.endpoint == .tcp(host: "localhost", port: 6379))
        #expect(c.username == nil)
        #expect(c.password == "pw")
        #expect(c.database == 0)
    }

    @Test func parsesUnixSocket() throws {
        let c = try RedisConfiguration(url: "unix:///run/redis/redis.sock?db=2&password=x")
        #expect(c.endpoint == .unix(path: "/run/redis/redis.sock"))
        #expect(c.database == 2)
        #expect(c.password == "x")
    }

    @Test(arguments: ["http://host", "redis://", "rediss://h:1", "redis://h:1/notanumber", "redis://h:99999", "unix://relative"])
    func refusesUnusableURLs(_ url: String) {
        #expect(throws: RedisError.self) { try RedisConfiguration(url: url) }
    }
}

@Suite("Redis replies in error messages")
struct RedisReplyDescriptionTests {
    /// Found by bench/fuzz: a queue script answer of the wrong shape put the whole reply, dumped as
    /// `RedisClient.RedisReply.array([RedisClient.RedisReply.bulk([103, 101, …` (kilobytes of it), into
    /// the one-sentence error of `provision status`.
    @Test func aReplyIsDescribedInAFewWordsNeverDumped() {
        let big = RedisReply.array((0..<5000).map { _ in .bulk(Array("generation".utf8)) } + [.integer(7)])
        let text = "\(big)"
        #expect(text == "an array of 5001 (10-byte string, 10-byte string, 10-byte string, 10-byte string, …)")
        #expect("\(RedisReply.bulk(Array(String(repeating: "x", count: 100_000).utf8)))".count < 100)
        #expect("\(RedisReply.error("ERR \u{1B}[2Jboom"))" == "the error 'ERR ?[2Jboom'")
        #expect("\(RedisReply.integer(-3))" == "the integer -3" && "\(RedisReply.null)" == "nil")
        // Inside a list too (Array's description reflects its elements).
        #expect(!"\([RedisReply.status("OK"), .array([.null])])".contains("RedisReply"))
    }
}

@Suite("Redis client against a real redis-server", .serialized)
struct RedisClientTests {
    @Test func commandsRepliesAndPipelines() async throws {
        let redis = try await TestRedis(unixSocket: false)
        defer { redis.stop() }
        let client = try redis.client()
        #expect(try await client.send("PING") == .status("PONG"))
        #expect(try await client.send("SET", "k", "v\u{0}binary") == .status("OK"))
        #expect(try await client.send("GET", "k") == .bulk(Array("v\u{0}binary".utf8)))
        #expect(try await client.send("INCRBY", "n", "41").int == 41)
        #expect(try await client.send("GET", "missing") == .null)
        #expect(try await client.send("HSET", "h", "a", "1", "b", "2").int == 2)
        #expect(try await client.send("HGETALL", "h").hash == ["a": "1", "b": "2"])
        let replies = try await client.pipeline([["INCR", "n"], ["INCR", "n"], ["LPUSH"]])
        #expect(replies[0].int == 42 && replies[1].int == 43)
        guard case .error(let message) = replies[2] else { Issue.record("expected an error reply"); return }
        #expect(message.contains("wrong number of arguments"))
        // Error replies of single commands are thrown, naming the server and the command.
        do {
            try await client.send("LPUSH", "k", "x")
            Issue.record("LPUSH on a string must fail")
        } catch {
            #expect(error.description.contains("LPUSH"))
            #expect(error.description.contains("127.0.0.1:\(redis.port)"))
            #expect(!error.isConnectionError)
        }
    }

    @Test func evalshaReloadsAfterScriptFlush() async throws {
        let redis = try await TestRedis()
        defer { redis.stop() }
        let client = try redis.client()
        let script = RedisScript(name: "sum", source: "return tonumber(ARGV[1]) + tonumber(ARGV[2])")
        #expect(try await client.eval(script, keys: [], arguments: ["2", "3"]).int == 5)
        try await client.send("SCRIPT", "FLUSH")
        // The cached SHA1 is now unknown to the server: NOSCRIPT, reload, run.
        #expect(try await client.eval(script, keys: [], arguments: ["4", "5"]).int == 9)
        let evals = try await client.send("INFO", "commandstats").string ?? ""
        #expect(evals.contains("cmdstat_evalsha:calls=3"))
    }

    @Test func encodedCommandsRunInOrderAndReportErrorsByIndex() async throws {
        let redis = try await TestRedis()
        defer { redis.stop() }
        let client = try redis.client()
        // Commands in pieces that only make whole commands together: a buffer holding three, cut
        // in the middle of an argument, then one more, then a command that fails.
        var buffer: [UInt8] = []
        RESP.appendCommand(["RPUSH", "list", "a"], to: &buffer)
        RESP.appendCommand(["RPUSH", "list", "ç\r\n", String(repeating: "z", count: 70_000)], to: &buffer)
        RESP.appendCommand(["SET", "string", "s"], to: &buffer)
        let cut = buffer.count / 2
        var tail: [UInt8] = []
        RESP.appendCommand(["RPUSH", "string", "wrong type"], to: &tail)
        RESP.appendCommand(["RPUSH", "list", "last"], to: &tail)
        let errors = try client.sendBlocking(encoded: [buffer[..<cut], buffer[cut...], tail[...]], commands: 5)
        #expect(errors.map(\.index) == [3] && errors.first?.message.hasPrefix("WRONGTYPE") == true)
        let list = try await client.send("LRANGE", "list", "0", "-1").array?.compactMap(\.string)
        #expect(list == ["a", "ç\r\n", String(repeating: "z", count: 70_000), "last"])
        #expect(try await client.send("GET", "string").string == "s")
    }

    @Test func reconnectsAfterServerRestart() async throws {
        let redis = try await TestRedis(appendOnly: true)
        defer { redis.stop() }
        let client = try redis.client(reconnectWindow: .seconds(20))
        try await client.send("SET", "survives", "yes")
        try await Task.sleep(for: .milliseconds(1100))  // appendfsync everysec
        try await redis.restart(downtime: .milliseconds(500))
        #expect(try await client.send("GET", "survives").string == "yes")
    }

    @Test func commandTimeoutBoundsReads() async throws {
        let redis = try await TestRedis()
        defer { redis.stop() }
        var configuration = try redis.server.configuration
        configuration.commandTimeout = .milliseconds(300)
        configuration.reconnectWindow = .zero
        let client = RedisClient(configuration: configuration)
        let other = try redis.client()
        let started = ContinuousClock.now
        // A busy script blocks the server: the reply cannot arrive within the command timeout.
        let busy = "local t = redis.call('TIME'); local s = t[1] * 1e6 + t[2]; repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] - s > 1500000; return 1"
        async let blocker: RedisReply = other.send("EVAL", busy, "0")
        try await Task.sleep(for: .milliseconds(100))
        await #expect(throws: RedisError.self) { try await client.send("PING") }
        #expect(ContinuousClock.now - started < .seconds(2))
        _ = try await blocker
    }

    @Test func passwordIsRequiredAndNeverShown() async throws {
        let secret = "pw-\(UUID().uuidString)"
        let redis = try await TestRedis(password: secret)
        defer { redis.stop() }
        let good = try redis.client()
        #expect(try await good.send("PING") == .status("PONG"))

        var wrong = try redis.server.configuration
        wrong.password = "not-\(secret)"
        // A refused password is final: no reconnect window is spent on it.
        wrong.reconnectWindow = .seconds(30)
        let started = ContinuousClock.now
        do {
            try await RedisClient(configuration: wrong).send("PING")
            Issue.record("a wrong password must be refused")
        } catch {
            #expect(error.description.contains("refused the password"))
            #expect(!error.description.contains(secret))
        }
        #expect(ContinuousClock.now - started < .seconds(5))
    }

    @Test func connectFailureNamesServerWithoutPassword() async throws {
        let port = try freeLoopbackPort()
        var configuration = try RedisConfiguration(url: "redis://user:hunter2@127.0.0.1:\(port)/0")
        configuration.reconnectWindow = .milliseconds(300)
        let started = ContinuousClock.now
        do {
            try await RedisClient(configuration: configuration).send("PING")
            Issue.record("nothing listens there")
        } catch {
            #expect(error.isConnectionError)
            #expect(error.description.contains("127.0.0.1:\(port)"))
            #expect(!error.description.contains("hunter2"))
        }
        #expect(ContinuousClock.now - started < .seconds(3))
    }

    @Test func connectsOverUnixSocket() async throws {
        let redis = try await TestRedis()
        defer { redis.stop() }
        let client = RedisClient(configuration: try redis.server.configuration)
        defer { client.close() }
        #expect(try await client.send("PING") == .status("PONG"))
    }

    /// A client whose command timeout would hold a blocked read for five minutes.
    private func patientClient(_ redis: TestRedis, reconnectWindow: Duration = .seconds(300)) throws -> RedisClient {
        var configuration = try redis.server.configuration
        configuration.commandTimeout = .seconds(300)
        configuration.reconnectWindow = reconnectWindow
        return RedisClient(configuration: configuration, label: "patient")
    }

    @Test func cancellingATaskBlockedInBLPOPEndsTheCall() async throws {
        let redis = try await TestRedis()
        defer { redis.stop() }
        let client = try patientClient(redis)
        defer { client.close() }
        let observer = try redis.client(label: "observer")
        defer { observer.close() }
        _ = try await client.send("CLIENT", "SETNAME", "blocked")
        let blocked = Task { () -> RedisError? in
            do throws(RedisError) {
                _ = try await client.send("BLPOP", "never-filled", "0")
                return nil
            } catch { return error }
        }
        // Cancelled only once the server shows the call blocked.
        let blocking = try await eventually {
            (try await observer.send("CLIENT", "LIST").string ?? "").split(separator: "\n").contains { $0.contains("name=blocked") && $0.contains("cmd=blpop") }
        }
        #expect(blocking)
        blocked.cancel()
        let error = await blocked.value
        #expect(error?.isCancellation == true, "got \(String(describing: error))")
        // The interrupted connection is gone from the server, and the client connects afresh.
        #expect(try await eventually {
            !(try await observer.send("CLIENT", "LIST").string ?? "").contains("name=blocked")
        })
        #expect(try await client.send("PING") == .status("PONG"))
    }

    @Test func cancellingATaskInTheReconnectWaitEndsItWhileRedisIsDown() async throws {
        let redis = try await TestRedis()
        defer { redis.stop() }
        let client = try patientClient(redis, reconnectWindow: .seconds(600))
        defer { client.close() }
        #expect(try await client.send("PING") == .status("PONG"))
        redis.server.stop()
        let waiting = Task { () -> RedisError? in
            do throws(RedisError) {
                _ = try await client.send("PING")
                return nil
            } catch { return error }
        }
        try await Task.sleep(for: .milliseconds(300))
        waiting.cancel()
        let error = await waiting.value
        #expect(error?.isCancellation == true, "got \(String(describing: error))")
        // Nothing answered in between: the server is still down when the call has returned.
        let probe = try redis.client(label: "probe", reconnectWindow: .zero)
        defer { probe.close() }
        await #expect(throws: RedisError.self) { try await probe.send("PING") }
    }

    @Test func aCallCancelledBeforeItStartsIsNotSent() async throws {
        let redis = try await TestRedis()
        defer { redis.stop() }
        let client = try redis.client()
        defer { client.close() }
        let task = Task { () -> RedisError? in
            withUnsafeCurrentTask { $0?.cancel() }
            do throws(RedisError) {
                _ = try await client.send("SET", "written", "1")
                return nil
            } catch { return error }
        }
        #expect(await task.value?.isCancellation == true)
        #expect(try await client.send("EXISTS", "written").int == 0)
    }
}

