import ComponentSpec
import Downloader
import Foundation
import JobCore

/// What a machine must have: the parts of a lockfile (or a verify job) that can be checked on disk.
package struct VerificationTarget: Sendable, Equatable {
    /// A node at its commit: the verify job's own entry type, so the job and `provision verify` share it.
    package typealias Node = VerifyPayload.Node
    /// A model file, relative to the models folder (`directory/filename`), with what it must measure.
    package typealias Model = VerifyPayload.Model

    package var comfyuiCommit: String?
    package var nodes: [Node]
    package var models: [Model]
    /// Requirement lines (`insightface==0.7.3`) that the workspace's Python must satisfy.
    package var pythonPackages: [String]

    package init(comfyuiCommit: String? = nil, nodes: [Node] = [], models: [Model] = [], pythonPackages: [String] = []) {
        self.comfyuiCommit = comfyuiCommit
        self.nodes = nodes
        self.models = models
        self.pythonPackages = pythonPackages
    }

    package init(lock: Lockfile) {
        self.init(
            comfyuiCommit: lock.comfyui?.commit, nodes: lock.customNodes.map { Node(name: $0.name, commit: $0.commit) },
            models: lock.models.map { Model(path: $0.path, size: $0.size, sha256: $0.sha256) }, pythonPackages: lock.python?.packages ?? [])
    }
}

/// One finding of `verify`.
package struct VerificationCheck: Sendable, Equatable, Codable {
    /// `comfyui`, `node`, `model` or `python`.
    package var kind: String
    package var name: String
    /// `ok`, `missing`, `wrong_commit`, `modified`, `not_a_checkout`, `wrong_size`, `wrong_hash`, `not_a_file`,
    /// `unsatisfied`, `conflict`, `error`.
    package var status: String
    package var expected: String?
    package var actual: String?
    package var detail: String?

    package var ok: Bool { status == "ok" }

    /// One line of the text report.
    package var line: String {
        let label = ok ? "ok" : status.uppercased()
        var text = label.padding(toLength: 13, withPad: " ", startingAt: 0) + "\(kind) \(name)"
        if let detail { text += ": \(detail)" }
        return text
    }
}

package struct VerificationReport: Sendable, Equatable, Codable {
    package var ok: Bool
    package var workspace: String
    package var deep: Bool
    package var checks: [VerificationCheck]
    package var failed: Int

    /// Mismatches in one sentence each, for a failed job.
    package var problems: [String] { checks.filter { !$0.ok }.map { "\($0.kind) \($0.name): \($0.detail ?? $0.status)" } }
}

/// Checks a workspace (`<workspace>/ComfyUI`, `custom_nodes/<name>`, `models/<directory>/<file>`)
/// against what it must contain.
package struct Verifier: Sendable {
    package var workspace: String
    package var deep: Bool
    package var git: Git
    /// The Python whose packages are checked; default `<workspace>/venv/bin/python` when it exists.
    package var python: String?
    /// Where model files are (a worker's `--models-root`); default `<workspace>/ComfyUI/models`.
    package var modelsFolder: String?

    package init(workspace: String, deep: Bool = false, git: Git = Git(), python: String? = nil, modelsRoot: String? = nil) {
        self.workspace = workspace
        self.deep = deep
        self.git = git
        self.python = python
        self.modelsFolder = modelsRoot
    }

    var comfyuiPath: String { (workspace as NSString).appendingPathComponent("ComfyUI") }
    var modelsRoot: String { modelsFolder ?? comfyuiPath + "/models" }

    package func verify(_ target: VerificationTarget) async -> VerificationReport {
        var checks: [VerificationCheck] = []
        if let commit = target.comfyuiCommit {
            checks.append(await checkRepository(kind: "comfyui", name: "ComfyUI", path: comfyuiPath, commit: commit))
        }
        for node in target.nodes.sorted(by: { $0.name.lowercased() < $1.name.lowercased() }) {
            guard PayloadRules.isNodeName(node.name) else {
                checks.append(VerificationCheck(kind: "node", name: node.name, status: "error", detail: "not a valid folder name"))
                continue
            }
            checks.append(await checkRepository(kind: "node", name: node.name, path: comfyuiPath + "/custom_nodes/" + node.name, commit: node.commit))
        }
        for model in target.models.sorted(by: { $0.path < $1.path }) {
            checks.append(await checkModel(model))
        }
        if !target.pythonPackages.isEmpty { checks += await checkPython(target.pythonPackages) }
        let failed = checks.filter { !$0.ok }.count
        return VerificationReport(ok: failed == 0, workspace: workspace, deep: deep, checks: checks, failed: failed)
    }

    func checkRepository(kind: String, name: String, path: String, commit: String) async -> VerificationCheck {
        var check = VerificationCheck(kind: kind, name: name, status: "ok", expected: commit)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
            check.status = "missing"
            check.detail = "\(path) does not exist"
            return check
        }
        do {
            guard let head = await git.head(of: path) else {
                check.status = "not_a_checkout"
                check.detail = "\(path) is not a git checkout"
                return check
            }
            check.actual = head
            guard head.lowercased().hasPrefix(commit.lowercased()) else {
                check.status = "wrong_commit"
                check.detail = "at \(head.prefix(12)), the lock says \(commit.prefix(12))"
                return check
            }
            let changes = try await git.localChanges(of: path)
            if !changes.isEmpty {
                check.status = "modified"
                let shown = changes.prefix(5).joined(separator: ", ") + (changes.count > 5 ? ", …" : "")
                check.detail = "at \(head.prefix(12)) but \(changes.count) tracked file\(changes.count == 1 ? "" : "s") changed (\(shown))"
                return check
            }
            check.detail = "at \(head.prefix(12))"
        } catch {
            check.status = "error"
            check.detail = error.sentence
        }
        return check
    }

    func checkModel(_ model: VerificationTarget.Model) async -> VerificationCheck {
        var check = VerificationCheck(kind: "model", name: model.path, status: "ok")
        do {
            try SpecRules.checkModelPath(model.path, what: "model path")
        } catch {
            check.status = "error"
            check.detail = error.description
            return check
        }
        let path = modelsRoot + "/" + model.path
        var info = stat()
        guard stat(path, &info) == 0 else {
            check.status = "missing"
            check.detail = "\(path) does not exist"
            return check
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            check.status = "not_a_file"
            check.detail = "\(path) is not a regular file"
            return check
        }
        let size = Int64(info.st_size)
        check.actual = String(size)
        if let expected = model.size {
            check.expected = String(expected)
            if size != expected {
                check.status = "wrong_size"
                check.detail = "\(size) bytes, the lock says \(expected)" + (size < expected ? " (truncated or partial)" : "")
                return check
            }
        }
        if deep, let expected = model.sha256?.lowercased() {
            let digest: String
            do {
                digest = try await Task.detached { try SHA256Hasher.hashFile(at: path) }.value
            } catch {
                check.status = "error"
                check.detail = "cannot be read: \(error)"
                return check
            }
            check.expected = expected
            check.actual = digest
            if digest != expected {
                check.status = "wrong_hash"
                check.detail = "SHA-256 \(digest), the lock says \(expected)"
                return check
            }
            check.detail = "\(size) bytes, SHA-256 matches"
        } else {
            check.detail = "\(size) bytes" + (deep ? "" : " (hash not checked; --deep checks it)")
        }
        return check
    }

    /// Each requirement against the installed distributions (importlib.metadata), then `pip check`.
    func checkPython(_ requirements: [String]) async -> [VerificationCheck] {
        let venvPython = (workspace as NSString).appendingPathComponent("venv/bin/python")
        guard let python = python ?? (FileManager.default.isExecutableFile(atPath: venvPython) ? venvPython : nil) else {
            return [VerificationCheck(kind: "python", name: "environment", status: "missing", detail: "\(venvPython) does not exist; pass --python to name the interpreter")]
        }
        let script = """
            import json, re, subprocess, sys
            from importlib import metadata
            try:
                from packaging.requirements import Requirement
            except Exception:
                try:
                    from pip._vendor.packaging.requirements import Requirement
                except Exception:
                    Requirement = None
            results = []
            for line in json.loads(sys.argv[1]):
                entry = {"requirement": line}
                try:
                    if Requirement is not None:
                        req = Requirement(line)
                        name, spec = req.name, req.specifier
                    else:
                        m = re.match(r"^\\s*([A-Za-z0-9._-]+)\\s*(?:==\\s*([^;\\s]+))?", line)
                        name, spec = m.group(1), m.group(2)
                    try:
                        installed = metadata.version(name)
                    except metadata.PackageNotFoundError:
                        entry.update(status="missing", detail="not installed")
                        results.append(entry); continue
                    entry["installed"] = installed
                    ok = spec.contains(installed, prereleases=True) if Requirement is not None else (spec is None or spec == installed)
                    entry.update(status="ok" if ok else "unsatisfied", detail=("version " + installed) if ok else ("version " + installed + " does not satisfy " + line))
                except Exception as error:
                    entry.update(status="error", detail=str(error)[:300])
                results.append(entry)
            import importlib.util
            if importlib.util.find_spec("pip") is None:
                pip_check = {"status": None, "problems": []}
            else:
                check = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=300)
                problems = [l for l in check.stdout.splitlines() if l.strip() and "No broken requirements" not in l]
                pip_check = {"status": check.returncode, "problems": problems[:50]}
            print("PROVISION-VERIFY " + json.dumps({"packages": results, "pip_check": pip_check}))
            """
        let encoded = (try? JSONEncoder().encode(requirements)).map { String(decoding: $0, as: UTF8.self) } ?? "[]"
        let result: CommandResult
        do {
            result = try await runCommand(python, ["-c", script, encoded], environment: ProcessInfo.processInfo.environment, timeout: .seconds(600))
        } catch {
            return [VerificationCheck(kind: "python", name: "environment", status: "error", detail: error.description)]
        }
        guard let line = result.output.split(whereSeparator: \.isNewline).last(where: { $0.hasPrefix("PROVISION-VERIFY ") }),
            let document = try? JSONValue.parse(String(line.dropFirst("PROVISION-VERIFY ".count)))
        else {
            return [VerificationCheck(kind: "python", name: "environment", status: "error", detail: "\(python) could not check the packages: \(result.lastLine)")]
        }
        var checks: [VerificationCheck] = []
        for entry in document["packages"]?.array ?? [] {
            checks.append(VerificationCheck(
                kind: "python", name: entry["requirement"]?.string ?? "?", status: entry["status"]?.string ?? "error",
                expected: entry["requirement"]?.string, actual: entry["installed"]?.string, detail: entry["detail"]?.string))
        }
        let problems = (document["pip_check"]?["problems"]?.array ?? []).compactMap(\.string)
        if document["pip_check"]?["status"] == .null {
            checks.append(VerificationCheck(kind: "python", name: "pip check", status: "ok", detail: "pip is not installed in \(python); dependencies between packages not checked"))
        } else if document["pip_check"]?["status"]?.int != 0 || !problems.isEmpty {
            checks.append(VerificationCheck(kind: "python", name: "pip check", status: "conflict", detail: problems.isEmpty ? "pip check failed" : problems.prefix(5).joined(separator: "; ")))
        } else {
            checks.append(VerificationCheck(kind: "python", name: "pip check", status: "ok", detail: "no broken requirements"))
        }
        return checks
    }
}
