import CSHA256
import Foundation

/// Incremental SHA-256 (libcrypto, with the CPU's SHA extensions) whose state can be saved and restored.
package struct SHA256Hasher: Sendable {
    private var context = provision_sha256_ctx()

    package init() {
        precondition(provision_sha256_context_fits() == 1, "libcrypto's SHA256_CTX does not fit the shim's buffer")
        provision_sha256_init(&context)
    }

    /// Restores a state saved by `savedState`; nil when the bytes are not one (another format, damaged).
    package init?(savedState: Data) {
        self.init()
        let restored = savedState.withUnsafeBytes { bytes -> Int32 in
            guard let base = bytes.bindMemory(to: UInt8.self).baseAddress else { return 0 }
            return provision_sha256_import(&context, base, bytes.count)
        }
        guard restored == 1 else { return nil }
    }

    /// The state in the project's own format (version 1: chaining values, byte count, the bytes
    /// waiting for a full block; see CSHA256.h), never libcrypto's in-memory struct.
    package var savedState: Data {
        var out = [UInt8](repeating: 0, count: Int(PROVISION_SHA256_STATE_MAX))
        var copy = context
        let length = provision_sha256_export(&copy, &out)
        return Data(out.prefix(length))
    }

    package mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        provision_sha256_update(&context, base, bytes.count)
    }

    package mutating func update(_ data: Data) {
        data.withUnsafeBytes { update($0) }
    }

    /// The digest as lowercase hex; the hasher must not be used afterwards.
    package mutating func finalize() -> String {
        var digest = [UInt8](repeating: 0, count: 32)
        provision_sha256_final(&context, &digest)
        return digest.map { String(format: "%02x", $0) }.joined()
    }

    /// Hashes a whole file (for files already in place).
    package static func hashFile(at path: String, bufferSize: Int = 4 << 20) throws -> String {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        defer { close(fd) }
        var hasher = SHA256Hasher()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bufferSize, alignment: 4096)
        defer { buffer.deallocate() }
        while true {
            let n = read(fd, buffer.baseAddress, bufferSize)
            if n < 0 {
                if errno == EINTR { continue }
                throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)
            }
            if n == 0 { break }
            hasher.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
        }
        return hasher.finalize()
    }
}
