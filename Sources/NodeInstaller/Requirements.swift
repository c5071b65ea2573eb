import Foundation
import GitClient
import JobCore

/// One requirement line of one node, after the checks.
struct Requirement: Sendable, Equatable {
    var node: String
    var line: String
    /// The normalised project name (PEP 503), for conflict reports.
    var name: String
}

/// Reads a node's `requirements.txt`, refusing lines that reach outside the node (other indexes,
/// editable or local paths, file URLs, files outside the node) unless allowed, inlining `-r` files
/// inside it, and passing `git+https` lines through the same source policy and rewrites as the
/// node itself (real nodes depend on such packages: was-node-suite on img2texture).
enum RequirementsReader {
    static func read(node: String, directory: String, allowOutside: Bool, sources: GitSourcePolicy, pins: [String: String] = [:]) throws(JobFailure) -> [Requirement] {
        let root = URL(fileURLWithPath: directory).resolvingSymlinksInPath().path
        return try read(node: node, file: directory + "/requirements.txt", root: root, allowOutside: allowOutside, sources: sources, pins: pins, depth: 0)
    }

    /// The logical lines of a requirements file as pip reads them: split on any line ending, a
    /// trailing `\\` joins the next line unless the line holds a comment, and a `#` at the start or
    /// after whitespace starts a comment.
    static func logicalLines(_ text: String) -> [(number: Int, line: String)] {
        var result: [(number: Int, line: String)] = []
        var pending = ""
        var start = 0
        func finish(_ line: String) {
            var line = line
            if let comment = line.range(of: #"(^|\s)#"#, options: .regularExpression) { line = String(line[..<comment.lowerBound]) }
            line = line.trimmingCharacters(in: .whitespaces)
            if !line.isEmpty { result.append((start, line)) }
        }
        let separators: Set<Character> = ["\n", "\r", "\r\n", "\u{0B}", "\u{0C}", "\u{85}", "\u{2028}", "\u{2029}"]
        for (index, raw) in text.split(omittingEmptySubsequences: false, whereSeparator: { separators.contains($0) }).enumerated() {
            if pending.isEmpty { start = index + 1 }
            let line = String(raw)
            if line.hasSuffix("\\"), line.range(of: #"(^|\s)#"#, options: .regularExpression) == nil {
                pending += line.dropLast()
                continue
            }
            finish(pending + line)
            pending = ""
        }
        if !pending.isEmpty { finish(pending) }
        return result
    }

    private static func read(node: String, file: String, root: String, allowOutside: Bool, sources: GitSourcePolicy, pins: [String: String], depth: Int) throws(JobFailure) -> [Requirement] {
        guard depth < 5 else { throw .invalidPayload("the requirements of \(node) include each other too deeply") }
        let name = (file as NSString).lastPathComponent
        guard FileManager.default.fileExists(atPath: file) else { return [] }
        // A symlink may point anywhere: only what resolves inside the node's folder is read.
        let resolvedFile = URL(fileURLWithPath: file).resolvingSymlinksInPath().path
        guard resolvedFile.hasPrefix(root + "/") else {
            throw JobFailure(type: "requirements_refused", message: "\(node)'s \(name) is a link to a file outside the node", retryable: false)
        }
        guard let data = FileManager.default.contents(atPath: resolvedFile), data.count <= 1 << 20 else {
            throw JobFailure(type: "requirements_refused", message: "\(node)'s \(name) cannot be read or is larger than 1 MiB", retryable: false)
        }
        var result: [Requirement] = []
        for (number, line) in logicalLines(String(decoding: data, as: UTF8.self)) {
            let whereabouts = "\(node)'s \(name) line \(number)"
            func refuse(_ why: String) -> JobFailure {
                JobFailure(type: "requirements_refused", message: "\(whereabouts) \(why) ('\(GitSourcePolicy.withoutCredentials(String(line.prefix(120))))'); an operator allows it with allow_outside on the node in the manifest", retryable: false)
            }
            guard !line.unicodeScalars.contains(where: { $0.value < 0x20 && $0 != "\t" }) else { throw refuse("contains control characters") }
            if line.hasPrefix("-") {
                if let path = RequirementsInclude.path(in: line) {
                    guard !path.hasPrefix("/"), !path.contains("://") else { throw refuse("includes a file outside the node") }
                    let included = ((file as NSString).deletingLastPathComponent as NSString).appendingPathComponent(path)
                    let resolved = URL(fileURLWithPath: included).resolvingSymlinksInPath().path
                    guard resolved.hasPrefix(root + "/") else { throw refuse("includes a file outside the node") }
                    result += try read(node: node, file: resolved, root: root, allowOutside: allowOutside, sources: sources, pins: pins, depth: depth + 1)
                    continue
                }
                if allowOutside { result.append(Requirement(node: node, line: line, name: "")); continue }
                let option = line.prefix { $0 != " " && $0 != "\t" && $0 != "=" }
                throw refuse("uses the option \(option), which reaches outside the node")
            }
            let lower = line.lowercased()
            if lower.contains("git+") {
                if let vcs = try vcsRequirement(line, sources: sources, pins: pins, refuse: refuse) {
                    result.append(Requirement(node: node, line: vcs.line, name: vcs.name))
                    continue
                }
            }
            if lower.contains("://") || lower.hasPrefix("file:") || lower.contains("git+") || lower.contains(" @ ") || line.hasPrefix(".") || line.hasPrefix("/") {
                if allowOutside { result.append(Requirement(node: node, line: line, name: projectName(line))); continue }
                throw refuse("names a URL or a local path")
            }
            let name = projectName(line)
            guard !name.isEmpty else { throw refuse("is not a requirement") }
            result.append(Requirement(node: node, line: line, name: name))
        }
        return result
    }

    /// A git requirement line with its URL checked and rewritten by the node source policy (https
    /// only; file:// only where local sources are allowed), its ref checked like a node's, and the
    /// lock's commit for that repository in place of the ref when `pins` has one. Nil when the
    /// line is not a git requirement.
    static func vcsRequirement(_ line: String, sources: GitSourcePolicy, pins: [String: String] = [:], refuse: (String) -> JobFailure) throws(JobFailure) -> (line: String, name: String)? {
        guard let requirement = GitRequirement(line) else { return nil }
        if let ref = requirement.ref {
            guard GitSourcePolicy.isSafeRef(ref) || GitSourcePolicy.isCommit(ref) else { throw refuse("names the git ref '\(ref.prefix(60))', which is not a plain tag, branch or commit") }
        }
        let url: String
        do {
            url = try sources.resolve(requirement.url)
        } catch {
            throw refuse("names a git source this worker refuses: \(error.message)")
        }
        // `#egg=NAME&subdirectory=PATH`, in any order; the subdirectory stays inside the checkout.
        for part in requirement.fragment.dropFirst().split(separator: "&") {
            let pair = part.split(separator: "=", maxSplits: 1).map(String.init)
            let valid: Bool
            switch (pair.first, pair.count) {
            case ("egg", 2): valid = pair[1].range(of: #"^[A-Za-z0-9._-]+$"#, options: .regularExpression) != nil
            case ("subdirectory", 2): valid = PayloadRules.isRelativePath(pair[1])
            default: valid = false
            }
            guard valid else { throw refuse("has a fragment other than #egg=NAME and a relative &subdirectory=PATH") }
        }
        let pinned = pins[requirement.pinKey] ?? requirement.ref
        return (requirement.line(url: url, ref: pinned), normalise(requirement.name.map(projectName) ?? requirement.projectName))
    }

    /// `Torch_Vision[extra]>=1; python_version>'3'` → `torch-vision`.
    static func projectName(_ line: String) -> String {
        let name = line.prefix { $0.isLetter || $0.isNumber || "._-".contains($0) }
        return normalise(String(name))
    }

    static func normalise(_ name: String) -> String {
        name.lowercased().replacingOccurrences(of: "_", with: "-").replacingOccurrences(of: ".", with: "-")
    }
}
