import Foundation

/// Keeps secrets out of events, logs and Redis: replaces the values of secret-looking environment
/// variables, the user info of URLs, and secret-looking URL query parameters with `[REDACTED]`.
package struct Redactor: Sendable {
    package static let mask = "[REDACTED]"
    /// Values shorter than this are not treated as secrets (they would mask ordinary text).
    package static let minimumSecretLength = 6

    /// The literal strings to mask, longest first, with their percent- and JSON-escaped forms.
    package let secrets: [String]
    private let needles: [[UInt8]]
    /// Per needle, the index of the byte the scan looks for first (`anchor(_:)`).
    private let anchors: [Int]

    /// Collects secrets from `environment`: values of variables whose names look secret
    /// (`looksSecret`), and passwords inside URL values (`redis://:pw@host`, `?password=pw`).
    package init(environment: [String: String] = ProcessInfo.processInfo.environment, extraSecrets: [String] = []) {
        var found = Set<String>()
        for (name, value) in environment {
            if Self.looksSecret(name: name) { found.insert(value) }
            for secret in Self.secretsInURLs(value) { found.insert(secret) }
        }
        for secret in extraSecrets { found.insert(secret) }
        var variants = Set<String>()
        for secret in found where secret.utf8.count >= Self.minimumSecretLength {
            variants.insert(secret)
            if let encoded = secret.addingPercentEncoding(withAllowedCharacters: .alphanumerics) { variants.insert(encoded) }
            var json = ""
            JSONObjectWriter.escape(secret, into: &json)
            variants.insert(json)
            variants.insert(json.replacingOccurrences(of: "/", with: "\\/"))
        }
        secrets = variants.sorted { $0.utf8.count > $1.utf8.count }
        needles = secrets.map { Array($0.utf8) }
        anchors = needles.map(Self.anchor)
    }

    /// The first byte of `needle` that is not JSON punctuation: the scan jumps between occurrences
    /// of that byte, and `:` or `"` occur dozens of times in every event.
    private static func anchor(_ needle: [UInt8]) -> Int {
        needle.firstIndex { !jsonPunctuation.contains($0) } ?? 0
    }

    private static let jsonPunctuation = Array(#"":,{}[]"#.utf8)

    /// Words that make an environment variable's value a secret (matched in the upper-cased name).
    package static let secretNameParts = [
        "TOKEN", "SECRET", "PASSWORD", "PASSWD", "PASSPHRASE", "KEY", "CREDENTIAL", "AUTH", "COOKIE", "SESSION",
        "SIGNATURE", "PRIVATE",
    ]

    /// Words that make a URL query parameter's value a secret (matched in the lower-cased name).
    package static let secretQueryParts = [
        "token", "key", "sig", "secret", "password", "passwd", "auth", "credential", "session", "signature",
    ]

    package static func looksSecret(name: String) -> Bool {
        let upper = name.uppercased()
        return secretNameParts.contains { upper.contains($0) }
    }

    /// `text` with every secret masked. Cheap when there is nothing to mask (a byte search per secret).
    package func scrub(_ text: String) -> String {
        // The common case, nothing to mask, reads the string in place without copying it.
        let clean = text.utf8.withContiguousStorageIfAvailable { isClean(UnsafeRawBufferPointer($0)) }
        if clean == true { return text }
        let bytes = Array(text.utf8)
        let scrubbed = masked(bytes)
        return scrubbed == bytes ? text : String(decoding: scrubbed, as: UTF8.self)
    }

    /// `bytes` (UTF-8 text) with every secret masked; the same array when there is nothing to mask.
    package func scrub(bytes: [UInt8]) -> [UInt8] {
        if bytes.withUnsafeBytes({ isClean($0) }) { return bytes }
        return masked(bytes)
    }

    /// True when `text` holds no secret and no URL (which could carry user info or a signed query).
    private func isClean(_ text: UnsafeRawBufferPointer) -> Bool {
        if Self.contains(Self.urlMarker, anchor: 1, in: text) { return false }
        for (index, needle) in needles.enumerated() where Self.contains(needle, anchor: anchors[index], in: text) {
            return false
        }
        return true
    }

    private func masked(_ input: [UInt8]) -> [UInt8] {
        var bytes = input
        var changed = false
        for needle in needles where Self.find(needle, in: bytes, from: 0) != nil {
            bytes = Self.replaceAll(needle, in: bytes, with: Array(Self.mask.utf8))
            changed = true
        }
        if Self.find(Self.urlMarker, in: bytes, from: 0) != nil {
            let scrubbed = Self.scrubURLs(bytes)
            if scrubbed != bytes {
                bytes = scrubbed
                changed = true
            }
        }
        return changed ? bytes : input
    }

    // MARK: URLs

    /// Characters that end a URL inside free text or JSON.
    private static func endsURL(_ byte: UInt8) -> Bool {
        byte <= 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "'") || byte == UInt8(ascii: "<")
            || byte == UInt8(ascii: ">") || byte == UInt8(ascii: "\\") || byte == UInt8(ascii: "`")
    }

    /// Masks the user info (`scheme://[REDACTED]@host`) and secret query values of every URL.
    private static func scrubURLs(_ bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var index = 0
        let marker = Array("://".utf8)
        while let hit = find(marker, in: bytes, from: index) {
            let authority = hit + 3
            out.append(contentsOf: bytes[index..<authority])
            var end = authority
            while end < bytes.count, !endsURL(bytes[end]) { end += 1 }
            out.append(contentsOf: scrubURL(Array(bytes[authority..<end])))
            index = end
        }
        out.append(contentsOf: bytes[index...])
        return out
    }

    /// One URL after its `://`.
    private static func scrubURL(_ rest: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        let slash = rest.firstIndex { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "?") || $0 == UInt8(ascii: "#") } ?? rest.count
        var start = 0
        if let at = rest[..<slash].lastIndex(of: UInt8(ascii: "@")) {
            out.append(contentsOf: Array(mask.utf8))
            start = at
        }
        guard let question = rest[start...].firstIndex(of: UInt8(ascii: "?")) else {
            out.append(contentsOf: rest[start...])
            return out
        }
        out.append(contentsOf: rest[start...question])
        let fragment = rest[(question + 1)...].firstIndex(of: UInt8(ascii: "#")) ?? rest.count
        let query = rest[(question + 1)..<fragment]
        var first = true
        for pair in query.split(separator: UInt8(ascii: "&"), omittingEmptySubsequences: false) {
            if !first { out.append(UInt8(ascii: "&")) }
            first = false
            guard let equals = pair.firstIndex(of: UInt8(ascii: "=")) else {
                out.append(contentsOf: pair)
                continue
            }
            let name = String(decoding: pair[pair.startIndex..<equals], as: UTF8.self).lowercased()
            out.append(contentsOf: pair[pair.startIndex...equals])
            if secretQueryParts.contains(where: { name.contains($0) }) {
                out.append(contentsOf: Array(mask.utf8))
            } else {
                out.append(contentsOf: pair[(equals + 1)...])
            }
        }
        out.append(contentsOf: rest[fragment...])
        return out
    }

    /// Passwords inside a value that holds URLs, so that they are masked wherever they show up alone.
    static func secretsInURLs(_ value: String) -> [String] {
        guard value.contains("://") else { return [] }
        var found: [String] = []
        for word in value.split(whereSeparator: { $0.isWhitespace || $0 == "," || $0 == ";" }) {
            guard let components = URLComponents(string: String(word)) else { continue }
            if let password = components.password, !password.isEmpty {
                found.append(password.removingPercentEncoding ?? password)
            }
            if let user = components.user, !user.isEmpty, components.password == nil, components.host != nil {
                found.append(user.removingPercentEncoding ?? user)  // a token given as the user (https://TOKEN@host)
            }
            for item in components.queryItems ?? [] {
                let name = item.name.lowercased()
                if let value = item.value, !value.isEmpty, secretQueryParts.contains(where: { name.contains($0) }) {
                    found.append(value)
                }
            }
        }
        return found
    }

    // MARK: bytes

    private static let urlMarker = Array("://".utf8)

    /// Every event and log line is searched once per secret, so the scan runs on libc's vectorised
    /// `memchr` for the needle's byte at `anchor` and `memcmp` for the whole needle around it.
    private static func contains(_ needle: [UInt8], anchor: Int, in hay: UnsafeRawBufferPointer) -> Bool {
        guard anchor < needle.count, hay.count >= needle.count, let base = hay.baseAddress else { return false }
        return needle.withUnsafeBytes { pin -> Bool in
            guard let pinBase = pin.baseAddress else { return false }
            // The needle starts at `start`; its anchor byte is sought at start + anchor.
            var start = 0
            let last = hay.count - pin.count
            while start <= last {
                guard let hit = memchr(base + start + anchor, Int32(pin[anchor]), last - start + 1) else { return false }
                let found = base.distance(to: UnsafeRawPointer(hit)) - anchor
                if memcmp(base + found, pinBase, pin.count) == 0 { return true }
                start = found + 1
            }
            return false
        }
    }

    static func find(_ needle: [UInt8], in haystack: [UInt8], from start: Int) -> Int? {
        let n = needle.count
        guard n > 0, haystack.count - start >= n else { return nil }
        return haystack.withUnsafeBufferPointer { hay -> Int? in
            needle.withUnsafeBufferPointer { pin -> Int? in
                let first = pin[0]
                var i = start
                let last = hay.count - n
                while i <= last {
                    if hay[i] == first {
                        var j = 1
                        while j < n && hay[i + j] == pin[j] { j += 1 }
                        if j == n { return i }
                    }
                    i += 1
                }
                return nil
            }
        }
    }

    static func replaceAll(_ needle: [UInt8], in bytes: [UInt8], with replacement: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var index = 0
        while let hit = find(needle, in: bytes, from: index) {
            out.append(contentsOf: bytes[index..<hit])
            out.append(contentsOf: replacement)
            index = hit + needle.count
        }
        out.append(contentsOf: bytes[index...])
        return out
    }
}
