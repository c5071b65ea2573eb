import Foundation
import ProcessControl
// Bare repositories (makeGitRepo, fixtureGit, GitFixture) are made by the code the demo uses too.
@_exported import Fixtures

/// Builds tiny wheels (Tests/fixtures/make_wheels.py): specs like `tinyfoo==1.0;dep>=1`.
package func makeWheels(in folder: URL, _ specs: [String]) async throws {
    let python = ProcessInfo.processInfo.environment["PROVISION_PYTHON"] ?? "python3"
    let output = try await ChildProcess.run(python, [packageRoot().appendingPathComponent("Tests/fixtures/make_wheels.py").path, folder.path] + specs)
    guard output.succeeded else { throw WheelsError(output: output.output) }
}

/// uv for tests: `PROVISION_UV`, else `uv` beside the test Python.
package func testUV() -> String {
    if let uv = ProcessInfo.processInfo.environment["PROVISION_UV"], !uv.isEmpty { return uv }
    let python = ProcessInfo.processInfo.environment["PROVISION_PYTHON"] ?? "python3"
    return ((python as NSString).deletingLastPathComponent as NSString).appendingPathComponent("uv")
}

struct WheelsError: Error, CustomStringConvertible {
    let output: String
    var description: String { "building wheels failed: \(output)" }
}
