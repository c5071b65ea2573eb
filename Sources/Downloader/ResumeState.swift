import Foundation

/// What a partial download has finished, saved beside it as `NAME.partial.state` (as aria2 keeps
/// its `.aria2` file): written bytes per chunk and the hasher's position, so a restart fetches only
/// what is missing and does not re-read the hashed prefix. Trusted only while the remote file is unchanged.
struct ResumeState: Codable, Equatable {
    /// 2: chunks follow `ChunkTable.starts` (tapered); a version-1 state is not trusted.
    var version = 2
    /// The URL without secrets, for people reading the file.
    var url: String
    var size: Int64
    var validator: String?
    var chunkSize: Int64
    var written: [Int64]
    var hashedOffset: Int64
    var hashState: String

    enum CodingKeys: String, CodingKey {
        case version, url, size, validator, chunkSize = "chunk_size", written, hashedOffset = "hashed_offset", hashState = "hash_state"
    }

    static func load(_ path: String) -> ResumeState? {
        guard let data = FileManager.default.contents(atPath: path), data.count < 16 << 20,
            let state = try? JSONDecoder().decode(ResumeState.self, from: data), state.version == 2
        else { return nil }
        return state
    }

    /// Usable for `remote` only if the file on the server is the same one (size and validator), and the
    /// saved numbers are consistent with the chunk plan.
    func matches(_ remote: RemoteFile, size remoteSize: Int64) -> Bool {
        guard size == remoteSize, validator == remote.validator, validator != nil, chunkSize > 0 else { return false }
        let starts = ChunkTable.starts(size: size, chunkSize: chunkSize)
        guard written.count == starts.count else { return false }
        for (index, bytes) in written.enumerated() {
            if bytes < 0 || bytes > ChunkTable.length(of: index, starts: starts, size: size) { return false }
        }
        return hashedOffset >= 0 && hashedOffset <= size
    }

    var hasher: SHA256Hasher? {
        Data(base64Encoded: hashState).flatMap { SHA256Hasher(savedState: $0) }
    }

    /// Written atomically (temporary file, then rename), so a crash never leaves half a state file.
    func save(_ path: String) {
        guard let data = try? JSONEncoder().encode(self) else { return }
        let temporary = path + ".tmp"
        guard FileManager.default.createFile(atPath: temporary, contents: data) else { return }
        rename(temporary, path)
    }
}
