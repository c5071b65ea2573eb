import Foundation
import Scheduler

/// One requirement line of one node, after the checks.
struct Requirement: Sendable, Equatable {
    var node: String
    var line: String
    /// The normalised project name (PEP 503), for conflict reports.
    var name: String
}

/// Reads a node's `requirements.txt`, refusing lines that reach outside the node (other indexes,
/// editable or local paths, VCS or file URLs) unless allowed, and inlining `-r` files inside it.
enum RequirementsReader {
    static func read(node: String, directory: String, allowOutside: Bool) throws(JobFailure) -> [Requirement] {
        try read(node: node, file: directory + "/requirements.txt", root: directory, allowOutside: allowOutside, depth: 0)
    }

    private static func read(node: String, file: String, root: String, allowOutside: Bool, depth: Int) throws(JobFailure) -> [Requirement] {
        guard depth < 5 else { throw .invalidPayload("the requirements of \(node) include each other too deeply") }
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { return [] }
        var result: [Requirement] = []
        for (number, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var line = String(raw)
            if let hash = line.range(of: " #") ?? (line.hasPrefix("#") ? line.range(of: "#") : nil) { line = String(line[..<hash.lowerBound]) }
            line = line.trimmingCharacters(in: .whitespaces)
            if line.isEmpty { continue }
            let whereabouts = "\(node)'s \((file as NSString).lastPathComponent) line \(number + 1)"
            func refuse(_ why: String) -> JobFailure {
                JobFailure(type: "requirements_refused", message: "\(whereabouts) \(why) ('\(line.prefix(120))'); allow it with allow_outside in the manifest", retryable: false)
            }
            if line.hasPrefix("-") {
                let parts = line.split(separator: " ", maxSplits: 1).map(String.init)
                let option = parts[0]
                if (option == "-r" || option == "--requirement") && parts.count == 2 {
                    let included = ((file as NSString).deletingLastPathComponent as NSString).appendingPathComponent(parts[1].trimmingCharacters(in: .whitespaces))
                    let resolvedRoot = URL(fileURLWithPath: root).resolvingSymlinksInPath().path
                    let resolved = URL(fileURLWithPath: included).resolvingSymlinksInPath().path
                    guard resolved.hasPrefix(resolvedRoot + "/") else { throw refuse("includes a file outside the node") }
                    result += try read(node: node, file: resolved, root: root, allowOutside: allowOutside, depth: depth + 1)
                    continue
                }
                if allowOutside { result.append(Requirement(node: node, line: line, name: "")); continue }
                throw refuse("uses the option \(option), which reaches outside the node")
            }
            let lower = line.lowercased()
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

    /// `Torch_Vision[extra]>=1; python_version>'3'` → `torch-vision`.
    static func projectName(_ line: String) -> String {
        let name = line.prefix { $0.isLetter || $0.isNumber || "._-".contains($0) }
        return normalise(String(name))
    }

    static func normalise(_ name: String) -> String {
        name.lowercased().replacingOccurrences(of: "_", with: "-").replacingOccurrences(of: ".", with: "-")
    }
}
