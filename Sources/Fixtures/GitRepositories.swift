import Foundation
import ProcessControl

/// A bare git repository made on disk (the demo's sources, a test's), with its commits in order.
package struct GitFixture: Sendable {
    package let path: String
    package var url: String { "file://" + path }
    package let commits: [String]
}

/// Who commits in fixture repositories: a fixed identity, so that nothing depends on the user's
/// git configuration.
package struct FixtureIdentity: Sendable {
    package var name: String
    package var email: String

    package static let tests = FixtureIdentity(name: "provision tests", email: "tests@provision.invalid")
    package static let demo = FixtureIdentity(name: "provision demo", email: "demo@provision.invalid")
}

/// Runs git for fixtures with a fixed identity, no system configuration and local submodules allowed.
@discardableResult
package func fixtureGit(_ arguments: [String], in directory: String? = nil, identity: FixtureIdentity = .tests) async throws -> String {
    var environment = ProcessInfo.processInfo.environment
    environment["GIT_AUTHOR_NAME"] = identity.name
    environment["GIT_AUTHOR_EMAIL"] = identity.email
    environment["GIT_COMMITTER_NAME"] = identity.name
    environment["GIT_COMMITTER_EMAIL"] = identity.email
    environment["GIT_CONFIG_NOSYSTEM"] = "1"
    let output = try await ChildProcess.run(
        "git", ["-c", "protocol.file.allow=always", "-c", "init.defaultBranch=main"] + (directory.map { ["-C", $0] } ?? []) + arguments,
        environment: environment, timeout: .seconds(120))
    guard output.succeeded else { throw FixtureError.git(arguments.joined(separator: " "), output.output) }
    return output.output.trimmingCharacters(in: .whitespacesAndNewlines)
}

/// Creates `<folder>/<name>.git`: one commit per entry of `commits` (files to write), annotated
/// tags and branches at commit indexes, `main` at `mainAt` (default: the last commit), optional
/// submodules.
package func makeGitRepo(
    in folder: URL, name: String, commits: [[String: String]], tags: [String: Int] = [:], branches: [String: Int] = [:],
    mainAt: Int? = nil, submodules: [String: GitFixture] = [:], identity: FixtureIdentity = .tests
) async throws -> GitFixture {
    func git(_ arguments: [String], in directory: String? = nil) async throws -> String {
        try await fixtureGit(arguments, in: directory, identity: identity)
    }
    let work = folder.appendingPathComponent("work-\(name)-\(UUID().uuidString.prefix(6))").path
    try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: work) }
    _ = try await git(["init", "--quiet", work])
    var shas: [String] = []
    for (index, files) in commits.enumerated() {
        for (path, content) in files {
            let full = work + "/" + path
            try FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try content.write(toFile: full, atomically: true, encoding: .utf8)
        }
        if index == 0 {
            for (path, sub) in submodules.sorted(by: { $0.key < $1.key }) {
                _ = try await git(["submodule", "add", "--quiet", sub.url, path], in: work)
            }
        }
        _ = try await git(["add", "-A"], in: work)
        _ = try await git(["commit", "--quiet", "-m", "commit \(index + 1)"], in: work)
        shas.append(try await git(["rev-parse", "HEAD"], in: work))
    }
    for (tag, index) in tags { _ = try await git(["tag", "-a", "-m", tag, tag, shas[index]], in: work) }
    for (branch, index) in branches { _ = try await git(["branch", branch, shas[index]], in: work) }
    if let mainAt { _ = try await git(["reset", "--quiet", "--hard", shas[mainAt]], in: work) }
    let bare = folder.appendingPathComponent("\(name).git").path
    _ = try await git(["clone", "--quiet", "--bare", work, bare])
    return GitFixture(path: bare, commits: shas)
}
