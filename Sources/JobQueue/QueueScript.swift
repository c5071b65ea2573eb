import Foundation
import RedisClient

/// The protocol scripts of `protocols/scripts`, as embedded at build time.
public enum QueueScript {
    public static let queue: RedisScript = RedisScript(name: "queue", source: source(named: "queue"))
    /// `protocols/scripts/fleet.lua`: the fleet-wide announcement, deduplicated per machine and generation.
    public static let fleet: RedisScript = RedisScript(name: "fleet", source: source(named: "fleet"))

    static func source(named name: String) -> String {
        guard let encoded = EmbeddedScripts.base64[name], let data = Data(base64Encoded: encoded) else {
            // The build embeds every script in protocols/scripts; a missing one is a broken build.
            fatalError("protocols/scripts/\(name).lua was not embedded at build time")
        }
        return String(decoding: data, as: UTF8.self)
    }
}
