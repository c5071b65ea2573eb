import Foundation
import JobCore

/// The `python-deps` job kind: every node's requirements resolved together (`uv pip compile`, with
/// ComfyUI's requirements and the installed torch as constraints), conflicts reported by node, then
/// one install.
package struct PythonDepsExecutor: JobExecutor {
    package var configuration: NodeInstallerConfiguration

    package init(configuration: NodeInstallerConfiguration) {
        self.configuration = configuration
    }

    package func run(_ attempt: JobAttempt<PythonDepsPayload>, context: JobContext) async throws -> String {
        let payload = attempt.payload
        let workspace = configuration.workspace
        let nodes = payload.nodes ?? installedNodes()
        var requirements: [Requirement] = []
        for node in nodes {
            let directory = workspace.node(node)
            guard FileManager.default.fileExists(atPath: directory) else {
                throw JobFailure(type: "node_missing", message: "custom node \(node) is not installed", retryable: false)
            }
            requirements += try RequirementsReader.read(node: node, directory: directory, allowOutside: (payload.allowOutside ?? false) || (payload.allowOutsideNodes ?? []).contains(node),
                sources: configuration.sources, pins: payload.gitPins ?? [:])
        }
        let environment = PythonEnvironment(configuration: configuration)
        let lock = try await environment.lock()
        defer { withExtendedLifetime(lock) {} }
        try await environment.ensure()
        if requirements.isEmpty { return resultJSON(["nodes": nodes.count, "requirements": 0, "installed": 0]) }

        let protected = await environment.protectedPins()
        let comfyRequirements = ((try? String(contentsOfFile: workspace.comfyUI + "/requirements.txt", encoding: .utf8)) ?? "")
            .split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty && !$0.hasPrefix("#") && !$0.hasPrefix("-") && !$0.contains("://") }
        let protectedNames = Set(protected.map { RequirementsReader.projectName($0) })
        // ComfyUI's own requirements constrain the nodes', except where a protected pin already decides.
        let constraints = protected + comfyRequirements.filter { !protectedNames.contains(RequirementsReader.projectName($0)) } + (payload.constraints ?? [])

        let folder = workspace.root + "/.provision/python"
        try workspace.createDirectories(folder)
        switch try await environment.compile(requirements: requirements.map(\.line), constraints: constraints, in: folder) {
        case .conflict(let explanation):
            throw conflict(explanation, requirements: requirements, protected: protected)
        case .failed(let kind, let output):
            let what: String
            switch kind {
            case .fetch: what = "a package, index or git repository could not be fetched"
            case .build: what = "a package failed to build"
            case .tool: what = "a tool uv needs is missing"
            case .conflict, .other: what = "uv failed"
            }
            throw JobFailure(type: kind.rawValue, message: "resolving the custom nodes' requirements failed: \(what): \(PythonEnvironment.summary(output))", retryable: kind.retryable)
        case .resolved(let all):
            let (resolved, choices) = ExclusiveDistributions.pick(all, gpu: configuration.gpu)
            // The resolution is complete (every dependency pinned): the install does not resolve a
            // second time, and cannot bring back a build that was dropped.
            try await environment.install(resolved, constraints: protected, in: folder, what: "the requirements of \(nodes.count) custom nodes", withDependencies: false)
            try await environment.replace(choices)
            var exclusive: [[String: Any]] = []
            for choice in choices {
                let droppedNames = choice.dropped.map(RequirementsReader.projectName)
                let wantedBy = requirements.filter { droppedNames.contains($0.name) || $0.name == RequirementsReader.projectName(choice.kept) }
                    .map { "\($0.node): \($0.line)" }
                context.logger.warning(
                    "distributions that install the same module were asked for together; one is kept",
                    metadata: ["kept": "\(choice.kept)", "dropped": "\(choice.dropped.joined(separator: ", "))", "wanted_by": "\(wantedBy.joined(separator: "; "))"])
                exclusive.append(["kept": choice.kept, "dropped": choice.dropped, "wanted_by": wantedBy])
            }
            context.logger.info("python requirements installed", metadata: ["packages": "\(resolved.count)", "nodes": "\(nodes.count)"])
            var result: [String: Any] = ["nodes": nodes.count, "requirements": requirements.count, "installed": resolved.count, "resolved": Array(resolved.prefix(200))]
            if !exclusive.isEmpty { result["exclusive"] = exclusive }
            return resultJSON(result)
        }
    }

    /// Names the nodes whose requirements mention the packages uv's explanation names.
    func conflict(_ explanation: String, requirements: [Requirement], protected: [String]) -> JobFailure {
        let text = RequirementsReader.normalise(explanation)
        let involved = requirements.filter { requirement in
            guard !requirement.name.isEmpty else { return false }
            return text.range(of: "(^|[^a-z0-9-])\(NSRegularExpression.escapedPattern(for: requirement.name))([^a-z0-9-]|$)", options: .regularExpression) != nil
        }
        let summary = PythonEnvironment.summary(explanation)
        guard !involved.isEmpty else {
            return JobFailure(type: "requirements_conflict", message: "the custom nodes' requirements cannot be resolved together: \(summary)", retryable: false)
        }
        if let pin = protected.first(where: { pin in involved.contains { $0.name == RequirementsReader.projectName(pin) } }),
            let culprit = involved.first(where: { $0.name == RequirementsReader.projectName(pin) })
        {
            return JobFailure(type: "requirements_conflict", message: "custom node \(culprit.node) requires \(culprit.line), but the installed \(pin) is kept: \(summary)", retryable: false)
        }
        let byNode = Dictionary(grouping: involved, by: \.node).sorted { $0.key < $1.key }
            .map { "\($0.key) (\($0.value.map(\.line).joined(separator: ", ")))" }
        return JobFailure(type: "requirements_conflict", message: "the requirements of custom nodes \(byNode.joined(separator: " and ")) conflict: \(summary)", retryable: false)
    }

    private func installedNodes() -> [String] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: configuration.workspace.customNodes)) ?? []
        return entries.filter { !$0.hasPrefix(".") && Workspace.isSafeNodeName($0) && FileManager.default.fileExists(atPath: configuration.workspace.node($0) + "/requirements.txt") }.sorted()
    }
}
