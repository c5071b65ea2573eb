import Foundation
import ProcessControl

/// What a finished command printed and how it ended.
struct CommandResult: Sendable {
    /// The exit status; nil when the command was stopped for taking too long or died of a signal.
    var status: Int32?
    /// Standard output and error, interleaved, cut at the output limit.
    var output: String
    var timedOut: Bool

    var succeeded: Bool { status == 0 }

    /// The last meaningful line of the output, for error sentences.
    var lastLine: String {
        let lines = output.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        return String((lines.last ?? "").prefix(300))
    }
}

/// Runs a program with arguments passed as a list (never through a shell), stdin from /dev/null,
/// output collected in a private temporary file, and a deadline after which it is stopped.
func runCommand(
    _ executable: String, _ arguments: [String], environment: [String: String], timeout: Duration, outputLimit: Int = 8 << 20
) async throws(ManifestError) -> CommandResult {
    let outputPath = NSTemporaryDirectory() + "provision-cmd-\(UUID().uuidString).out"
    // Created empty with owner-only permissions before the child appends to it.
    let fd = open(outputPath, O_WRONLY | O_CREAT | O_EXCL, 0o600)
    if fd >= 0 { close(fd) }
    defer { unlink(outputPath) }
    let child: ChildProcess
    do {
        child = try ChildProcess(executable, arguments, environment: environment, outputPath: outputPath)
    } catch {
        throw ManifestError("\(error)")
    }
    let termination = await child.wait(timeout: timeout)
    var timedOut = false
    if termination == nil {
        timedOut = true
        child.stop(grace: .seconds(2))
    }
    var output = ""
    if let handle = FileHandle(forReadingAtPath: outputPath) {
        let data = (try? handle.read(upToCount: outputLimit)) ?? Data()
        try? handle.close()
        output = String(decoding: data, as: UTF8.self)
    }
    var status: Int32?
    if case .exited(let code)? = termination { status = code }
    return CommandResult(status: status, output: output, timedOut: timedOut)
}
