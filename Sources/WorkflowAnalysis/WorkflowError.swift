import ComponentSpec

/// Why a workflow cannot be read or analysed: the file, and the node, link or field at fault.
package enum WorkflowError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The file could not be read (missing, not a regular file, over the size limit).
    case unreadable(SpecError)
    /// The file is not JSON.
    case notJSON(file: String, detail: String)
    /// The JSON is not a ComfyUI workflow in either format.
    case notAWorkflow(file: String, reason: String)
    /// A node, link, subgraph or field is broken; `problem` says which and how.
    case malformed(file: String, problem: String)
    /// More nodes, widget values or inputs (`what`, with its place) than the limit.
    case tooMany(file: String, count: Int, what: String, limit: Int)
    /// More subgraph definitions than the limit.
    case tooManySubgraphs(file: String, limit: Int)
    /// Subgraph instances nested deeper than the limit.
    case nestedTooDeep(file: String, limit: Int)
    /// A subgraph that contains an instance of itself.
    case recursiveSubgraph(file: String, subgraph: String)

    package var description: String {
        // Messages quote what the workflow said (ids, types); clipped so a 1 MiB id stays a sentence.
        clippedSentence(sentence)
    }

    var sentence: String {
        switch self {
        case .unreadable(let error): error.description
        case .notJSON(let file, let detail): "The workflow \(file) is not valid JSON: \(detail)."
        case .notAWorkflow(let file, let reason): "The workflow \(file) is not a ComfyUI workflow: \(reason)."
        case .malformed(let file, let problem): "The workflow \(file) is malformed: \(problem)."
        case .tooMany(let file, let count, let what, let limit): "The workflow \(file) has \(count) \(what), more than the limit of \(limit)."
        case .tooManySubgraphs(let file, let limit): "The workflow \(file) has more than \(limit) subgraph definitions."
        case .nestedTooDeep(let file, let limit): "The workflow \(file) nests subgraphs more than \(limit) levels deep."
        case .recursiveSubgraph(let file, let subgraph): "The workflow \(file) is malformed: subgraph \(subgraph) contains itself."
        }
    }
}
