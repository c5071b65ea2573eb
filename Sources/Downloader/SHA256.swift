import CSHA256
import Foundation

/// Incremental SHA-256 (libcrypto, with the CPU's SHA extensions) whose state can be saved and restored.
public struct SHA256Hasher: Sendable {
    private var context = provision_sha256_ctx()

    public init() {
        precondition(provision_sha256_context_fits() == 1, "libcrypto's SHA256_CTX does not fit the shim's buffer")
        provision_sha256_init(&context)
    }

    /// Restores a state saved by `savedState`; nil when the bytes are not one.
    public init?(savedState: Data) {
        guard savedState.count == MemoryLayout<provision_sha256_ctx>.size else { return nil }
        self.init()
        _ = withUnsafeMutableBytes(of: &context) { target in savedState.copyBytes(to: target) }
    }

    public var savedState: Data { withUnsafeBytes(of: context) { Data($0) } }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        provision_sha256_update(&context, base, bytes.count)
    }

    public mutating func update(_ data: Data) {
        data.withUnsafeBytes { update($0) }
    }

    /// The digest as lowercase hex; the hasher must not be used afterwards.
    public mutating func finalize() -> String {
        var digest = [UInt8](repeating: 0, count: 32)
        provision_sha256_final(&context, &digest)
        return digest.map { String(format: "%02x", $0) }.joined()
    }

    /// Hashes a whole file (for files already in place).
    public static func hashFile(at path: String, bufferSize: Int = 4 << 20) throws -> String {
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
