import Foundation
import TestSupport
import Testing

/// The short forms of bench/chaos and bench/fuzz, so CI fails when an invariant or a fuzz case does.
/// Both benches judge their own runs (ready, hashes, commits, counts, side effects done once; no
/// crash, no hang, a one-sentence refusal) and exit non-zero with the reasons.
@Suite("Hardening benches (short forms)", .serialized)
struct HardeningBenchTests {
    /// The script's exit status and output, run with the Python the tests use.
    private func bench(_ script: String, _ arguments: [String], timeout: Duration) async throws -> (status: Int32, output: String) {
        let python = ProcessInfo.processInfo.environment["PROVISION_PYTHON"] ?? "python3"
        let path = packageRoot().appendingPathComponent(script).path
        return try await run(python, [path, "--bin", provisionExecutable()] + arguments, timeout: timeout)
    }

    @Test func aShortChaosRunEndsReadyWithEveryInvariantHeld() async throws {
        let result = try await bench("bench/chaos/chaos.py", ["--short", "--seed", "7"], timeout: .seconds(300))
        #expect(result.status == 0, "\(result.output.suffix(4000))")
        #expect(result.output.contains("chaos: chaos: ready in"), "\(result.output.suffix(2000))")
    }

    @Test func aFixedSeedFuzzRunFindsNothing() async throws {
        let out = try makeTemporaryDirectory("fuzz")
        defer { try? FileManager.default.removeItem(at: out) }
        let result = try await bench("bench/fuzz/fuzz.py", ["--seed", "20261205", "--cases", "300", "--jobs", "4", "--http-timeout", "45", "--out", out.path], timeout: .seconds(300))
        #expect(result.status == 0, "\(result.output.suffix(4000))")
        #expect(result.output.contains("300 cases"), "\(result.output.suffix(1000))")
    }
}
