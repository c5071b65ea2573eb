import RedisClient

/// The fleet-wide announcement stream (`protocols/scripts/fleet.lua`): one entry per machine and
/// generation, deduplicated through a per-machine index key in the stream's cluster slot.
public struct FleetStream: Sendable {
    public let keys: MachineKeys
    public let redis: RedisClient

    /// `redis` may be the machine's connection: on a cluster the client routes this call to the
    /// stream's slot, which is another node's than the machine's keys in general.
    public init(redis: RedisClient, keys: MachineKeys) {
        self.redis = redis
        self.keys = keys
    }

    /// How long entries and the duplicate index live.
    public struct Retention: Sendable {
        /// `XADD MAXLEN ~` of the stream.
        public var maxLength = 100_000
        /// Entries older than this are trimmed (`XTRIM MINID ~`).
        public var maxAge: Duration = .seconds(7 * 24 * 3600)
        /// How long the index remembers a machine's last announcement.
        public var indexTTLSeconds = 7 * 24 * 3600
        public init() {}
    }

    /// Appends the announcement and publishes `message` unless this generation of this plan is
    /// already in the stream. Returns the entry id and whether it was a duplicate.
    public func announce(
        generation: Int, planID: String, message: String, fields: [(String, String)], retention: Retention = Retention()
    ) async throws(JobQueueError) -> (entry: String, duplicate: Bool) {
        var arguments = [
            "announce", keys.machine, String(generation), planID, String(retention.indexTTLSeconds),
            String(retention.maxLength), String(Int(retention.maxAge / .milliseconds(1))), keys.fleetChannel, message,
        ]
        for (field, value) in fields { arguments += [field, value] }
        let reply: RedisReply
        do {
            reply = try await redis.eval(QueueScript.fleet, keys: [keys.fleetEvents, keys.fleetAnnounced], arguments: arguments)
        } catch { throw .redis(error) }
        guard let items = reply.array, items.count == 2, let kind = items[0].string, let entry = items[1].string,
            kind == "added" || kind == "duplicate"
        else { throw .protocolViolation("fleet.lua announce returned \(reply)") }
        return (entry, kind == "duplicate")
    }

    /// Forgets the machine's last announcement (after `retire`, its generations start from 1 again).
    public func forget() async throws(JobQueueError) {
        do {
            _ = try await redis.eval(QueueScript.fleet, keys: [keys.fleetEvents, keys.fleetAnnounced], arguments: ["forget", keys.machine])
        } catch { throw .redis(error) }
    }
}
