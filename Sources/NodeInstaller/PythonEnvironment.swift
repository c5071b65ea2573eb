import Foundation
import ProcessControl
import JobCore

/// What `uv pip compile` concluded.
enum Resolution {
    case resolved([String])
    /// uv's explanation of why no set of versions fits.
    case conflict(String)
    /// Something else stopped the resolution (a fetch, a build, a missing tool): uv's output, classified.
    case failed(UVFailure, String)
}

/// Why a uv command failed, told apart by uv's own words: each needs a different remedy.
enum UVFailure: String, Sendable {
    /// No set of versions satisfies every requirement.
    case conflict = "requirements_conflict"
    /// An index, a download or a git repository could not be reached (may pass on a retry).
    case fetch = "requirements_fetch_failed"
    /// A package had to be built from source and its build failed.
    case build = "package_build_failed"
    /// A tool uv needs (git, a Python interpreter) is missing.
    case tool = "tool_missing"
    case other = "python_deps_failed"

    var retryable: Bool { self == .fetch || self == .other }

    static func classify(_ output: String) -> UVFailure {
        let text = output.lowercased()
        func has(_ words: String...) -> Bool { words.contains { text.contains($0) } }
        if has("git executable not found", "no interpreter found", "no python interpreter", "command not found") { return .tool }
        if has("failed to build", "build backend failed", "failed to prepare distributions", "error: subprocess-exited-with-error",
               "build failed", "failed building wheel") { return .build }
        if has("failed to fetch", "failed to download", "error sending request", "dns error", "connection refused", "connection reset",
               "timed out", "git operation failed", "failed to clone", "does not appear to be a git repository", "could not read from remote",
               "network", "tls handshake", "status code 5", "429") { return .fetch }
        if has("no solution found", "unsatisfiable", "conflicting", "incompatible") { return .conflict }
        return .other
    }
}

/// The machine's one Python environment (`<workspace>/venv`) and the uv commands that change it.
/// Every change holds the environment's file lock: one writer at a time across worker processes.
struct PythonEnvironment: Sendable {
    let configuration: NodeInstallerConfiguration

    var workspace: Workspace { configuration.workspace }

    func lock() async throws(JobFailure) -> FileLock {
        try workspace.createDirectories(workspace.locks)
        return try await FileLock.acquire(workspace.locks + "/venv.lock")
    }

    /// Creates the environment when it does not exist yet (the caller holds the lock).
    func ensure() async throws(JobFailure) {
        if FileManager.default.isExecutableFile(atPath: workspace.python) { return }
        try workspace.createDirectories(workspace.root)
        let output = try await run(configuration.systemPython, ["-m", "venv", workspace.venv], what: "creating the Python environment")
        guard FileManager.default.isExecutableFile(atPath: workspace.python) else {
            throw JobFailure(type: "venv_failed", message: "python -m venv did not create \(workspace.python): \(output.suffix(300))", retryable: false)
        }
    }

    /// Installed versions of the packages that must never be replaced (torch and friends), read
    /// from the environment's `NAME-VERSION.dist-info` folders: starting the interpreter to ask
    /// importlib cost more than the whole resolution on a loaded machine.
    func protectedPins() async -> [String] {
        let protected: Set<String> = ["torch", "torchvision", "torchaudio", "xformers"]
        var pins: [String: String] = [:]
        let lib = workspace.venv + "/lib"
        for python in ((try? FileManager.default.contentsOfDirectory(atPath: lib)) ?? []).sorted() where python.hasPrefix("python") {
            let site = lib + "/" + python + "/site-packages"
            for entry in ((try? FileManager.default.contentsOfDirectory(atPath: site)) ?? []).sorted() where entry.hasSuffix(".dist-info") {
                // The folder name is the escaped project name (no '-') and the version (no '-').
                let parts = entry.dropLast(".dist-info".count).split(separator: "-")
                guard parts.count == 2 else { continue }
                let name = RequirementsReader.projectName(String(parts[0]))
                if protected.contains(name), pins[name] == nil { pins[name] = "\(name)==\(parts[1])" }
            }
        }
        return pins.keys.sorted().compactMap { pins[$0] }
    }

    /// Every installed distribution as `name==version`.
    func installedDistributions() async -> [String] {
        let script = "import importlib.metadata as m\nfor d in m.distributions(): print(f\"{d.metadata['Name']}=={d.version}\")"
        guard let output = try? await run(workspace.python, ["-c", script], what: "listing installed packages") else { return [] }
        return output.split(separator: "\n").map(String.init).filter { $0.contains("==") }
    }

    /// Distributions of one module installed side by side (a script's `pip install` brought one
    /// back): one kept by the same rule as python-deps, the others removed. Returns the choices.
    func settleExclusiveDistributions(gpu: Bool) async throws(JobFailure) -> [ExclusiveDistributions.Choice] {
        let (_, choices) = ExclusiveDistributions.pick(await installedDistributions(), gpu: gpu)
        try await replace(choices)
        return choices
    }

    /// Removes the dropped builds, then installs the kept one again: they share the module's files
    /// (every opencv build writes `cv2/`), so removing one takes files of the other with it.
    func replace(_ choices: [ExclusiveDistributions.Choice]) async throws(JobFailure) {
        guard !choices.isEmpty else { return }
        let dropped = choices.flatMap(\.dropped).map(RequirementsReader.projectName)
        let removed = try await uninstall(dropped)
        guard removed else { return }
        let result = try await uv(["pip", "install", "--python", workspace.python, "--reinstall", "--no-deps", "--quiet"] + choices.map(\.kept))
        guard result.succeeded else {
            throw JobFailure(type: "pip_install_failed", message: "installing \(choices.map(\.kept).joined(separator: ", ")) again after removing \(dropped.joined(separator: ", ")) failed: \(Self.summary(result.output))", retryable: true)
        }
    }

    /// `uv pip compile`: resolves `requirements` under `constraints`; returns the pinned lines or uv's explanation.
    func compile(requirements: [String], constraints: [String], in folder: String) async throws(JobFailure) -> Resolution {
        let input = folder + "/requirements.in"
        let constraintFile = folder + "/constraints.txt"
        let output = folder + "/requirements.lock.txt"
        write(requirements, to: input)
        write(constraints, to: constraintFile)
        let result = try await uv(["pip", "compile", input, "--constraint", constraintFile, "--python", workspace.python, "--output-file", output, "--no-header", "--no-annotate", "--quiet"])
        guard result.succeeded else {
            let kind = UVFailure.classify(result.output)
            return kind == .conflict ? .conflict(result.output) : .failed(kind, result.output)
        }
        let lines = ((try? String(contentsOfFile: output, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init).filter { !$0.hasPrefix("#") && !$0.isEmpty }
        return .resolved(lines)
    }

    /// `uv pip install` of resolved lines, the protected pins kept as constraints.
    func install(_ lines: [String], constraints: [String], in folder: String, what: String, withDependencies: Bool = true) async throws(JobFailure) {
        let file = folder + "/install.txt"
        let constraintFile = folder + "/constraints.txt"
        write(lines, to: file)
        write(constraints, to: constraintFile)
        let result = try await uv(["pip", "install", "--python", workspace.python, "--requirement", file, "--constraint", constraintFile, "--quiet"] + (withDependencies ? [] : ["--no-deps"]))
        guard result.succeeded else {
            let kind = UVFailure.classify(result.output)
            let type = kind == .other || kind == .conflict ? "pip_install_failed" : kind.rawValue
            throw JobFailure(type: type, message: "installing \(what) failed: \(Self.summary(result.output))", retryable: kind != .build && kind != .tool)
        }
    }

    /// Removes distributions from the environment; those not installed are ignored. True when
    /// something was removed.
    @discardableResult
    func uninstall(_ names: [String]) async throws(JobFailure) -> Bool {
        guard !names.isEmpty else { return false }
        let installed = Set(await installedDistributions().map(RequirementsReader.projectName))
        let present = names.filter(installed.contains)
        guard !present.isEmpty else { return false }
        let result = try await uv(["pip", "uninstall", "--python", workspace.python] + present, sources: false)
        guard result.succeeded else {
            throw JobFailure(type: "pip_uninstall_failed", message: "removing \(present.joined(separator: ", ")) failed: \(Self.summary(result.output))", retryable: true)
        }
        return true
    }

    private func uv(_ arguments: [String], sources withSources: Bool = true) async throws(JobFailure) -> ChildProcess.Output {
        let sources = withSources ? configuration.findLinks.flatMap { ["--find-links", $0] } + (configuration.noIndex ? ["--no-index"] : []) : []
        do {
            return try await ChildProcess.run(configuration.uv, arguments + sources, environment: uvEnvironment, timeout: .seconds(1800))
        } catch {
            throw JobFailure(type: "uv_missing", message: "uv could not be run (\(error)); install it with pip install uv or point --uv at it", retryable: false)
        }
    }

    /// uv runs git for `git+https` requirements: the same transports and mirror rewrites as the node clones.
    var uvEnvironment: [String: String] { configuration.gitChildEnvironment }

    private func run(_ executable: String, _ arguments: [String], what: String) async throws(JobFailure) -> String {
        let output: ChildProcess.Output
        do {
            output = try await ChildProcess.run(executable, arguments, environment: configuration.childEnvironment, timeout: .seconds(600))
        } catch {
            throw JobFailure(type: "python_missing", message: "\(what) failed: \(error)", retryable: false)
        }
        guard output.succeeded else {
            throw JobFailure(type: "python_failed", message: "\(what) failed: \(Self.summary(output.output))", retryable: true)
        }
        return output.output
    }

    private func write(_ lines: [String], to path: String) {
        try? (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
    }

    /// The lines of uv's output that say what went wrong.
    static func summary(_ output: String) -> String {
        let lines = output.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        return lines.suffix(4).joined(separator: " ").prefix(800).description
    }
}

/// Distributions that install the same Python module and must not sit side by side (the one
/// installed last wins silently): after resolving, one of each family is kept.
enum ExclusiveDistributions {
    /// Each family, most capable first; `gpu` marks the build a GPU machine needs.
    static let families: [(names: [String], gpu: String?)] = [
        (["onnxruntime-gpu", "onnxruntime"], "onnxruntime-gpu"),
        (["opencv-contrib-python", "opencv-contrib-python-headless", "opencv-python", "opencv-python-headless"], nil),
    ]

    /// What was dropped in favour of what, for the job's result.
    struct Choice: Sendable, Equatable {
        var kept: String
        var dropped: [String]
    }

    /// The resolved lines with one distribution per family: on a GPU machine the GPU build, else
    /// the CPU one when both were asked for; otherwise the most capable one named.
    static func pick(_ lines: [String], gpu: Bool) -> (lines: [String], choices: [Choice]) {
        var result = lines
        var choices: [Choice] = []
        for family in families {
            let present = lines.filter { family.names.contains(RequirementsReader.projectName($0)) }
            // Two builds of the module, not two lines of one build (a leftover second dist-info).
            let names = Array(Set(present.map { RequirementsReader.projectName($0) }))
            guard names.count > 1 else { continue }
            var keep: String
            if let gpuName = family.gpu, names.contains(gpuName) {
                keep = gpu ? gpuName : (family.names.first { $0 != gpuName && names.contains($0) } ?? gpuName)
            } else {
                keep = family.names.first { names.contains($0) } ?? names[0]
            }
            if !names.contains(keep) { keep = names[0] }
            let kept = present.first { RequirementsReader.projectName($0) == keep } ?? present[0]
            let dropped = present.filter { RequirementsReader.projectName($0) != keep }
            result.removeAll { dropped.contains($0) }
            choices.append(Choice(kept: kept, dropped: dropped))
        }
        return (result, choices)
    }
}
