import ComponentSpec
import GitClient
import WorkflowAnalysis

/// Why `lock` could not pin its inputs: the repository (URL without credentials), ref, commit or
/// model at fault, as one sentence (`description`).
package enum LockError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Two inputs name different ComfyUI repositories.
    case comfyUINamedTwice(first: String, second: String)
    /// Two lockfiles pin ComfyUI differently.
    case comfyUIPinnedTwice
    /// Workflow node types no package could be found for (or more than one claims).
    case unresolvedNodeTypes([String])
    /// Workflow models with no URL to pin them from.
    case unplaceableModels([String])
    case comfyUIRefNotFound(url: String, ref: String)
    /// `reason` is the downloader's sentence.
    case modelUnavailable(model: String, reason: String)
    case publishedHashDiffers(model: String, published: String, expected: String)
    case publishedSizeDiffers(model: String, published: Int64, expected: Int64)
    case scratchUnavailable(folder: String, reason: String)
    case nodeClassesNeedFullCommit(url: String, commit: String)
    case git(GitError)
    case spec(SpecError)
    case workflow(WorkflowError)
    /// The lock's task was cancelled before every node and model was pinned.
    case cancelled

    package var description: String {
        // Messages quote what inputs said (types, refs); clipped so a 1 MiB name stays a sentence.
        clippedSentence(sentence)
    }

    var sentence: String {
        switch self {
        case .comfyUINamedTwice(let first, let second):
            "The inputs name ComfyUI twice, differently (\(GitSourcePolicy.shown(first)) and \(GitSourcePolicy.shown(second)))."
        case .comfyUIPinnedTwice: "The inputs pin ComfyUI twice, differently."
        case .unresolvedNodeTypes(let types):
            "These node types cannot be pinned: \(types.joined(separator: "; ")); add their packages to a manifest given with the workflows, or pass --allow-unresolved."
        case .unplaceableModels(let models):
            "These models cannot be pinned: \(models.joined(separator: "; ")); list them with a URL in a manifest given with the workflows, or pass --allow-unresolved."
        case .comfyUIRefNotFound(let url, let ref): "The ComfyUI repository \(GitSourcePolicy.shown(url)) has no tag or branch \(ref)."
        case .modelUnavailable(let model, let reason): "The model \(model) cannot be pinned: \(reason)"
        case .publishedHashDiffers(let model, let published, let expected):
            "The model \(model) is published with SHA-256 \(published), not the \(expected) the spec expects."
        case .publishedSizeDiffers(let model, let published, let expected):
            "The model \(model) is published with \(published) bytes, not the \(expected) the spec expects."
        case .scratchUnavailable(let folder, let reason): "The scratch folder \(folder) cannot be created: \(reason)."
        case .nodeClassesNeedFullCommit(let url, let commit):
            "Reading the node classes of \(GitSourcePolicy.shown(url)) needs a full commit, not '\(commit.prefix(60))'."
        case .git(let error): error.sentence
        case .spec(let error): error.description
        case .workflow(let error): error.description
        case .cancelled: "The lock was cancelled."
        }
    }
}
