import Foundation
import ProcessControl

/// What a finished command printed and how it ended.
package typealias CommandResult = ChildProcess.Output

/// Runs a program through the one subprocess runner (`ChildProcess.run`).
package func runCommand(
    _ executable: String, _ arguments: [String], environment: [String: String], timeout: Duration, outputLimit: Int = 8 << 20
) async throws(ChildProcessError) -> CommandResult {
    try await ChildProcess.run(executable, arguments, environment: environment, timeout: timeout, outputLimit: outputLimit)
}
