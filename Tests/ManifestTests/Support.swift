import Downloader
import Foundation
import WorkflowAnalysis
import TestSupport
import Testing

/// Tests/ManifestTests/Fixtures/NAME
func fixture(_ name: String) -> String {
    packageRoot().appendingPathComponent("Tests/ManifestTests/Fixtures/\(name)").path
}

/// The small registry written for the tests (seven repositories, one ambiguous type, a preemption, a pattern).
func testRegistry() throws -> NodeRegistry {
    let map = try Data(contentsOf: URL(fileURLWithPath: fixture("registry/extension-node-map.json")))
    let list = try Data(contentsOf: URL(fileURLWithPath: fixture("registry/custom-node-list.json")))
    return try NodeRegistry(extensionMap: map, nodeList: list, source: "test registry")
}

func sha256Hex(_ data: Data) -> String {
    var hasher = SHA256Hasher()
    hasher.update(data)
    return hasher.finalize()
}

/// Runs `provision ARGS…` to completion.
func provision(_ arguments: [String], environment: [String: String] = [:], timeout: Duration = .seconds(120)) async throws -> (status: Int32, output: String) {
    try await run(provisionExecutable(), arguments, environment: environment, timeout: timeout)
}

/// Runs git with a fixed identity and no global configuration; fails the test on a non-zero exit.
@discardableResult
func git(_ arguments: [String], in directory: URL? = nil) async throws -> String {
    var args = ["-c", "user.name=provision tests", "-c", "user.email=tests@provision.invalid", "-c", "init.defaultBranch=main",
                "-c", "protocol.file.allow=always", "-c", "advice.detachedHead=false"]
    if let directory { args += ["-C", directory.path] }
    let result = try await run("/usr/bin/git", args + arguments, environment: ["GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0"])
    guard result.status == 0 else { throw TestFailure("git \(arguments.joined(separator: " ")) failed: \(result.output)") }
    return result.output.trimmingCharacters(in: .whitespacesAndNewlines)
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A local git repository with commits and refs, reachable as file://.
struct LocalRepository {
    let path: URL
    var url: String { "file://" + path.path }

    /// Creates a repository whose first commit holds `files`; returns it.
    static func create(at path: URL, files: [String: String] = ["README.md": "hello\n"]) async throws -> LocalRepository {
        try FileManager.default.createDirectory(at: path, withIntermediateDirectories: true)
        try await git(["init", "-q"], in: path)
        let repository = LocalRepository(path: path)
        try await repository.commit(files, message: "first")
        return repository
    }

    /// Writes `files` and commits them; returns the new commit.
    @discardableResult
    func commit(_ files: [String: String], message: String) async throws -> String {
        for (name, content) in files {
            let file = path.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
            try content.write(to: file, atomically: true, encoding: .utf8)
        }
        try await git(["add", "-A"], in: path)
        try await git(["commit", "-q", "-m", message], in: path)
        return try await head()
    }

    func head() async throws -> String { try await git(["rev-parse", "HEAD"], in: path) }
    func rev(_ ref: String) async throws -> String { try await git(["rev-parse", ref], in: path) }
}

/// Writes `text` to a new file in `folder`; returns its path.
@discardableResult
func write(_ text: String, to name: String, in folder: URL) throws -> String {
    let url = folder.appendingPathComponent(name)
    try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
    try text.write(to: url, atomically: true, encoding: .utf8)
    return url.path
}

/// Encodes a JSON object literal.
func json(_ object: Any) throws -> String {
    String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
}
