import Foundation
import ProcessControl
import JobCore

/// The `install-scripts` job kind: every node's `install.py`, run after the plan's combined
/// requirements are installed (scripts import what the requirements bring: Impact-Pack's needs
/// `git`), one at a time in install order, each with its output kept as a bounded tail.
package struct InstallScriptsExecutor: JobExecutor {
    package var configuration: NodeInstallerConfiguration

    package init(configuration: NodeInstallerConfiguration) {
        self.configuration = configuration
    }

    /// Lines of a script's output kept in the job's result.
    static let tailLines = 20

    package func run(_ attempt: JobAttempt<InstallScriptsPayload>, context: JobContext) async throws -> String {
        let payload = attempt.payload
        let workspace = configuration.workspace
        let environment = PythonEnvironment(configuration: configuration)
        // Scripts install packages of their own: one writer to the environment at a time.
        let lock = try await environment.lock()
        defer { withExtendedLifetime(lock) {} }
        var results: [[String: Any]] = []
        for node in payload.nodes {
            let directory = workspace.node(node.name)
            guard FileManager.default.fileExists(atPath: directory + "/install.py") else { continue }
            guard let head = await configuration.git.head(directory) else {
                throw JobFailure(type: "node_missing", message: "custom node \(node.name) is not installed, so its install.py cannot run", retryable: false)
            }
            if InstallMarker.script.read(directory) == head {
                results.append(["name": node.name, "skipped": true])
                continue
            }
            let ran = try await runScript(node, in: directory)
            if !ran.errors.isEmpty {
                context.logger.warning(
                    "install.py printed errors but exited 0",
                    metadata: ["node": "\(node.name)", "errors": "\(ran.errors.joined(separator: " / ").prefix(500))"])
            }
            InstallMarker.script.write(directory, commit: head)
            var entry: [String: Any] = ["name": node.name, "skipped": false, "seconds": ran.seconds, "output_tail": ran.tail]
            if !ran.errors.isEmpty { entry["error_lines"] = ran.errors }
            results.append(entry)
        }
        // A script's own `pip install` can bring back a build python-deps left out (ultralytics pulls
        // opencv-python beside opencv-contrib-python): the same rule settles it again.
        let choices = results.contains(where: { $0["skipped"] as? Bool == false }) ? try await environment.settleExclusiveDistributions(gpu: configuration.gpu) : []
        var result: [String: Any] = ["scripts": results]
        if !choices.isEmpty {
            result["exclusive"] = choices.map { ["kept": $0.kept, "dropped": $0.dropped] as [String: Any] }
            context.logger.warning("install scripts installed builds of one module side by side; one is kept", metadata: ["choices": "\(choices)"])
        }
        return resultJSON(result)
    }

    /// One script: its node's environment, a deadline, output kept; a non-zero exit fails the job
    /// naming the node and the script's own last words.
    private func runScript(_ node: InstallScriptsPayload.Node, in directory: String) async throws(JobFailure) -> (seconds: Double, tail: [String], errors: [String]) {
        let workspace = configuration.workspace
        let python = FileManager.default.isExecutableFile(atPath: workspace.python) ? workspace.python : configuration.systemPython
        // Scripts clone sub-packages (Impact-Pack clones its Subpack with GitPython): they see the
        // mirror rewrites the node clones use.
        var environment = configuration.gitChildEnvironment
        var secrets: [String] = []
        for (key, template) in node.env ?? [:] {
            let value = try EnvironmentTemplate.expand(template, environment: configuration.exposedEnvironment, field: "env \(key) of node \(node.name)")
            environment[key] = value
            if value.count >= 4 { secrets.append(value) }
        }
        environment["COMFYUI_PATH"] = workspace.comfyUI
        environment["VIRTUAL_ENV"] = workspace.venv
        environment["PATH"] = workspace.venv + "/bin:" + (environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin")
        let started = ContinuousClock.now
        let output: ChildProcess.Output
        do {
            output = try await ChildProcess.run(python, ["install.py"], environment: environment, workingDirectory: directory, timeout: configuration.installScriptTimeout)
        } catch {
            throw JobFailure(type: "install_script_failed", message: "install.py of \(node.name) could not start: \(error)", retryable: false)
        }
        let seconds = (ContinuousClock.now - started) / .seconds(1)
        var text = output.output
        for secret in secrets { text = text.replacingOccurrences(of: secret, with: "***") }
        let lines = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        let tail = lines.suffix(Self.tailLines).map { String($0.prefix(300)) }
        let errors = lines.filter(Self.isErrorLine).suffix(5).map { String($0.prefix(300)) }
        guard output.succeeded else {
            let how = output.ending(deadline: configuration.installScriptTimeout)
            let words = (errors.isEmpty ? Array(tail.suffix(3)) : errors).joined(separator: " / ")
            throw JobFailure(type: "install_script_failed", message: "install.py of \(node.name) failed (\(how)): \(words.prefix(600))", retryable: true)
        }
        return (seconds, tail, errors)
    }

    /// Lines that say something went wrong, in the words scripts and Python use.
    static func isErrorLine(_ line: String) -> Bool {
        let lower = line.lowercased()
        return lower.hasPrefix("[error]") || lower.hasPrefix("error:") || lower.hasPrefix("error ") || lower.contains("traceback (most recent call last)")
            || lower.range(of: #"^[a-z_.]*(error|exception):"#, options: .regularExpression) != nil
            || lower.contains("no module named") || lower.contains("[error]")
    }
}
