import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The Python of the test venv (`PROVISION_PYTHON`, set by scripts/test), else `python3`.
package func testPython() -> String {
    ProcessInfo.processInfo.environment["PROVISION_PYTHON"] ?? "python3"
}

/// Runs a Python program given as text with `arguments`; returns its exit status and output.
package func runPython(_ program: String, _ arguments: [String] = [], environment: [String: String] = [:], timeout: Duration = .seconds(120)) async throws -> (status: Int32, output: String) {
    let directory = try makeTemporaryDirectory("py")
    defer { try? FileManager.default.removeItem(at: directory) }
    let file = directory.appendingPathComponent("program.py")
    try program.write(to: file, atomically: true, encoding: .utf8)
    return try await run(testPython(), [file.path] + arguments, environment: environment, timeout: timeout)
}

/// Parses OTLP/JSON logs requests with the OpenTelemetry protobuf classes (Tests/fixtures/otlp_check.py);
/// exit status 0 and "records N" when every line is a valid request.
package func checkOTLPLogs(_ text: String) async throws -> (status: Int32, output: String) {
    try await run(testPython(), [packageRoot().appendingPathComponent("Tests/fixtures/otlp_check.py").path, text])
}

/// Starts a Python program given as text in the background (its file stays until the process ends).
package func startPython(_ program: String, _ arguments: [String] = [], environment: [String: String] = [:]) throws -> TestProcess {
    let file = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("provision-test-\(UUID().uuidString).py")
    try program.write(to: file, atomically: true, encoding: .utf8)
    return try TestProcess(testPython(), [file.path] + arguments, environment: environment)
}

/// One HTTP GET on loopback: status code, body and content type.
package func httpGet(_ url: String, timeout: TimeInterval = 10) async throws -> (status: Int, body: String, contentType: String?) {
    guard let target = URL(string: url) else { throw URLError(.badURL) }
    var request = URLRequest(url: target)
    request.timeoutInterval = timeout
    let (data, response) = try await URLSession.shared.data(for: request)
    let http = response as? HTTPURLResponse
    return (http?.statusCode ?? 0, String(decoding: data, as: UTF8.self), http?.value(forHTTPHeaderField: "Content-Type"))
}

/// A Python program that validates JSON documents (one per line of a file) against a schema of
/// protocols/schemas; prints "ok N" or the problems, exit 1 on any.
package let validateWithSchemaProgram = #"""
import json, sys
from jsonschema import Draft202012Validator
schema = json.load(open(sys.argv[1]))
validator = Draft202012Validator(schema)
problems, count = [], 0
for number, line in enumerate(open(sys.argv[2]), 1):
    line = line.strip()
    if not line:
        continue
    count += 1
    for error in validator.iter_errors(json.loads(line)):
        problems.append(f"line {number}: {'/'.join(str(p) for p in error.absolute_path)}: {error.message}")
print("\n".join(problems[:40]) if problems else f"ok {count}")
sys.exit(1 if problems or count == 0 else 0)
"""#

/// Validates JSON lines against `protocols/schemas/<schema>`; returns (passed, report).
package func validateJSONLines(_ lines: [String], schema: String) async throws -> (Bool, String) {
    let directory = try makeTemporaryDirectory("schema")
    defer { try? FileManager.default.removeItem(at: directory) }
    let file = directory.appendingPathComponent("lines.jsonl")
    try lines.joined(separator: "\n").write(to: file, atomically: true, encoding: .utf8)
    let schemaPath = packageRoot().appendingPathComponent("protocols/schemas/\(schema)").path
    let result = try await runPython(validateWithSchemaProgram, [schemaPath, file.path])
    return (result.status == 0, result.output)
}

/// A Python subscriber: prints "subscribed", then each message on `channel` (one per line) until it
/// has `count` of them or `seconds` pass.
package let subscriberProgram = #"""
import sys, time, redis
url, channel, count, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
pubsub = redis.Redis.from_url(url).pubsub()
pubsub.subscribe(channel)
while True:
    m = pubsub.get_message(timeout=1)
    if m and m["type"] == "subscribe":
        break
print("subscribed", flush=True)
got, deadline = 0, time.time() + seconds
while got < count and time.time() < deadline:
    m = pubsub.get_message(timeout=0.2)
    if m and m["type"] == "message":
        print(m["data"].decode(), flush=True)
        got += 1
"""#
