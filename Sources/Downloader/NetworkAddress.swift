import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// An IPv4 or IPv6 address as a connection sees it, and whether it lies in a range a download must
/// not reach (loopback, private, link-local, cloud metadata, multicast, …).
package struct NetworkAddress: Sendable, Hashable, CustomStringConvertible {
    /// 4 bytes for IPv4, 16 for IPv6, in network order.
    package let bytes: [UInt8]

    package init?(bytes: [UInt8]) {
        guard bytes.count == 4 || bytes.count == 16 else { return nil }
        self.bytes = bytes
    }

    /// Parses a numeric address in its canonical spellings only (`inet_pton`: dotted quad, IPv6 text);
    /// host names and the legacy IPv4 spellings (`127.1`, `0x7f000001`) are not addresses here.
    package init?(numeric text: String) {
        let trimmed = text.hasPrefix("[") && text.hasSuffix("]") ? String(text.dropFirst().dropLast()) : text
        var v4 = in_addr()
        if inet_pton(AF_INET, trimmed, &v4) == 1 {
            self.bytes = withUnsafeBytes(of: &v4) { Array($0) }
            return
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, trimmed, &v6) == 1 {
            self.bytes = withUnsafeBytes(of: &v6) { Array($0) }
            return
        }
        return nil
    }

    /// The address and port of a `sockaddr_in` / `sockaddr_in6`; nil for other families.
    package static func from(_ address: UnsafePointer<sockaddr>, length: Int) -> (address: NetworkAddress, port: Int)? {
        switch Int32(address.pointee.sa_family) {
        case AF_INET where length >= MemoryLayout<sockaddr_in>.size:
            return address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { v4 in
                var raw = v4.pointee.sin_addr
                let bytes = withUnsafeBytes(of: &raw) { Array($0) }
                return NetworkAddress(bytes: bytes).map { ($0, Int(UInt16(bigEndian: v4.pointee.sin_port))) }
            }
        case AF_INET6 where length >= MemoryLayout<sockaddr_in6>.size:
            return address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { v6 in
                var raw = v6.pointee.sin6_addr
                let bytes = withUnsafeBytes(of: &raw) { Array($0) }
                return NetworkAddress(bytes: bytes).map { ($0, Int(UInt16(bigEndian: v6.pointee.sin6_port))) }
            }
        default:
            return nil
        }
    }

    /// Every address `host` resolves to, as the system resolver (and so libcurl) reads it: this
    /// includes the legacy IPv4 spellings `2130706433`, `0x7f000001`, `127.1`, `0177.0.0.1`, `0`.
    /// Empty when the name does not resolve.
    package static func resolve(_ host: String) -> [NetworkAddress] {
        let name = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(name, nil, &hints, &list) == 0, let first = list else { return [] }
        defer { freeaddrinfo(list) }
        var found: [NetworkAddress] = []
        var entry: UnsafeMutablePointer<addrinfo>? = first
        while let current = entry {
            if let address = current.pointee.ai_addr, let parsed = from(address, length: Int(current.pointee.ai_addrlen)),
                !found.contains(parsed.address)
            {
                found.append(parsed.address)
            }
            entry = current.pointee.ai_next
        }
        return found
    }

    package var isIPv4: Bool { bytes.count == 4 }

    /// The IPv4 address an IPv6 address carries and is routed to: mapped `::ffff:a.b.c.d`, the old
    /// compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d` and 6to4 `2002:aabb:ccdd::`.
    package var embeddedIPv4: NetworkAddress? {
        guard bytes.count == 16 else { return nil }
        let b = bytes
        if b[0..<10].allSatisfy({ $0 == 0 }) && b[10] == 0xff && b[11] == 0xff { return NetworkAddress(bytes: Array(b[12..<16])) }
        if b[0..<12].allSatisfy({ $0 == 0 }) && !(b[12] == 0 && b[13] == 0 && b[14] == 0 && b[15] <= 1) {
            return NetworkAddress(bytes: Array(b[12..<16]))
        }
        if b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && b[4..<12].allSatisfy({ $0 == 0 }) {
            return NetworkAddress(bytes: Array(b[12..<16]))
        }
        if b[0] == 0x20 && b[1] == 0x02 { return NetworkAddress(bytes: Array(b[2..<6])) }
        return nil
    }

    /// The name of the non-public range the address lies in ("loopback", "private", …), nil for a
    /// public address.
    package var restrictedRange: String? {
        if let inner = embeddedIPv4 { return inner.restrictedRange }
        return isIPv4 ? Self.restrictedIPv4(bytes) : Self.restrictedIPv6(bytes)
    }

    private static func restrictedIPv4(_ b: [UInt8]) -> String? {
        switch (b[0], b[1], b[2]) {
        case (0, _, _): return "'this network' (0.0.0.0/8)"
        case (127, _, _): return "loopback"
        case (10, _, _), (172, 16...31, _), (192, 168, _): return "private"
        case (100, 64...127, _): return "carrier-grade NAT (100.64.0.0/10)"
        case (169, 254, _): return "link-local (cloud metadata lives here)"
        case (192, 0, 0): return "IETF protocol assignments (192.0.0.0/24)"
        case (192, 0, 2), (198, 51, 100), (203, 0, 113): return "documentation"
        case (192, 88, 99): return "6to4 relay anycast"
        case (198, 18...19, _): return "benchmarking (198.18.0.0/15)"
        case (224...239, _, _): return "multicast"
        case (240...255, _, _): return b == [255, 255, 255, 255] ? "broadcast" : "reserved (240.0.0.0/4)"
        default: return nil
        }
    }

    private static func restrictedIPv6(_ b: [UInt8]) -> String? {
        if b[0..<15].allSatisfy({ $0 == 0 }) {
            if b[15] == 1 { return "loopback" }
            if b[15] == 0 { return "unspecified (::)" }
        }
        switch (b[0], b[1]) {
        case (0xfc...0xfd, _): return "unique-local (fc00::/7)"
        case (0xfe, 0x80...0xbf): return "link-local (fe80::/10)"
        case (0xfe, 0xc0...0xff): return "site-local (fec0::/10)"
        case (0xff, _): return "multicast"
        case (0x01, 0x00) where b[2..<8].allSatisfy({ $0 == 0 }): return "discard-only (100::/64)"
        case (0x20, 0x01) where b[2] == 0x0d && b[3] == 0xb8: return "documentation (2001:db8::/32)"
        case (0x20, 0x01) where b[2] == 0 && b[3] == 0: return "Teredo (2001::/32)"
        default: break
        }
        // Anything else in ::/8 (other than the forms handled above) is reserved.
        if b[0] == 0 { return "reserved (::/8)" }
        return nil
    }

    package var description: String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        var raw = bytes
        let family = isIPv4 ? AF_INET : AF_INET6
        let text = raw.withUnsafeMutableBytes { inet_ntop(family, $0.baseAddress, &buffer, socklen_t(buffer.count)) }
        guard text != nil else { return "?" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
