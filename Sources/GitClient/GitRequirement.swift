/// A pip requirement line that installs from git (`git+https://host/o/r.git[@ref][#egg=name]`, or
/// `name @ git+https://…`), taken apart so its URL can go through the source policy and its ref
/// can be pinned: the same reading for the lock that pins it and the worker that installs it.
package struct GitRequirement: Sendable, Equatable {
    /// `name` of `name @ git+…`, if written.
    package var name: String?
    /// The repository URL as written (after `git+`, without ref and fragment).
    package var url: String
    /// The ref after `@`, if any.
    package var ref: String?
    /// `#egg=…&subdirectory=…`, as written (with the `#`), or empty.
    package var fragment: String
    /// `; python_version…` environment markers, as written (with the `;`), or empty.
    package var marker: String

    /// Nil when the line does not install from git.
    package init?(_ line: String) {
        var spec = Substring(line)
        if let at = line.range(of: " @ ") {
            name = String(line[..<at.lowerBound]).trimmingCharacters(in: .whitespaces)
            spec = line[at.upperBound...].drop { $0 == " " }
        }
        guard spec.lowercased().hasPrefix("git+") else { return nil }
        var rest = spec.dropFirst(4)
        marker = ""
        if let semicolon = rest.firstIndex(of: ";") {
            marker = String(rest[semicolon...])
            rest = rest[..<semicolon]
        }
        rest = Substring(rest.trimmingCharacters(in: .whitespaces))
        fragment = ""
        if let hash = rest.firstIndex(of: "#") {
            fragment = String(rest[hash...])
            rest = rest[..<hash]
        }
        // A ref is an `@` in the path, after the host (an `@` before it would be credentials).
        if let scheme = rest.range(of: "://"), let slash = rest[scheme.upperBound...].firstIndex(of: "/"),
            let at = rest[slash...].lastIndex(of: "@")
        {
            ref = String(rest[rest.index(after: at)...])
            rest = rest[..<at]
        }
        url = String(rest)
    }

    /// The `egg=` name in the fragment, if any.
    package var egg: String? {
        guard let range = fragment.range(of: #"egg=[A-Za-z0-9._-]+"#, options: .regularExpression) else { return nil }
        return String(fragment[range].dropFirst(4))
    }

    /// The project's name: written, from `egg=`, else the repository's.
    package var projectName: String {
        if let name { return name }
        if let egg { return egg }
        var last = url.split(separator: "/").last.map(String.init) ?? url
        if last.hasSuffix(".git") { last.removeLast(4) }
        return last
    }

    /// A comparable form of the URL for pins: lower case, no `.git`, no trailing `/`.
    package var pinKey: String { Self.pinKey(url) }

    package static func pinKey(_ url: String) -> String {
        var text = url.lowercased()
        while text.hasSuffix("/") { text.removeLast() }
        if text.hasSuffix(".git") { text.removeLast(4) }
        return text
    }

    /// The line again, with another URL and ref.
    package func line(url: String, ref: String?) -> String {
        // A marker after a URL needs the space before its `;` (PEP 508).
        (name.map { "\($0) @ " } ?? "") + "git+" + url + (ref.map { "@" + $0 } ?? "") + fragment + (marker.isEmpty ? "" : " " + marker)
    }
}

/// How requirements files name the files they include: the same reading for the lock that pins
/// their git lines and the worker that installs them.
package enum RequirementsInclude {
    /// The path a `-r FILE`, `-r=FILE`, `--requirement FILE` or `--requirement=FILE` line names, as
    /// written (unchecked); nil for any other line.
    package static func path(in line: String) -> String? {
        let parts = line.split(maxSplits: 1, whereSeparator: { $0 == " " || $0 == "\t" || $0 == "=" })
        guard parts.count == 2, parts[0] == "-r" || parts[0] == "--requirement" else { return nil }
        return parts[1].trimmingCharacters(in: .whitespaces)
    }
}
