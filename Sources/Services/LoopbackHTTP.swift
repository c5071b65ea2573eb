import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A small HTTP/1.1 and WebSocket client for probing ComfyUI on this machine: numeric IPv4
/// addresses only, non-blocking sockets polled between short sleeps, so a probe of a hung server
/// holds no thread while it waits and always ends at its timeout.
package enum LoopbackHTTP {
    /// An answer: status code and body.
    package struct Response: Sendable {
        package var status: Int
        package var body: [UInt8]
        package var text: String { String(decoding: body, as: UTF8.self) }
    }

    /// Why a request got no answer.
    package enum Failure: Error, Sendable, Equatable, CustomStringConvertible {
        case refused(String)
        case timedOut
        case closed
        case malformed(String)

        package var description: String {
            switch self {
            case .refused(let reason): return "connection refused (\(reason))"
            case .timedOut: return "no answer in time"
            case .closed: return "the connection closed before an answer"
            case .malformed(let what): return "a malformed answer (\(what))"
            }
        }
    }

    /// `GET path`; the body is read to its Content-Length or to the end (at most `limit` bytes).
    package static func get(
        host: String, port: Int, path: String, timeout: Duration, limit: Int = 64 << 20
    ) async throws(Failure) -> Response {
        let deadline = ContinuousClock.now + timeout
        let socket = try await Socket.connect(host: host, port: port, deadline: deadline)
        defer { socket.close() }
        try await socket.write(Array("GET \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nConnection: close\r\n\r\n".utf8), deadline: deadline)
        var buffer: [UInt8] = []
        var headerEnd: Int?
        var contentLength: Int?
        var status = 0
        while true {
            if headerEnd == nil, let end = find(Array("\r\n\r\n".utf8), in: buffer) {
                headerEnd = end + 4
                let head = String(decoding: buffer[..<end], as: UTF8.self).split(separator: "\r\n")
                let statusLine = head.first?.split(separator: " ") ?? []
                guard statusLine.count >= 2, let code = Int(statusLine[1]) else { throw .malformed("status line") }
                status = code
                for line in head.dropFirst() {
                    let parts = line.split(separator: ":", maxSplits: 1)
                    if parts.count == 2, parts[0].lowercased() == "content-length" {
                        contentLength = Int(parts[1].trimmingCharacters(in: .whitespaces))
                    }
                }
            }
            if let headerEnd, let contentLength, buffer.count - headerEnd >= contentLength {
                return Response(status: status, body: Array(buffer[headerEnd..<(headerEnd + contentLength)]))
            }
            guard buffer.count < limit else { throw .malformed("more than \(limit) bytes") }
            let chunk = try await socket.read(deadline: deadline)
            if chunk.isEmpty {
                guard let headerEnd else { throw .closed }
                return Response(status: status, body: Array(buffer[headerEnd...]))
            }
            buffer += chunk
        }
    }

    /// Opens `path` as a WebSocket (RFC 6455 handshake) and returns the first text message.
    package static func firstWebSocketMessage(host: String, port: Int, path: String, timeout: Duration) async throws(Failure) -> String {
        let deadline = ContinuousClock.now + timeout
        let socket = try await Socket.connect(host: host, port: port, deadline: deadline)
        defer { socket.close() }
        let key = Data((0..<16).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
        let request = "GET \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\n\r\n"
        try await socket.write(Array(request.utf8), deadline: deadline)
        var buffer: [UInt8] = []
        var frames = 0
        while true {
            if frames == 0, let end = find(Array("\r\n\r\n".utf8), in: buffer) {
                let statusLine = String(decoding: buffer[..<end], as: UTF8.self).split(separator: "\r\n").first ?? ""
                guard statusLine.split(separator: " ").dropFirst().first == "101" else {
                    throw .malformed("the WebSocket upgrade was answered '\(statusLine)'")
                }
                buffer.removeFirst(end + 4)
                frames = 1
            }
            if frames > 0, buffer.count >= 2 {
                let opcode = buffer[0] & 0x0f
                var length = Int(buffer[1] & 0x7f)
                var offset = 2
                if length == 126, buffer.count >= 4 {
                    length = Int(buffer[2]) << 8 | Int(buffer[3])
                    offset = 4
                } else if length == 127, buffer.count >= 10 {
                    length = buffer[2..<10].reduce(0) { $0 << 8 | Int($1) }
                    offset = 10
                }
                if buffer[1] & 0x80 != 0 { offset += 4 }  // a masked server frame is out of spec, but skip the key
                if length > 16 << 20 { throw .malformed("a WebSocket frame of \(length) bytes") }
                if (length < 126 || offset > 2), buffer.count >= offset + length {
                    let payload = Array(buffer[offset..<(offset + length)])
                    buffer.removeFirst(offset + length)
                    switch opcode {
                    case 0x1: return String(decoding: payload, as: UTF8.self)
                    case 0x8: throw .closed
                    default: continue  // ping, pong, binary (previews): not the status message
                    }
                }
            }
            let chunk = try await socket.read(deadline: deadline)
            if chunk.isEmpty { throw .closed }
            buffer += chunk
        }
    }

    private static func find(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        for start in 0...(haystack.count - needle.count) where haystack[start] == needle[0] {
            if Array(haystack[start..<(start + needle.count)]) == needle { return start }
        }
        return nil
    }

    /// Whether something accepts connections on `host:port` right now (a bind test would miss a
    /// server on 0.0.0.0; a connect sees it).
    package static func isListening(host: String, port: Int) async -> Bool {
        guard let socket = try? await Socket.connect(host: host, port: port, deadline: .now + .milliseconds(500)) else { return false }
        socket.close()
        return true
    }

    /// Whether this process could bind `host:port` (SO_REUSEADDR, as servers do).
    package static func canBind(host: String, port: Int) -> Bool {
        let fd = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { Glibc.close(fd) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        guard var address = Socket.address(host: host, port: port) else { return false }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}

/// A non-blocking TCP socket whose waits sleep between polls.
struct Socket {
    let fd: Int32

    static func address(host: String, port: Int) -> sockaddr_in? {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(truncatingIfNeeded: port).bigEndian)
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else { return nil }
        return address
    }

    static func connect(host: String, port: Int, deadline: ContinuousClock.Instant) async throws(LoopbackHTTP.Failure) -> Socket {
        guard var address = address(host: host, port: port) else { throw .refused("\(host) is not a numeric IPv4 address") }
        let fd = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .refused(String(cString: strerror(errno))) }
        let socket = Socket(fd: fd)
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if result != 0 && errno != EINPROGRESS {
            let reason = String(cString: strerror(errno))
            socket.close()
            throw .refused(reason)
        }
        do {
            try await socket.wait(for: Int16(POLLOUT), deadline: deadline)
        } catch {
            socket.close()
            throw error
        }
        var error: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
        if error != 0 {
            socket.close()
            throw .refused(String(cString: strerror(error)))
        }
        return socket
    }

    func wait(for events: Int16, deadline: ContinuousClock.Instant) async throws(LoopbackHTTP.Failure) {
        var pause = 1
        while true {
            var entry = pollfd(fd: fd, events: events, revents: 0)
            if poll(&entry, 1, 0) > 0 { return }
            if ContinuousClock.now >= deadline { throw .timedOut }
            // Short at first (a local server answers in a millisecond or two), then at most 25 ms.
            try? await Task.sleep(for: .milliseconds(pause))
            pause = min(25, pause * 2)
            if Task.isCancelled { throw .timedOut }
        }
    }

    func write(_ bytes: [UInt8], deadline: ContinuousClock.Instant) async throws(LoopbackHTTP.Failure) {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if sent > 0 {
                offset += sent
            } else if errno == EAGAIN || errno == EWOULDBLOCK {
                try await wait(for: Int16(POLLOUT), deadline: deadline)
            } else {
                throw .closed
            }
        }
    }

    /// The next bytes; empty at the end of the stream.
    func read(deadline: ContinuousClock.Instant) async throws(LoopbackHTTP.Failure) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count >= 0 { return Array(buffer[..<count]) }
            guard errno == EAGAIN || errno == EWOULDBLOCK else { throw .closed }
            try await wait(for: Int16(POLLIN), deadline: deadline)
        }
    }

    func close() { Glibc.close(fd) }
}
