import ComponentSpec
import WorkflowAnalysis
import Downloader
import Foundation
import GitClient

/// How `lock` reaches the network and what it tolerates.
package struct LockOptions: Sendable {
    package var git = ComponentSpec.Git()
    /// Which model URLs may be fetched (loopback only in tests).
    package var policy = URLPolicy()
    /// Where a model without a published hash is downloaded once to be hashed.
    package var scratchDirectory = NSTemporaryDirectory()
    /// Write the lock even when some node types or models cannot be pinned (they are listed, not installed).
    package var allowUnresolved = false
    /// Pin packages and models used only by muted or bypassed nodes too.
    package var includeInactive = true
    /// ComfyUI-Manager's model list (file name → URL, folder) for workflow models without a URL.
    package var modelList: [String: (url: String, directory: String)] = [:]
    /// Repositories and models resolved at once.
    package var concurrency = 4
    package var environment: [String: String] = ProcessInfo.processInfo.environment
    /// Receives one line per step.
    package var progress: @Sendable (String) -> Void = { _ in }

    package init() {}
}

/// What `lock` could not pin, when allowed to go on.
package struct LockWarnings: Sendable, Equatable {
    package var nodeTypes: [String] = []
    package var models: [String] = []

    package init(nodeTypes: [String] = [], models: [String] = []) {
        self.nodeTypes = nodeTypes
        self.models = models
    }
}

/// Turns specs and workflows into a lockfile: every repository ref resolved to a commit (`git
/// ls-remote`), every model to URL, size and SHA-256 (published by the origin, or by downloading once).
package struct Locker: Sendable {
    package var options: LockOptions
    package var analyzer: WorkflowAnalyzer

    package init(options: LockOptions, analyzer: WorkflowAnalyzer) {
        self.options = options
        self.analyzer = analyzer
    }

    package func lock(_ documents: [SpecDocument]) async throws(LockError) -> (lock: Lockfile, warnings: LockWarnings) {
        var warnings = LockWarnings()
        var comfyui: ComfyUISource?
        var lockedComfyUI: LockedRepository?
        var nodes: [CustomNode] = []
        var lockedNodes: [LockedNode] = []
        var models: [ModelFile] = []
        var lockedModels: [LockedModel] = []
        var python = PythonRequirements()
        var workflows: [(Workflow, String)] = []
        var carriedWorkflows: [LockedWorkflow] = []

        func addComfyUI(_ source: ComfyUISource) throws(LockError) {
            if let comfyui, comfyui != source { throw .comfyUINamedTwice(first: comfyui.url, second: source.url) }
            comfyui = source
        }
        for document in documents {
            switch document {
            case .spec(let spec):
                if let source = spec.comfyui { try addComfyUI(source) }
                nodes += spec.customNodes
                models += spec.models
                python.packages = (python.packages ?? []) + (spec.python?.packages ?? [])
                python.constraints = (python.constraints ?? []) + (spec.python?.constraints ?? [])
            case .lockfile(let lock):
                if let repository = lock.comfyui {
                    if let known = lockedComfyUI, known != repository { throw .comfyUIPinnedTwice }
                    lockedComfyUI = repository
                }
                lockedNodes += lock.customNodes
                lockedModels += lock.models
                carriedWorkflows += lock.workflows ?? []
                python.packages = (python.packages ?? []) + (lock.python?.packages ?? [])
                python.constraints = (python.constraints ?? []) + (lock.python?.constraints ?? [])
            case .workflow(let workflow, let sha256):
                workflows.append((workflow, sha256))
            }
        }

        // Workflows add the packages and models they need that the specs do not already list.
        var lockedWorkflows: [LockedWorkflow]?
        var provides: [String: [String]] = [:]
        if !workflows.isEmpty {
            var preferredAnalyzer = analyzer
            preferredAnalyzer.preferred.formUnion(nodes.map(\.url) + lockedNodes.map(\.url))
            let analysis: Analysis
            do { analysis = try preferredAnalyzer.analyze(workflows.map { ($0.0, $0.1) }) } catch { throw .workflow(error) }
            lockedWorkflows = try describe(workflows, analyzer: preferredAnalyzer)
            let known = Set((nodes.map(\.url) + lockedNodes.map(\.url)).compactMap(RepositoryURL.key))
            var names = Set((nodes.map(\.name) + lockedNodes.map(\.name)).map { $0.lowercased() })
            for package in analysis.packages where options.includeInactive || !package.inactive {
                guard let key = RepositoryURL.key(package.repository) else { continue }
                provides[key, default: []] += package.classTypes
                if known.contains(key) { continue }
                let name = uniqueName(for: package.repository, taken: &names)
                nodes.append(CustomNode(name: name, url: package.repository, requirements: true))
            }
            var unresolved = analysis.unresolved.filter { options.includeInactive || !$0.inactive }.map(\.classType)
            var ambiguous = analysis.ambiguous.filter { options.includeInactive || !$0.inactive }
            if !unresolved.isEmpty || !ambiguous.isEmpty {
                // What the map cannot say, the candidates' own source may: every repository the
                // inputs install for an unknown type, the claimants for an ambiguous one.
                let installed = nodes.map { ($0.url, $0.ref) } + lockedNodes.map { ($0.url, GitRef.commit($0.commit)) }
                    + analysis.packages.map { ($0.repository, GitRef.head) }
                let settled = await settleFromSources(
                    unresolved: unresolved, ambiguous: ambiguous.map { ($0.classType, $0.candidates.map(\.repository)) }, installed: installed)
                for (type, repository) in settled.sorted(by: { $0.key < $1.key }) {
                    guard let key = RepositoryURL.key(repository) else { continue }
                    provides[key, default: []].append(type)
                    if !known.contains(key), !nodes.contains(where: { RepositoryURL.key($0.url) == key }) {
                        nodes.append(CustomNode(name: uniqueName(for: repository, taken: &names), url: repository, requirements: true))
                    }
                    options.progress("settled \(type): \(repository) registers it in its NODE_CLASS_MAPPINGS")
                }
                unresolved.removeAll { settled[$0] != nil }
                ambiguous.removeAll { settled[$0.classType] != nil }
                lockedWorkflows = lockedWorkflows?.map { workflow in
                    var workflow = workflow
                    workflow.unresolved = workflow.unresolved?.filter { settled[$0] == nil }
                    workflow.ambiguous = workflow.ambiguous?.filter { settled[$0] == nil }
                    if workflow.unresolved?.isEmpty == true { workflow.unresolved = nil }
                    if workflow.ambiguous?.isEmpty == true { workflow.ambiguous = nil }
                    return workflow
                }
            }
            let blocking = unresolved.map { "\($0) (unknown)" }
                + ambiguous.map { entry in
                    "\(entry.classType) (claimed by \(entry.candidates.map(\.repository).joined(separator: ", ")))"
                }
            if !blocking.isEmpty {
                guard options.allowUnresolved else {
                    throw .unresolvedNodeTypes(blocking)
                }
                warnings.nodeTypes = blocking
            }
            var unplaceable: [String] = []
            let listed = Set(models.map(\.path) + lockedModels.map(\.path))
            let listedNames = Set(models.map(\.filename) + lockedModels.map(\.filename))
            for model in analysis.models where options.includeInactive || !model.inactive {
                if let directory = model.directory, listed.contains(directory + "/" + model.filename) { continue }
                if listedNames.contains(model.filename) { continue }
                let basename = (model.filename as NSString).lastPathComponent
                let fromList = options.modelList[model.filename] ?? options.modelList[basename]
                guard let url = model.url ?? fromList?.url, let directory = model.directory ?? fromList?.directory else {
                    unplaceable.append("\(model.directory.map { $0 + "/" } ?? "")\(model.filename) (\(model.url == nil ? "no URL" : "no folder"))")
                    continue
                }
                models.append(ModelFile(url: url, directory: directory, filename: model.filename, sha256: model.sha256))
            }
            if !unplaceable.isEmpty {
                guard options.allowUnresolved else {
                    throw .unplaceableModels(unplaceable)
                }
                warnings.models = unplaceable
            }
        }
        do {
            try SpecRules.validate(Spec(customNodes: nodes, models: models), name: "the combined inputs")
        } catch {
            throw .spec(error)
        }

        if let comfyui { lockedComfyUI = try await lockComfyUI(comfyui) }
        let resolvedNodes = try await resolveNodes(nodes, provides: provides)
        let resolvedModels = try await resolveModels(models)

        var allNodes: [String: LockedNode] = [:]
        for node in lockedNodes + resolvedNodes where allNodes[node.name.lowercased()] == nil { allNodes[node.name.lowercased()] = node }
        var allModels: [String: LockedModel] = [:]
        for model in lockedModels + resolvedModels where allModels[model.path] == nil { allModels[model.path] = model }
        // Workflows described by input lockfiles stay described (the same file once).
        var seenWorkflows = Set((lockedWorkflows ?? []).map { "\($0.name)\u{0}\($0.sha256)" })
        for workflow in carriedWorkflows where seenWorkflows.insert("\(workflow.name)\u{0}\(workflow.sha256)").inserted {
            lockedWorkflows = (lockedWorkflows ?? []) + [workflow]
        }
        let packages = python.packages ?? []
        let constraints = python.constraints ?? []
        let lock = Lockfile(
            comfyui: lockedComfyUI, customNodes: Array(allNodes.values), models: Array(allModels.values),
            python: packages.isEmpty && constraints.isEmpty ? nil : PythonRequirements(packages: packages.isEmpty ? nil : packages, constraints: constraints.isEmpty ? nil : constraints),
            workflows: lockedWorkflows)
        return (lock.normalized(), warnings)
    }

    /// Types settled by reading candidates' NODE_CLASS_MAPPINGS statically: type → the one repository
    /// that registers it. A type two candidates register, or none, stays as it was.
    func settleFromSources(unresolved: [String], ambiguous: [(type: String, candidates: [String])], installed: [(url: String, ref: GitRef)]) async -> [String: String] {
        var declared: [String: (url: String, classes: Set<String>)] = [:]
        func read(_ url: String, _ ref: GitRef) async {
            guard let key = RepositoryURL.key(url), declared[key] == nil else { return }
            do {
                let commit = try await options.git.resolve(url, ref: ref)
                declared[key] = (url, try await options.git.declaredNodeClasses(url, commit: commit))
            } catch {
                options.progress("could not read the node classes of \(ComponentSpec.Git.shown(url)): \(error)")
                declared[key] = (url, [])
            }
        }
        var settled: [String: String] = [:]
        if !unresolved.isEmpty {
            for (url, ref) in installed.prefix(200) { await read(url, ref) }
            for type in unresolved {
                let owners = declared.values.filter { $0.classes.contains(type) }
                if owners.count == 1, let owner = owners.first { settled[type] = owner.url }
            }
        }
        for entry in ambiguous {
            for url in entry.candidates.prefix(20) { await read(url, .head) }
            let owners = entry.candidates.filter { url in RepositoryURL.key(url).flatMap { declared[$0]?.classes.contains(entry.type) } ?? false }
            if owners.count == 1 { settled[entry.type] = owners[0] }
        }
        return settled
    }

    /// Per workflow: its custom node types, models, and what stays unresolved.
    func describe(_ workflows: [(Workflow, String)], analyzer: WorkflowAnalyzer) throws(LockError) -> [LockedWorkflow] {
        var result: [LockedWorkflow] = []
        for (workflow, sha256) in workflows {
            let analysis: Analysis
            do { analysis = try analyzer.analyze([(workflow, sha256)]) } catch { throw .workflow(error) }
            result.append(LockedWorkflow(
                name: (workflow.name as NSString).lastPathComponent, sha256: sha256, format: workflow.format,
                nodes: analysis.nodes.filter { !$0.builtin }.map(\.classType).sorted(),
                models: analysis.models.map { ($0.directory.map { $0 + "/" } ?? "") + $0.filename }.sorted(),
                unresolved: analysis.unresolved.isEmpty ? nil : analysis.unresolved.map(\.classType).sorted(),
                ambiguous: analysis.ambiguous.isEmpty ? nil : analysis.ambiguous.map(\.classType).sorted()))
        }
        return result
    }

    /// A folder name for a repository that does not collide with another node's.
    func uniqueName(for repository: String, taken: inout Set<String>) -> String {
        let base = String(RepositoryURL.repositoryName(repository).map { $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) ? $0 : "_" })
        var name = base.isEmpty || base.hasPrefix(".") || base.hasPrefix("-") ? "node_" + base : base
        if taken.contains(name.lowercased()) {
            let owner = repository.split(separator: "/").dropLast().last.map(String.init) ?? "x"
            name = "\(owner)_\(name)"
            var n = 2
            while taken.contains(name.lowercased()) {
                name = "\(owner)_\(base)_\(n)"
                n += 1
            }
        }
        taken.insert(name.lowercased())
        return String(name.prefix(100))
    }

    /// git's failures as the lock's error.
    static func viaGit<R>(_ body: () async throws(GitError) -> R) async throws(LockError) -> R {
        do { return try await body() } catch { throw .git(error) }
    }

    func lockComfyUI(_ source: ComfyUISource) async throws(LockError) -> LockedRepository {
        let git = options.git
        _ = try await Self.viaGit { () async throws(GitError) in try git.checkURL(source.url) }
        let commit: String
        var tag = source.tag
        var branch = source.branch
        if let pinned = source.commit {
            commit = try await Self.viaGit { () async throws(GitError) in try await git.resolve(source.url, ref: .commit(pinned)) }
        } else if let name = source.tag {
            commit = try await Self.viaGit { () async throws(GitError) in try await git.resolve(source.url, ref: .tag(name)) }
        } else if let name = source.branch {
            commit = try await Self.viaGit { () async throws(GitError) in try await git.resolve(source.url, ref: .branch(name)) }
        } else if let ref = source.ref {
            // A tag, a branch, or a commit: in that order.
            var refs: [String: String] = [:]
            if (try? ComponentSpec.Git.checkRefName(ref, kind: "ref")) != nil {
                refs = try await Self.viaGit { () async throws(GitError) in try await git.listRemote(source.url, refs: ["refs/tags/\(ref)", "refs/tags/\(ref)^{}", "refs/heads/\(ref)"]) }
            }
            if let tagged = refs["refs/tags/\(ref)^{}"] ?? refs["refs/tags/\(ref)"] {
                commit = tagged
                tag = ref
            } else if let head = refs["refs/heads/\(ref)"] {
                commit = head
                branch = ref
            } else if ComponentSpec.Git.isCommitPrefix(ref) {
                commit = try await Self.viaGit { () async throws(GitError) in try await git.resolve(source.url, ref: .commit(ref)) }
            } else {
                throw .comfyUIRefNotFound(url: source.url, ref: ref)
            }
        } else {
            commit = try await Self.viaGit { () async throws(GitError) in try await git.resolve(source.url, ref: .head) }
        }
        options.progress("ComfyUI: \(commit.prefix(12))")
        return LockedRepository(url: source.url, commit: commit, tag: tag, branch: branch)
    }

    func resolveNodes(_ nodes: [CustomNode], provides: [String: [String]]) async throws(LockError) -> [LockedNode] {
        let git = options.git
        let progress = options.progress
        let results = try await boundedMap(nodes, concurrency: options.concurrency) { node throws(LockError) -> LockedNode in
            _ = try await Self.viaGit { () async throws(GitError) in try git.checkURL(node.url) }
            let commit = try await Self.viaGit { () async throws(GitError) in try await git.resolve(node.url, ref: node.ref) }
            progress("node \(node.name): \(node.ref) → \(commit.prefix(12))")
            let types = RepositoryURL.key(node.url).flatMap { provides[$0] }.map { Array(Set($0)).sorted() }
            // Requirement lines that install from git are pinned like the node itself.
            let gitPins = node.requirements == false ? [:] : try await Self.viaGit { () async throws(GitError) in try await git.gitRequirementPins(node.url, commit: commit) }
            for (repository, pinned) in gitPins.sorted(by: { $0.key < $1.key }) { progress("node \(node.name): requirement \(repository) → \(pinned.prefix(12))") }
            return LockedNode(
                source: node.source, commit: commit, provides: types, allowOutside: node.allowOutside, gitRequirements: gitPins.isEmpty ? nil : gitPins)
        }
        return results
    }

    func resolveModels(_ models: [ModelFile]) async throws(LockError) -> [LockedModel] {
        let options = self.options
        return try await boundedMap(models, concurrency: options.concurrency) { model throws(LockError) -> LockedModel in
            try await Self.resolveModel(model, options: options)
        }
    }

    /// Size and SHA-256 of one model: from the spec when it gives both, else from the origin's
    /// published hash (Hugging Face `X-Linked-Etag` / `X-Linked-Size`), else by downloading it once.
    static func resolveModel(_ model: ModelFile, options: LockOptions) async throws(LockError) -> LockedModel {
        if let sha256 = model.sha256?.lowercased(), let size = model.size {
            return LockedModel(url: model.url, directory: model.directory, filename: model.filename, sha256: sha256, size: size)
        }
        var request = DownloadRequest(url: model.url, destination: "")
        request.policy = options.policy
        request.environment = options.environment
        let metadata: RemoteMetadata
        do {
            metadata = try await Downloader().metadata(request)
        } catch {
            throw .modelUnavailable(model: model.path, reason: "\(error)")
        }
        var url = model.url
        var sourceURL: String?
        if let commit = metadata.repositoryCommit, let pinned = pinRevision(model.url, commit: commit), pinned != model.url {
            url = pinned
            sourceURL = model.url
        }
        if let published = metadata.publishedSHA256, let size = metadata.size {
            if let expected = model.sha256?.lowercased(), expected != published {
                throw .publishedHashDiffers(model: model.path, published: published, expected: expected)
            }
            if let expected = model.size, expected != size {
                throw .publishedSizeDiffers(model: model.path, published: size, expected: expected)
            }
            options.progress("model \(model.path): \(size) bytes, SHA-256 \(published.prefix(12)) (published by the origin)")
            return LockedModel(url: url, directory: model.directory, filename: model.filename, sha256: published, size: size, sourceURL: sourceURL)
        }
        // No published hash: fetch once into scratch space and hash it.
        let scratch = (options.scratchDirectory as NSString).appendingPathComponent("provision-lock-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        do {
            try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        } catch {
            throw .scratchUnavailable(folder: scratch, reason: error.localizedDescription)
        }
        var download = DownloadRequest(url: url, destination: scratch + "/model")
        download.policy = options.policy
        download.environment = options.environment
        download.expectedSHA256 = model.sha256?.lowercased()
        download.expectedSize = model.size
        options.progress("model \(model.path): no published hash, downloading to hash it")
        let result: DownloadResult
        do {
            result = try await Downloader().download(download)
        } catch {
            throw .modelUnavailable(model: model.path, reason: "\(error)")
        }
        options.progress("model \(model.path): \(result.bytes) bytes, SHA-256 \(result.sha256.prefix(12)) (downloaded)")
        return LockedModel(url: url, directory: model.directory, filename: model.filename, sha256: result.sha256, size: result.bytes, sourceURL: sourceURL)
    }

    /// `…/resolve/<revision>/…` with the revision replaced by a commit (Hugging Face URLs); nil when
    /// the URL has no such segment or already names a commit.
    static func pinRevision(_ url: String, commit: String) -> String? {
        guard var components = URLComponents(string: url) else { return nil }
        var parts = components.path.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard let index = parts.firstIndex(of: "resolve"), index + 2 < parts.count else { return nil }
        if ComponentSpec.Git.isFullCommit(parts[index + 1]) { return nil }
        parts[index + 1] = commit
        components.path = parts.joined(separator: "/")
        return components.string
    }
}

/// Runs `body` on every element with at most `concurrency` at once, keeping the input order; the
/// first error cancels the rest and is thrown.
func boundedMap<T: Sendable, R: Sendable>(
    _ items: [T], concurrency: Int, _ body: @escaping @Sendable (T) async throws(LockError) -> R
) async throws(LockError) -> [R] {
    do {
        return try await withThrowingTaskGroup(of: (Int, R).self) { group in
            var results = [R?](repeating: nil, count: items.count)
            var next = 0
            func start() {
                guard next < items.count else { return }
                let index = next
                let item = items[index]
                next += 1
                group.addTask { (index, try await body(item)) }
            }
            for _ in 0..<max(1, concurrency) { start() }
            while let (index, value) = try await group.next() {
                results[index] = value
                start()
            }
            return results.compactMap { $0 }
        }
    } catch let error as LockError {
        throw error
    } catch {
        // Only the body throws, and it throws LockError: anything else is the group's cancellation.
        throw LockError.cancelled
    }
}
