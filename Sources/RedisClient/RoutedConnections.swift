import Foundation

/// One node named in a `redis+cluster://` URL, asked for the slot map.
public struct ClusterSeed: Sendable, Hashable {
    public let host: String
    public let port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    var address: String { "\(host):\(port)" }
}

/// Where a `redis+sentinel://` client asks for the master: the sentinels and the master's name.
public struct SentinelSpec: Sendable, Hashable {
    public let sentinels: [ClusterSeed]
    public let masterName: String

    public init(sentinels: [ClusterSeed], masterName: String) {
        self.sentinels = sentinels
        self.masterName = masterName
    }
}

extension RedisConfiguration {
    /// Parses `redis+sentinel://[user:password@]host:port[,host:port...]/<master name>[/db]`: the
    /// sentinels are asked for the master's address (`SENTINEL get-master-addr-by-name`) on connect,
    /// after a broken connection and after a `READONLY` reply (the old master, now a replica). The
    /// user and password are the master's; the sentinels are asked without them.
    static func sentinel(url text: String) throws(RedisError) -> RedisConfiguration {
        var rest = String(text.dropFirst("redis+sentinel://".count))
        guard let slash = rest.firstIndex(of: "/") else {
            throw RedisError.invalidURL(reason: "redis+sentinel:// needs the master's name after the hosts, as /mymaster")
        }
        let path = rest[rest.index(after: slash)...].split(separator: "/", omittingEmptySubsequences: true)
        rest = String(rest[..<slash])
        guard let name = path.first, name.count <= 200, name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) })
        else { throw RedisError.invalidURL(reason: "the sentinel master name must be 1-200 letters, digits, '.', '_' or '-'") }
        var configuration = try cluster(url: "redis+cluster://" + rest)
        guard let seeds = configuration.cluster else { throw RedisError.invalidURL(reason: "redis+sentinel:// names no sentinel") }
        configuration.cluster = nil
        configuration.sentinel = SentinelSpec(sentinels: seeds, masterName: String(name))
        if path.count > 1 {
            guard let db = Int(path[1]), db >= 0 else { throw RedisError.invalidURL(reason: "the database '\(path[1].prefix(20))' is not a number") }
            configuration.database = db
        }
        return configuration
    }

    /// Parses `redis+cluster://[user:password@]host:port[,host:port...][/0]`: the seeds are asked for
    /// the slot map (`CLUSTER SLOTS`); the other nodes are learnt from it.
    static func cluster(url text: String) throws(RedisError) -> RedisConfiguration {
        var rest = Substring(text.dropFirst("redis+cluster://".count))
        var username: String?
        var password: String?
        if let at = rest.lastIndex(of: "@") {
            let userinfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = userinfo.firstIndex(of: ":") {
                username = String(userinfo[..<colon]).removingPercentEncoding.flatMap { $0.isEmpty ? nil : $0 }
                password = String(userinfo[userinfo.index(after: colon)...]).removingPercentEncoding
            } else {
                username = String(userinfo).removingPercentEncoding.flatMap { $0.isEmpty ? nil : $0 }
            }
        }
        if let slash = rest.firstIndex(of: "/") {
            let database = rest[rest.index(after: slash)...].trimmingCharacters(in: CharacterSet(charactersIn: "/"))
            guard database.isEmpty || database == "0" else {
                throw RedisError.invalidURL(reason: "a Redis Cluster has only database 0, not '\(database.prefix(20))'")
            }
            rest = rest[..<slash]
        }
        var seeds: [ClusterSeed] = []
        for part in rest.split(separator: ",", omittingEmptySubsequences: true) {
            guard let colon = part.lastIndex(of: ":"), let port = Int(part[part.index(after: colon)...]),
                (1...65535).contains(port), colon > part.startIndex
            else { throw RedisError.invalidURL(reason: "the cluster node '\(part.prefix(80))' is not host:port") }
            seeds.append(ClusterSeed(host: String(part[..<colon]), port: port))
        }
        guard let first = seeds.first else { throw RedisError.invalidURL(reason: "redis+cluster:// names no node") }
        var configuration = RedisConfiguration(endpoint: .tcp(host: first.host, port: first.port), username: username, password: password)
        configuration.cluster = seeds
        return configuration
    }
}

/// A client's connections when the server is found rather than given: the nodes of a Redis Cluster
/// with the slot map that routes each command by its first key (`ClusterSlot`), or the master that
/// Sentinel names. hiredis 0.14 knows neither, so this follows `MOVED` (the slot lives elsewhere:
/// update the map) and `ASK` (one command to the importing node, after `ASKING`), asks Sentinel
/// again after `READONLY` (a failed-over master) or a broken connection, and retries `TRYAGAIN`,
/// `CLUSTERDOWN` and `MASTERDOWN` until the reconnect window closes. Used only on the owning client's
/// serial queue.
final class RoutedConnections: @unchecked Sendable {
    /// How the topology is learnt.
    enum Discovery {
        case cluster([ClusterSeed])
        case sentinel(SentinelSpec)
    }

    private final class Node {
        let connection: RedisConnection
        /// Script name → SHA1 loaded on this node (each node has its own script cache).
        var scripts: [String: String] = [:]
        init(_ connection: RedisConnection) { self.connection = connection }
    }

    private let configuration: RedisConfiguration
    private let discovery: Discovery
    private var seeds: [ClusterSeed] {
        switch discovery {
        case .cluster(let seeds): return seeds
        case .sentinel(let spec): return spec.sentinels
        }
    }
    /// The master Sentinel named last (sentinel mode).
    private var master: String?
    private var nodes: [String: Node] = [:]
    private var slots: [String?] = Array(repeating: nil, count: ClusterSlot.count)
    private var mapIsCurrent = false
    /// The call running now (set by the client around each one): its cancellation ends a pause.
    var cancellation: CallCancellation?

    init(configuration: RedisConfiguration, discovery: Discovery) {
        self.configuration = configuration
        self.discovery = discovery
    }

    func close() {
        for node in nodes.values { node.connection.close() }
    }

    /// Loads the slot map now, so a wrong address fails early.
    func connect() throws(RedisError) { try refresh() }

    // MARK: Commands

    func command(_ arguments: [String], label: String) throws(RedisError) -> RedisReply {
        try run(slot: ClusterSlot.routingKey(arguments).map(ClusterSlot.of), label: label) { node, asking throws(RedisError) in
            try Self.send(arguments, on: node, asking: asking, label: label)
        }
    }

    func eval(_ script: RedisScript, keys: [String], arguments: [String]) throws(RedisError) -> RedisReply {
        let label = "EVALSHA \(script.name)"
        return try run(slot: keys.first.map(ClusterSlot.of), label: label) { node, asking throws(RedisError) in
            let reply = try Self.send(Self.evalsha(try Self.sha(of: script, on: node), keys, arguments), on: node, asking: asking, label: label)
            guard case .error(let message) = reply, message.hasPrefix("NOSCRIPT") else { return reply }
            node.scripts[script.name] = nil
            return try Self.send(Self.evalsha(try Self.sha(of: script, on: node), keys, arguments), on: node, asking: asking, label: label)
        }
    }

    /// One round trip when every command's slot is on one node (keyless commands go with the
    /// others); commands that were redirected are then sent again one by one. Otherwise each
    /// command is sent on its own, in order.
    func pipeline(_ commands: [[String]], label: String) throws(RedisError) -> [RedisReply] {
        let slotOf = commands.map { ClusterSlot.routingKey($0).map(ClusterSlot.of) }
        let shared = slotOf.compactMap { $0 }.first
        let single: (Int) throws(RedisError) -> RedisReply = { index throws(RedisError) in
            try self.run(slot: slotOf[index] ?? shared, label: label) { node, asking throws(RedisError) in
                try Self.send(commands[index], on: node, asking: asking, label: label)
            }
        }
        return try batch(count: commands.count, slots: slotOf.map { $0 ?? shared }, label: label, single: single) { node throws(RedisError) in
            try node.connection.pipeline(commands, label: label)
        }
    }

    func evalPipeline(_ calls: [ScriptCall]) throws(RedisError) -> [RedisReply] {
        let label = "EVALSHA pipeline"
        let single: (Int) throws(RedisError) -> RedisReply = { index throws(RedisError) in
            try self.eval(calls[index].script, keys: calls[index].keys, arguments: calls[index].arguments)
        }
        return try batch(count: calls.count, slots: calls.map { $0.keys.first.map(ClusterSlot.of) }, label: label, single: single) {
            node throws(RedisError) in
            var commands: [[String]] = []
            for call in calls { commands.append(Self.evalsha(try Self.sha(of: call.script, on: node), call.keys, call.arguments)) }
            return try node.connection.pipeline(commands, label: label)
        }
    }

    /// Pre-encoded commands that all address `key`'s slot (a machine's event batch). Redirected
    /// commands cannot be sent again one by one: their errors come back (the map is reloaded for
    /// the next batch); a broken connection sends the batch again, as the single-node client does.
    func pipeline(formatted pieces: [ArraySlice<UInt8>], commands: Int, key: String?, label: String) throws(RedisError) -> [(index: Int, message: String)] {
        let clock = ContinuousClock()
        let deadline = clock.now + configuration.reconnectWindow
        var attempt = 0
        while true {
            do {
                let node = try self.node(for: key.map(ClusterSlot.of))
                let errors = try node.connection.pipeline(formatted: pieces, commands: commands, label: label)
                if errors.contains(where: { Self.isRedirect($0.message) }) { mapIsCurrent = false }
                return errors
            } catch {
                try recover(from: error, deadline: deadline, attempt: &attempt, clock: clock)
            }
        }
    }

    // MARK: Routing

    private typealias Body = (Node, Bool) throws(RedisError) -> RedisReply

    /// Runs `body` on the node that serves `slot` (any node for nil), following redirects.
    private func run(slot: Int?, label: String, _ body: Body) throws(RedisError) -> RedisReply {
        let clock = ContinuousClock()
        let deadline = clock.now + configuration.reconnectWindow
        var asking: String?
        var attempt = 0
        var redirects = 0
        while true {
            do {
                let node: Node
                if let target = asking { node = try connected(target) } else { node = try self.node(for: slot) }
                let reply = try body(node, asking != nil)
                asking = nil
                guard case .error(let message) = reply else { return reply }
                let words = message.split(separator: " ")
                switch words.first {
                case "MOVED" where words.count == 3:
                    redirects += 1
                    guard redirects <= 16 else { return reply }
                    if let moved = Int(words[1]), (0..<ClusterSlot.count).contains(moved) { slots[moved] = String(words[2]) }
                    // A moved slot usually means a changed map: reload it, keeping the answer above when
                    // no node can be asked.
                    try? refresh()
                    if let moved = Int(words[1]), (0..<ClusterSlot.count).contains(moved), slots[moved] == nil {
                        slots[moved] = String(words[2])
                    }
                case "ASK" where words.count == 3:
                    redirects += 1
                    guard redirects <= 16 else { return reply }
                    asking = String(words[2])
                case "TRYAGAIN", "CLUSTERDOWN", "READONLY", "MASTERDOWN":
                    // A slot in migration (a multi-key call whose keys are split between two nodes), a
                    // cluster electing, or a master that became a replica: it settles within seconds.
                    // A READONLY write was not executed, so sending it again is safe.
                    guard clock.now < deadline else { return reply }
                    try pause(attempt: &attempt, until: deadline, clock: clock, label: label)
                    if words.first != "TRYAGAIN" {
                        mapIsCurrent = false
                        if let master { nodes[master]?.connection.close() }
                    }
                default:
                    return reply
                }
            } catch {
                asking = nil
                try recover(from: error, deadline: deadline, attempt: &attempt, clock: clock)
            }
        }
    }

    /// Sends `count` items as one pipeline when their slots are on one node; redirected replies
    /// and connection failures fall back to `single` per item.
    private func batch(
        count: Int, slots itemSlots: [Int?], label: String, single: (Int) throws(RedisError) -> RedisReply,
        together: (Node) throws(RedisError) -> [RedisReply]
    ) throws(RedisError) -> [RedisReply] {
        if count == 0 { return [] }
        var addresses = Set<String>()
        for slot in itemSlots { addresses.insert(try address(for: slot)) }
        guard addresses.count == 1, let address = addresses.first else {
            var replies: [RedisReply] = []
            for index in 0..<count { replies.append(try single(index)) }
            return replies
        }
        var replies: [RedisReply]
        do {
            replies = try together(try connected(address))
        } catch {
            guard error.isConnectionError else { throw error }
            nodes[address]?.connection.close()
            mapIsCurrent = false
            var again: [RedisReply] = []
            for index in 0..<count { again.append(try single(index)) }
            return again
        }
        for index in replies.indices {
            if case .error(let message) = replies[index], Self.isRedirect(message) || message.hasPrefix("NOSCRIPT") {
                replies[index] = try single(index)
            }
        }
        return replies
    }

    private func node(for slot: Int?) throws(RedisError) -> Node {
        try connected(try address(for: slot))
    }

    private func address(for slot: Int?) throws(RedisError) -> String {
        if !mapIsCurrent { try refresh() }
        if case .sentinel = discovery, let master { return master }
        if let slot, let address = slots[slot] { return address }
        if slot == nil, let any = slots.lazy.compactMap({ $0 }).first { return any }
        guard let slot else { return seeds[0].address }
        throw RedisError.io(server: configuration.serverDescription, command: "CLUSTER SLOTS", reason: "no node serves slot \(slot)")
    }

    private func connected(_ address: String) throws(RedisError) -> Node {
        let node: Node
        if let known = nodes[address] {
            node = known
        } else {
            guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) else {
                throw RedisError.unexpectedReply(
                    server: configuration.serverDescription, command: "CLUSTER SLOTS", reply: "a node address '\(address.prefix(80))'")
            }
            var nodeConfiguration = configuration
            nodeConfiguration.cluster = nil
            nodeConfiguration.sentinel = nil
            nodeConfiguration.endpoint = .tcp(host: String(address[..<colon]), port: port)
            node = Node(RedisConnection(configuration: nodeConfiguration))
            nodes[address] = node
        }
        if !node.connection.isConnected {
            node.scripts = [:]
            try node.connection.connect()
        }
        return node
    }

    /// Reloads the slot map from any node that answers: the known nodes first, then the seeds.
    private func refresh() throws(RedisError) {
        if case .sentinel(let spec) = discovery { return try askSentinels(spec) }
        var candidates = Array(nodes.keys.sorted())
        for seed in seeds where !candidates.contains(seed.address) { candidates.append(seed.address) }
        var failure: RedisError?
        for address in candidates {
            do throws(RedisError) {
                let node = try connected(address)
                let reply = try node.connection.command(["CLUSTER", "SLOTS"], label: "CLUSTER SLOTS")
                if case .error(let message) = reply {
                    failure = .server(server: node.connection.server, command: "CLUSTER SLOTS", message: message)
                    if message.contains("cluster support disabled") {
                        throw RedisError.connectFailed(
                            server: node.connection.server, reason: "it is not in cluster mode; use redis:// for a single server")
                    }
                    continue
                }
                guard let map = Self.parseSlots(reply, askedHost: String(address[..<(address.lastIndex(of: ":") ?? address.endIndex)]))
                else {
                    failure = .unexpectedReply(server: node.connection.server, command: "CLUSTER SLOTS", reply: "\(reply)".prefix(200).description)
                    continue
                }
                slots = map
                mapIsCurrent = true
                return
            } catch {
                if case .connectFailed(_, let reason) = error, reason.contains("not in cluster mode") { throw error }
                nodes[address]?.connection.close()
                failure = error
            }
        }
        throw failure ?? .connectFailed(server: configuration.serverDescription, reason: "no cluster node answered")
    }

    /// Asks each sentinel in turn for the master's address; the first answer wins. Sentinels are
    /// asked on connections of their own, without the master's credentials.
    private func askSentinels(_ spec: SentinelSpec) throws(RedisError) {
        var failure: RedisError?
        for sentinel in spec.sentinels {
            let connection = RedisConnection(
                configuration: RedisConfiguration(
                    endpoint: .tcp(host: sentinel.host, port: sentinel.port), connectTimeout: configuration.connectTimeout,
                    commandTimeout: configuration.connectTimeout, reconnectWindow: .zero))
            defer { connection.close() }
            do throws(RedisError) {
                try connection.connect()
                let reply = try connection.command(
                    ["SENTINEL", "get-master-addr-by-name", spec.masterName], label: "SENTINEL get-master-addr-by-name")
                guard let fields = reply.array, fields.count == 2, let host = fields[0].string, let port = fields[1].string,
                    Int(port) != nil
                else {
                    failure = .connectFailed(
                        server: connection.server, reason: "the sentinel knows no master named '\(spec.masterName)' (\(reply))")
                    continue
                }
                let address = "\(host):\(port)"
                if master != address, let old = master { nodes[old]?.connection.close() }
                master = address
                mapIsCurrent = true
                return
            } catch {
                failure = error
            }
        }
        throw failure ?? .connectFailed(server: configuration.serverDescription, reason: "no sentinel answered")
    }

    /// `CLUSTER SLOTS`: `[[start, end, [host, port, id...], replicas...]...]`; an empty host is the
    /// node that was asked.
    private static func parseSlots(_ reply: RedisReply, askedHost: String) -> [String?]? {
        guard let ranges = reply.array else { return nil }
        var map: [String?] = Array(repeating: nil, count: ClusterSlot.count)
        for range in ranges {
            guard let fields = range.array, fields.count >= 3, let start = fields[0].int, let end = fields[1].int,
                let master = fields[2].array, master.count >= 2, let port = master[1].int,
                start >= 0, end < ClusterSlot.count, start <= end
            else { return nil }
            var host = master[0].string ?? ""
            if host.isEmpty || host == "?" { host = askedHost }
            for slot in Int(start)...Int(end) { map[slot] = "\(host):\(port)" }
        }
        return map
    }

    private func recover(from error: RedisError, deadline: ContinuousClock.Instant, attempt: inout Int, clock: ContinuousClock) throws(RedisError) {
        guard error.isConnectionError, clock.now < deadline else { throw error }
        close()
        mapIsCurrent = false
        try pause(attempt: &attempt, until: deadline, clock: clock, label: "reconnect")
    }

    /// 20 ms doubling to 1 s, with jitter, never past the deadline; a cancelled call ends it.
    private func pause(attempt: inout Int, until deadline: ContinuousClock.Instant, clock: ContinuousClock, label: String) throws(RedisError) {
        let base = min(1.0, 0.02 * pow(2.0, Double(min(attempt, 6))))
        attempt += 1
        let left = deadline - clock.now
        let leftSeconds = Double(left.components.seconds) + Double(left.components.attoseconds) / 1e18
        let seconds = max(0, min(base * Double.random(in: 0.5...1.0), leftSeconds))
        if !(cancellation ?? CallCancellation()).pause(seconds: seconds) { throw .cancelled(server: configuration.serverDescription, command: label) }
    }

    private static func isRedirect(_ message: String) -> Bool {
        message.hasPrefix("MOVED ") || message.hasPrefix("ASK ") || message.hasPrefix("TRYAGAIN") || message.hasPrefix("CLUSTERDOWN")
            || message.hasPrefix("READONLY") || message.hasPrefix("MASTERDOWN")
    }

    private static func send(_ arguments: [String], on node: Node, asking: Bool, label: String) throws(RedisError) -> RedisReply {
        guard asking else { return try node.connection.command(arguments, label: label) }
        let replies = try node.connection.pipeline([["ASKING"], arguments], label: label)
        guard replies.count == 2 else {
            throw RedisError.unexpectedReply(server: node.connection.server, command: label, reply: "\(replies.count) replies to ASKING + 1")
        }
        return replies[1]
    }

    private static func sha(of script: RedisScript, on node: Node) throws(RedisError) -> String {
        if let sha = node.scripts[script.name] { return sha }
        let reply = try node.connection.command(["SCRIPT", "LOAD", script.source], label: "SCRIPT LOAD \(script.name)")
        guard case .bulk = reply, let sha = reply.string else {
            throw RedisError.unexpectedReply(server: node.connection.server, command: "SCRIPT LOAD \(script.name)", reply: "\(reply)")
        }
        node.scripts[script.name] = sha
        return sha
    }

    private static func evalsha(_ sha: String, _ keys: [String], _ arguments: [String]) -> [String] {
        ["EVALSHA", sha, String(keys.count)] + keys + arguments
    }
}
