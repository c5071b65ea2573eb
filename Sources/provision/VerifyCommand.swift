import ArgumentParser
import Foundation
import ComponentSpec
import Export
import Verification

struct VerifyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check a machine against a lockfile: nodes at their commits without local changes, models with the right size (and hash with --deep), Python packages satisfied. Exit 0 only when everything matches.")

    @Option(help: "The lockfile.")
    var lock: String

    @Option(help: "The folder holding ComfyUI/ (env PROVISION_WORKSPACE; default /workspace).")
    var workspace: String?

    @Flag(help: "Hash every model file and compare with the lock's SHA-256.")
    var deep = false

    @Flag(help: "Print the report as JSON.")
    var json = false

    @Option(help: "The Python interpreter whose packages to check (default: <workspace>/venv/bin/python).")
    var python: String?

    func run() async throws {
        let report: VerificationReport = try await reportingErrors {
            let lockfile = try Lockfile.load(path: lock)
            let root = workspace ?? ProcessInfo.processInfo.environment["PROVISION_WORKSPACE"].flatMap { $0.isEmpty ? nil : $0 } ?? "/workspace"
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: root, isDirectory: &isDirectory), isDirectory.boolValue else {
                throw UserFacingError(message: "The workspace \(root) does not exist.")
            }
            return await Verifier(workspace: root, deep: deep, python: python).verify(VerificationTarget(lock: lockfile))
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
            say(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            for check in report.checks { say(check.line) }
            say(report.ok
                ? "verified: all \(report.checks.count) checks match \(lock)"
                : "NOT verified: \(report.failed) of \(report.checks.count) checks differ from \(lock)")
        }
        if !report.ok { throw ExitCode.failure }
    }
}

struct ExportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write a standalone install script, a Dockerfile, or the dependencies.json report equivalent to a lockfile.")

    @Option(help: "The lockfile.")
    var lock: String

    @Option(help: "script, dockerfile or dependencies-json.")
    var format: String

    @Option(name: [.short, .long], help: "Write here instead of standard output.")
    var output: String?

    func validate() throws {
        guard ExportFormat(rawValue: format) != nil else {
            throw ValidationError("--format must be one of \(ExportFormat.allCases.map(\.rawValue).joined(separator: ", ")).")
        }
    }

    func run() async throws {
        try await reportingErrors {
            guard let chosen = ExportFormat(rawValue: format) else { return }
            let text = Exporter(lock: try Lockfile.load(path: lock)).export(chosen)
            if let output {
                do {
                    try text.write(toFile: output, atomically: true, encoding: .utf8)
                    if chosen == .script { chmod(output, 0o755) }
                } catch {
                    throw UserFacingError(message: "Could not write \(output): \(error.localizedDescription).")
                }
            } else {
                FileHandle.standardOutput.write(Data(text.utf8))
            }
        }
    }
}
