import Foundation

/// Bytes that do not compress and are the same for the same seed (xorshift64): the demo's model
/// files and the tests' origin files.
package struct PseudoRandomBytes: Sendable {
    private var state: UInt64

    package init(seed: UInt64) {
        state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
    }

    package mutating func next() -> UInt64 {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return state
    }

    /// The next `count` bytes, eight per step (little-endian).
    package mutating func data(count: Int) -> Data {
        var words = [UInt64](repeating: 0, count: (max(0, count) + 7) / 8)
        for index in words.indices { words[index] = next().littleEndian }
        return words.withUnsafeBytes { Data($0.prefix(max(0, count))) }
    }

    /// Writes `size` bytes of the stream for `seed` to `path` (replacing it), a MiB at a time,
    /// handing each piece to `piece` (to hash it while writing).
    package static func write(_ path: String, size: Int64, seed: UInt64, piece: (Data) -> Void = { _ in }) throws {
        guard FileManager.default.createFile(atPath: path, contents: nil), let handle = FileHandle(forWritingAtPath: path) else {
            throw FixtureError.write(path)
        }
        defer { try? handle.close() }
        var bytes = PseudoRandomBytes(seed: seed)
        var left = size
        while left > 0 {
            let data = bytes.data(count: Int(min(left, 1 << 20)))
            piece(data)
            try handle.write(contentsOf: data)
            left -= Int64(data.count)
        }
    }
}
