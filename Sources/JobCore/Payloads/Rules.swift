/// Checks payload values share: names that become folders, refs that reach git, paths under a root.
package enum PayloadRules {
    /// Node folder names: letters, digits, '.', '_', '-'; not starting with '.' or '-'; at most 100.
    package static func isNodeName(_ name: String) -> Bool {
        guard let first = name.first, first.isASCII, first.isLetter || first.isNumber || first == "_", name.utf8.count <= 100 else { return false }
        return name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) }
    }

    /// 7 to 40 hexadecimal digits.
    package static func isCommit(_ text: String) -> Bool {
        (7...40).contains(text.utf8.count) && text.utf8.allSatisfy(isHexByte)
    }

    /// 40 lower-case hexadecimal digits.
    package static func isFullCommit(_ text: String) -> Bool {
        text.utf8.count == 40 && text.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
    }

    /// Tags and branches: letters, digits and `._/+-`, starting with a letter, digit or `_`, no `..`.
    package static func isRefName(_ ref: String) -> Bool {
        guard let first = ref.first, first.isASCII, first.isLetter || first.isNumber || first == "_", ref.utf8.count <= 200,
            !ref.contains(".."), !ref.hasSuffix(".lock"), !ref.hasSuffix("/")
        else { return false }
        return ref.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "._/+-".contains($0)) }
    }

    /// 64 hexadecimal digits, either case. Bytes, not Characters: `Character.isHexDigit` also
    /// takes fullwidth digits, so 61 ASCII digits and one fullwidth one made 64 UTF-8 bytes.
    package static func isSHA256(_ text: String) -> Bool {
        text.utf8.count == 64 && text.utf8.allSatisfy(isHexByte)
    }

    static func isHexByte(_ byte: UInt8) -> Bool {
        (byte >= 48 && byte <= 57) || (byte >= 97 && byte <= 102) || (byte >= 65 && byte <= 70)
    }

    /// A relative path: no empty, `.` or `..` components, not absolute, no control characters.
    package static func isRelativePath(_ path: String) -> Bool {
        guard !path.isEmpty, path.utf8.count <= 1024, !path.hasPrefix("/") else { return false }
        return path.split(separator: "/", omittingEmptySubsequences: false).allSatisfy { part in
            !part.isEmpty && part != "." && part != ".." && !part.unicodeScalars.contains { $0.value < 32 || $0.value == 127 || $0 == "\\" }
        }
    }

    /// At most one of commit, tag and branch; each well formed.
    package static func checkPin(commit: String?, tag: String?, branch: String?, owner: String) throws(JobFailure) {
        guard [commit, tag, branch].compactMap({ $0 }).count <= 1 else { throw .invalidPayload("\(owner) names more than one of commit, tag and branch") }
        if let commit, !isCommit(commit) { throw .invalidPayload("\(owner) has a commit that is not 7-40 hexadecimal digits") }
        for ref in [tag, branch].compactMap({ $0 }) where !isRefName(ref) {
            throw .invalidPayload("\(owner) has the ref '\(ref.prefix(60))', which is not a plain tag or branch name")
        }
    }

    /// Environment keys a node's `.env` and scripts may get.
    package static func checkEnvironmentKeys(_ env: [String: String]?, owner: String) throws(JobFailure) {
        for key in (env ?? [:]).keys where !EnvironmentTemplate.isIdentifier(key) {
            throw .invalidPayload("\(owner) has the env key '\(key.prefix(60))', which is not an identifier")
        }
    }
}
