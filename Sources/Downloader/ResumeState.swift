import Foundation

/// What a partial download has finished, saved beside it as `NAME.partial.state` (as aria2 keeps
/// its `.aria2` file): written bytes per chunk and the hasher's position, so a restart fetches only
/// what is missing and does not re-read the hashed prefix. Trusted only while the remote file is unchanged.
struct ResumeState: Codable, Equatable {
    /// 2: chunks follow `ChunkPlan.starts` (tapered). 3: `hash_state` is provision's own SHA-256
    /// state format (CSHA256.h), not libcrypto's struct. 4: the chunks may start with a ramp, which
    /// a build that reads only version 3 would not know of and place bytes wrongly. Version 3 is
    /// still read (no ramp); older states are not trusted.
    static let currentVersion = 4
    static let readableVersions = 3...4
    var version = ResumeState.currentVersion
    /// The URL without secrets, for people reading the file.
    var url: String
    var size: Int64
    var validator: String?
    var chunkSize: Int64
    /// `ChunkPlan.taper` of the download that saved it; absent in states saved before it depended
    /// on the number of connections, whose chunks were cut with 16.
    var taper: Int64?
    /// `ChunkPlan.ramp` of the download that saved it; absent in version 3 states, which had none.
    var ramp: Int64?
    var written: [Int64]
    var hashedOffset: Int64
    var hashState: String

    enum CodingKeys: String, CodingKey {
        case version, url, size, validator, chunkSize = "chunk_size", taper, ramp, written, hashedOffset = "hashed_offset", hashState = "hash_state"
    }

    static func load(_ path: String) -> ResumeState? {
        guard let data = FileManager.default.contents(atPath: path), data.count < 16 << 20,
            let state = try? JSONDecoder().decode(ResumeState.self, from: data), readableVersions.contains(state.version)
        else { return nil }
        return state
    }

    /// Usable for `remote` only if the file on the server is the same one (size and validator), and the
    /// saved numbers are consistent with the chunk plan.
    func matches(_ remote: RemoteFile, size remoteSize: Int64) -> Bool {
        guard size == remoteSize, validator == remote.validator, validator != nil, chunkSize > 0 else { return false }
        guard chunkTaper > 0, (1...64).contains(chunkRamp) else { return false }
        let starts = ChunkPlan.starts(size: size, chunkSize: chunkSize, taper: chunkTaper, ramp: chunkRamp)
        guard written.count == starts.count else { return false }
        for (index, bytes) in written.enumerated() {
            if bytes < 0 || bytes > ChunkPlan.length(of: index, starts: starts, size: size) { return false }
        }
        return hashedOffset >= 0 && hashedOffset <= size
    }

    /// The taper the saved chunks were cut with.
    var chunkTaper: Int64 { taper ?? 16 }

    /// The ramp the saved chunks start with (1: none).
    var chunkRamp: Int64 { ramp ?? 1 }

    var hasher: SHA256Hasher? {
        // The state must have hashed exactly the prefix the file says (bytes 33-40: the count).
        guard let data = Data(base64Encoded: hashState), data.count >= 42,
            data[data.startIndex + 33..<data.startIndex + 41].reduce(Int64(0), { $0 << 8 | Int64($1) }) == hashedOffset
        else { return nil }
        return SHA256Hasher(savedState: data)
    }

    /// Written atomically (temporary file, then rename), so a crash never leaves half a state file.
    /// The temporary file has one fixed name, which the next save reuses: Foundation's atomic writes
    /// (`createFile`) go through a randomly named `.dat.nosync…` file that a SIGKILL at the wrong
    /// moment left in the models folder for good (found by bench/chaos).
    func save(_ path: String) {
        guard let data = try? JSONEncoder().encode(self) else { return }
        let temporary = path + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return }
        let written = data.withUnsafeBytes { buffer -> Int in
            guard let base = buffer.baseAddress else { return 0 }
            var done = 0
            while done < buffer.count {
                let n = write(fd, base + done, buffer.count - done)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { break }
                done += n
            }
            return done
        }
        close(fd)
        guard written == data.count else { unlink(temporary); return }
        rename(temporary, path)
    }
}
