import ComponentSpec
import Downloader
import Foundation

/// The registry's lookup tables prepared once, so an analysis reads them in milliseconds instead of
/// parsing megabytes of JSON on every call. A line-oriented file of our own:
///
///     provision-registry-index <TAB> 1 <TAB> sha256 of the body <LF>
///     body: input lines (role, size, mtime in ns, sha256 of each registry file it was built from), then
///     P key id repository [=title] | C type i,j… | E type i,j… | R i pattern | I id i | N name i,j… | B type
///
/// (i, j: package line numbers; fields escaped with \\ \t \n \r). It is trusted only when its version and
/// checksum hold and every input still has the recorded size, modification time and content hash;
/// anything else (stale, truncated, edited, another version) is rebuilt from the JSON.
struct RegistryIndex {
    static let magic = "provision-registry-index"
    static let version = 1
    /// Larger than any index of a registry that the JSON limits (256 MiB) admit.
    static let maxBytes = 512 << 20

    /// One registry file as the index saw it; `size` -1 when it was absent.
    struct Input: Equatable {
        var role: String
        var size: Int64
        var modified: Int64
        var sha256: String

        /// Reads `path` (at most `limit` bytes) and fingerprints it; nil data when the file is absent.
        static func read(role: String, path: String, limit: Int) -> (input: Input, data: Data?) {
            var info = stat()
            guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, Int(info.st_size) <= limit,
                let data = FileManager.default.contents(atPath: path), data.count <= limit
            else { return (Input(role: role, size: -1, modified: 0, sha256: "-"), nil) }
            var hasher = SHA256Hasher()
            hasher.update(data)
            let modified = Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec)
            return (Input(role: role, size: Int64(info.st_size), modified: modified, sha256: hasher.finalize()), data)
        }
    }

    /// Why an index file was not used.
    enum Problem: Error, Equatable, CustomStringConvertible {
        case missing
        case unreadable(String)
        case wrongVersion(String)
        case badChecksum
        case stale(role: String)
        case malformed(line: Int)

        var description: String {
            switch self {
            case .missing: return "there was none"
            case .unreadable(let why): return "it could not be read (\(why))"
            case .wrongVersion(let header): return "it has another format (\(header))"
            case .badChecksum: return "its checksum does not match its contents (truncated or damaged)"
            case .stale(let role): return "the registry's \(role) file changed since it was built"
            case .malformed(let line): return "its line \(line) is malformed"
            }
        }
    }

    /// The index file's bytes for `registry`, built from `inputs`.
    static func encode(_ registry: NodeRegistry, inputs: [Input]) -> Data {
        var body = ""
        body.reserveCapacity(2 << 20)
        for input in inputs {
            body += "input\t\(escape(input.role))\t\(input.size)\t\(input.modified)\t\(escape(input.sha256))\n"
        }
        let keys = registry.packages.keys.sorted()
        var number: [String: Int] = [:]
        for (index, key) in keys.enumerated() {
            number[key] = index
            guard let package = registry.packages[key] else { continue }
            body += "P\t\(escape(key))\t\(escape(package.package))\t\(escape(package.repository))\t\(package.title.map { "=" + escape($0) } ?? "")\n"
        }
        func list(_ keys: [String]) -> String { keys.compactMap { number[$0].map(String.init) }.joined(separator: ",") }
        for (type, claimants) in registry.claims.sorted(by: { $0.key < $1.key }) { body += "C\t\(escape(type))\t\(list(claimants))\n" }
        for (type, claimants) in registry.preemptions.sorted(by: { $0.key < $1.key }) { body += "E\t\(escape(type))\t\(list(claimants))\n" }
        for pattern in registry.patterns {
            guard let index = number[pattern.key] else { continue }
            body += "R\t\(index)\t\(escape(pattern.regex.pattern))\n"
        }
        for (id, key) in registry.ids.sorted(by: { $0.key < $1.key }) {
            guard let index = number[key] else { continue }
            body += "I\t\(escape(id))\t\(index)\n"
        }
        for (name, keys) in registry.repositoryNames.sorted(by: { $0.key < $1.key }) { body += "N\t\(escape(name))\t\(list(keys))\n" }
        for type in registry.coreTypes.sorted() { body += "B\t\(escape(type))\n" }
        let bodyData = Data(body.utf8)
        var hasher = SHA256Hasher()
        hasher.update(bodyData)
        return Data("\(magic)\t\(version)\t\(hasher.finalize())\n".utf8) + bodyData
    }

    /// The registry in `data` when it is an index of this version, undamaged, built from exactly `inputs`.
    static func decode(_ data: Data, inputs: [Input], source: String, version registryVersion: String?) throws(Problem) -> NodeRegistry {
        let bytes = [UInt8](data)
        guard let newline = bytes.firstIndex(of: 0x0A) else { throw .wrongVersion("no header line") }
        let header = String(decoding: bytes[..<newline], as: UTF8.self).split(separator: "\t", omittingEmptySubsequences: false)
        guard header.count == 3, header[0] == magic, header[1] == String(version) else {
            throw .wrongVersion(String(decoding: bytes[..<min(newline, 80)], as: UTF8.self))
        }
        let body = bytes[(newline + 1)...]
        var hasher = SHA256Hasher()
        body.withUnsafeBytes { hasher.update($0) }
        guard hasher.finalize() == header[2] else { throw .badChecksum }

        var registry = NodeRegistry(source: source)
        registry.version = registryVersion
        var keys: [String] = []
        var seenInputs: [Input] = []
        var lineNumber = 1
        var start = body.startIndex
        func indices(_ field: String) -> [String]? {
            var out: [String] = []
            for part in field.split(separator: ",") {
                guard let index = Int(part), keys.indices.contains(index) else { return nil }
                out.append(keys[index])
            }
            return out
        }
        while start < body.endIndex {
            lineNumber += 1
            let end = body[start...].firstIndex(of: 0x0A) ?? body.endIndex
            let fields = body[start..<end].split(separator: 0x09, omittingEmptySubsequences: false).map(unescape)
            start = end + 1
            guard let tag = fields.first else { throw .malformed(line: lineNumber) }
            switch (tag, fields.count) {
            case ("input", 5):
                guard let size = Int64(fields[2]), let modified = Int64(fields[3]) else { throw .malformed(line: lineNumber) }
                seenInputs.append(Input(role: fields[1], size: size, modified: modified, sha256: fields[4]))
            case ("P", 5):
                keys.append(fields[1])
                let title = fields[4].hasPrefix("=") ? String(fields[4].dropFirst()) : nil
                registry.packages[fields[1]] = NodePackage(package: fields[2], repository: fields[3], title: title)
            case ("C", 3):
                guard let claimants = indices(fields[2]) else { throw .malformed(line: lineNumber) }
                registry.claims[fields[1]] = claimants
            case ("E", 3):
                guard let claimants = indices(fields[2]) else { throw .malformed(line: lineNumber) }
                registry.preemptions[fields[1]] = claimants
            case ("R", 3):
                guard let key = indices(fields[1])?.first, let regex = try? NSRegularExpression(pattern: fields[2]) else {
                    throw .malformed(line: lineNumber)
                }
                registry.patterns.append((key, regex))
            case ("I", 3):
                guard let key = indices(fields[2])?.first else { throw .malformed(line: lineNumber) }
                registry.ids[fields[1]] = key
            case ("N", 3):
                guard let named = indices(fields[2]) else { throw .malformed(line: lineNumber) }
                registry.repositoryNames[fields[1]] = named
            case ("B", 2):
                registry.coreTypes.insert(fields[1])
            default:
                throw .malformed(line: lineNumber)
            }
            // The inputs come first: a stale index is refused before its tables are read.
            if tag == "input", seenInputs.count == inputs.count, seenInputs != inputs {
                throw .stale(role: zip(seenInputs, inputs).first { $0 != $1 }?.1.role ?? "?")
            }
        }
        guard seenInputs == inputs else { throw .stale(role: inputs.first { !seenInputs.contains($0) }?.role ?? "?") }
        return registry
    }

    static func escape(_ text: String) -> String {
        guard text.utf8.contains(where: { $0 == 0x5C || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D }) else { return text }
        var out = ""
        for character in text.unicodeScalars {
            switch character {
            case "\\": out += "\\\\"
            case "\t": out += "\\t"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            default: out.unicodeScalars.append(character)
            }
        }
        return out
    }

    static func unescape(_ bytes: ArraySlice<UInt8>) -> String {
        guard bytes.contains(0x5C) else { return String(decoding: bytes, as: UTF8.self) }
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var escaped = false
        for byte in bytes {
            if escaped {
                switch byte {
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                default: out.append(byte)
                }
                escaped = false
            } else if byte == 0x5C {
                escaped = true
            } else {
                out.append(byte)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
