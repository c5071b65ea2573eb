import GitClient

/// Why a spec, lockfile or discovery response cannot be used: the file, and the node, model or
/// field at fault, as one sentence (`description`).
package enum SpecError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Which kind of document a check ran on; the sentences differ a little between them.
    package enum Document: String, Sendable, Equatable {
        case spec, lockfile
    }

    /// Why a model path was refused.
    package enum PathProblem: Sendable, Equatable {
        /// Empty, absolute or longer than 1024 bytes.
        case length
        /// An empty, `.` or `..` component, or a `.partial` ending.
        case components
        /// Control characters or backslashes.
        case characters
    }

    // Reading the file.
    case unreadable(file: String, what: String, reason: String?)
    case notRegularFile(file: String, what: String)
    case tooLarge(file: String, what: String, size: Int?, limit: Int)
    case notJSON(file: String, what: String, detail: String)
    /// Valid JSON whose shape is wrong; `detail` names the field path.
    case malformed(file: String, what: String, detail: String)

    // Merging several documents.
    case modelWithoutDirectory(file: String)
    case modelWithoutFilename(file: String)
    case conflictingComfyUI(first: String, second: String)
    case conflictingNode(node: String, first: String, second: String)
    case conflictingModelURL(model: String, first: String, second: String)

    // Checking one document.
    case unsupportedLockVersion(file: String, version: Int, supported: Int)
    /// `subject` is a node name, or "ComfyUI".
    case notFullCommit(file: String, subject: String, commit: String)
    case invalidNodeName(file: String, document: Document, name: String)
    case duplicateNode(file: String, document: Document, node: String)
    case invalidEnvName(file: String, document: Document, node: String, variable: String)
    case invalidSHA256(file: String, document: Document, model: String)
    case negativeSize(file: String, document: Document, model: String)
    case duplicateModel(file: String, document: Document, model: String)
    /// `field` says which path (e.g. "directory of model x").
    case invalidModelPath(field: String, path: String, problem: PathProblem)
    /// `node` is nil for ComfyUI itself.
    case conflictingPins(file: String, node: String?)
    case invalidCommitPrefix(file: String, node: String?, commit: String)
    case invalidNodeURL(file: String, node: String)
    /// `url` is shown without credentials or query.
    case notDownloadable(file: String, model: String, url: String)
    case invalidRequirement(file: String, line: String)
    /// A tag or branch name git would refuse.
    case invalidRef(GitError)

    package var description: String {
        // Messages quote what an input said (names, URLs); clipped so a 1 MiB name stays a sentence.
        clippedSentence(sentence)
    }

    var sentence: String {
        switch self {
        case .unreadable(let file, let what, let reason): "The \(what) \(file) cannot be read\(reason.map { ": \($0)" } ?? "")."
        case .notRegularFile(let file, let what): "The \(what) \(file) is not a regular file."
        case .tooLarge(let file, let what, let size?, let limit): "The \(what) \(file) is \(size) bytes, more than the limit of \(limit)."
        case .tooLarge(let file, let what, nil, let limit): "The \(what) \(file) is more than the limit of \(limit) bytes."
        case .notJSON(let file, let what, let detail): "The \(what) \(file) is not valid JSON: \(detail)."
        case .malformed(let file, let what, let detail): "The \(what) \(file) is malformed: \(detail)."
        case .modelWithoutDirectory(let file): "A model in \(file) has no directory (or save_path)."
        case .modelWithoutFilename(let file): "A model in \(file) has no filename and its URL names none."
        case .conflictingComfyUI(let first, let second): "ComfyUI is given differently by \(first) and \(second)."
        case .conflictingNode(let node, let first, let second): "The custom node \(node) is given differently by \(first) and \(second)."
        case .conflictingModelURL(let model, let first, let second): "The model \(model) is given with different URLs by \(first) and \(second)."
        case .unsupportedLockVersion(let file, let version, let supported):
            "The lockfile \(file) has lock_version \(version); this provision reads version \(supported)."
        case .notFullCommit(let file, let subject, let commit):
            "The lockfile \(file) pins \(subject) to '\(commit.prefix(100))', which is not a full 40-digit commit."
        case .invalidNodeName(let file, .lockfile, let name):
            "The lockfile \(file) has a custom node named '\(name.prefix(100))', which is not a valid folder name."
        case .invalidNodeName(let file, .spec, let name):
            "The spec \(file) has a custom node named '\(name.prefix(100))': names are letters, digits, '.', '_' and '-', not starting with '.' or '-'."
        case .duplicateNode(let file, let document, let node): "The \(document.rawValue) \(file) lists the custom node \(node) twice."
        case .invalidEnvName(let file, .lockfile, let node, let variable):
            "The lockfile \(file) gives \(node) an environment variable named '\(variable.prefix(100))', which is not a valid name."
        case .invalidEnvName(let file, .spec, let node, let variable):
            "The custom node \(node) in \(file) has an environment variable named '\(variable.prefix(100))', which is not a valid name."
        case .invalidSHA256(let file, .lockfile, let model): "The lockfile \(file) has model \(model) with a sha256 that is not 64 hexadecimal digits."
        case .invalidSHA256(let file, .spec, let model): "The model \(model) in \(file) has a sha256 that is not 64 hexadecimal digits."
        case .negativeSize(let file, .lockfile, let model): "The lockfile \(file) has model \(model) with a negative size."
        case .negativeSize(let file, .spec, let model): "The model \(model) in \(file) has a negative size."
        case .duplicateModel(let file, let document, let model): "The \(document.rawValue) \(file) lists the model \(model) twice."
        case .invalidModelPath(let field, let path, .length): "The \(field) '\(path.prefix(100))' must be a relative path of 1 to 1024 bytes."
        case .invalidModelPath(let field, let path, .components):
            "The \(field) '\(path.prefix(100))' may not contain empty, '.' or '..' components or end in .partial."
        case .invalidModelPath(let field, let path, .characters): "The \(field) '\(path.prefix(100))' contains control characters or backslashes."
        case .conflictingPins(let file, let node?): "The custom node \(node) in \(file) gives more than one of commit, tag and branch."
        case .conflictingPins(let file, nil): "ComfyUI in \(file) gives more than one of commit, tag, branch and ref."
        case .invalidCommitPrefix(let file, let node?, let commit):
            "The custom node \(node) in \(file) has commit '\(commit.prefix(100))', which is not 7 to 40 hexadecimal digits."
        case .invalidCommitPrefix(let file, nil, _): "ComfyUI's commit in \(file) is not 7 to 40 hexadecimal digits."
        case .invalidNodeURL(let file, let node): "The custom node \(node) in \(file) has an empty or too long url."
        case .notDownloadable(let file, let model, let url):
            "The model \(model) in \(file) has url '\(url.prefix(100))'; only http and https URLs can be downloaded."
        case .invalidRequirement(let file, let line): "The Python requirement '\(line.prefix(100))' in \(file) is empty, too long, or an option."
        case .invalidRef(let error): error.sentence
        }
    }
}
