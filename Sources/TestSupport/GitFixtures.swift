import Foundation
import ProcessControl

/// A bare git repository on disk made for a test, with its commits in order.
public struct GitFixture: Sendable {
    public let path: String
    public var url: String { "file://" + path }
    public let commits: [String]
}

/// Runs git for fixtures with a fixed identity and local submodules allowed.
@discardableResult
public func fixtureGit(_ arguments: [String], in directory: String? = nil) async throws -> String {
    var environment = ProcessInfo.processInfo.environment
    environment["GIT_AUTHOR_NAME"] = "provision tests"
    environment["GIT_AUTHOR_EMAIL"] = "tests@provision.invalid"
    environment["GIT_COMMITTER_NAME"] = "provision tests"
    environment["GIT_COMMITTER_EMAIL"] = "tests@provision.invalid"
    environment["GIT_CONFIG_NOSYSTEM"] = "1"
    let output = try await ChildProcess.run(
        "git", ["-c", "protocol.file.allow=always", "-c", "init.defaultBranch=main"] + (directory.map { ["-C", $0] } ?? []) + arguments,
        environment: environment)
    guard output.succeeded else { throw FixtureError.git(arguments.joined(separator: " "), output.output) }
    return output.output.trimmingCharacters(in: .whitespacesAndNewlines)
}

/// Creates `<folder>/<name>.git`: one commit per entry of `commits` (files to write), tags and
/// branches at commit indexes, `main` at `mainAt` (default: the last commit), optional submodules.
public func makeGitRepo(
    in folder: URL, name: String, commits: [[String: String]], tags: [String: Int] = [:], branches: [String: Int] = [:],
    mainAt: Int? = nil, submodules: [String: GitFixture] = [:]
) async throws -> GitFixture {
    let work = folder.appendingPathComponent("work-\(name)-\(UUID().uuidString.prefix(6))").path
    try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
    try await fixtureGit(["init", "--quiet", work])
    var shas: [String] = []
    for (index, files) in commits.enumerated() {
        for (path, content) in files {
            let full = work + "/" + path
            try FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try content.write(toFile: full, atomically: true, encoding: .utf8)
        }
        if index == 0 {
            for (path, sub) in submodules.sorted(by: { $0.key < $1.key }) {
                try await fixtureGit(["submodule", "add", "--quiet", sub.url, path], in: work)
            }
        }
        try await fixtureGit(["add", "-A"], in: work)
        try await fixtureGit(["commit", "--quiet", "-m", "commit \(index + 1)"], in: work)
        shas.append(try await fixtureGit(["rev-parse", "HEAD"], in: work))
    }
    for (tag, index) in tags { try await fixtureGit(["tag", "-a", "-m", tag, tag, shas[index]], in: work) }
    for (branch, index) in branches { try await fixtureGit(["branch", branch, shas[index]], in: work) }
    if let mainAt { try await fixtureGit(["reset", "--quiet", "--hard", shas[mainAt]], in: work) }
    let bare = folder.appendingPathComponent("\(name).git").path
    try await fixtureGit(["clone", "--quiet", "--bare", work, bare])
    try? FileManager.default.removeItem(atPath: work)
    return GitFixture(path: bare, commits: shas)
}

/// Builds tiny wheels (Tests/fixtures/make_wheels.py): specs like `tinyfoo==1.0;dep>=1`.
public func makeWheels(in folder: URL, _ specs: [String]) async throws {
    let python = ProcessInfo.processInfo.environment["PROVISION_PYTHON"] ?? "python3"
    let output = try await ChildProcess.run(python, [packageRoot().appendingPathComponent("Tests/fixtures/make_wheels.py").path, folder.path] + specs)
    guard output.succeeded else { throw FixtureError.wheels(output.output) }
}

/// uv for tests: `PROVISION_UV`, else `uv` beside the test Python.
public func testUV() -> String {
    if let uv = ProcessInfo.processInfo.environment["PROVISION_UV"], !uv.isEmpty { return uv }
    let python = ProcessInfo.processInfo.environment["PROVISION_PYTHON"] ?? "python3"
    return ((python as NSString).deletingLastPathComponent as NSString).appendingPathComponent("uv")
}

enum FixtureError: Error, CustomStringConvertible {
    case git(String, String)
    case wheels(String)
    var description: String {
        switch self {
        case .git(let command, let output): return "git \(command) failed: \(output)"
        case .wheels(let output): return "building wheels failed: \(output)"
        }
    }
}
