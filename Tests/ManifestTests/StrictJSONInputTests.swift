import Foundation
import JobCore
import ComponentSpec
import WorkflowAnalysis
import TestSupport
import Testing

/// One strict JSON reader (JobCore's JSONValue) for plans, manifests, lockfiles, workflows and the registry.
@Suite("One strict JSON reader for every input")
struct StrictJSONInputTests {
    func refusal(_ text: String, as name: String) throws -> String? {
        let folder = try makeTemporaryDirectory("strict-json")
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent(name).path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        do {
            _ = try SpecDocument.load(path: path)
            return nil
        } catch {
            return error.description.replacingOccurrences(of: path, with: name)
        }
    }

    @Test func manifestsAndLockfilesRefuseDuplicateKeysHexNumbersAndNaN() throws {
        let manifest = #"{"custom_nodes": [{"name": "a", "url": "https://github.com/o/a", "url": "https://github.com/o/b"}]}"#
        #expect(try refusal(manifest, as: "m.json")?.contains("custom_nodes[0].url is given twice") == true)
        let lock = #"{"lock_version": 0x1, "custom_nodes": []}"#
        #expect(try refusal(lock, as: "l.json")?.contains("lock_version is not a JSON number") == true)
        let octal = #"{"lock_version": 01, "custom_nodes": []}"#
        #expect(try refusal(octal, as: "l.json")?.contains("lock_version is not a JSON number (a leading zero") == true)
        let nan = #"{"custom_nodes": [], "models": [{"size": NaN}]}"#
        #expect(try refusal(nan, as: "m.json")?.contains("models[0].size is not a JSON value") == true)
    }

    @Test func workflowsKeepPythonsNaNAndBrowsersLoneSurrogatesButNotDuplicateKeys() throws {
        let quirks = #"{"nodes": [{"id": 1, "type": "KSampler", "widgets_values": [NaN, -Infinity, "\ud800"]}]}"#
        let workflow = try Workflow.parse(Data(quirks.utf8), name: "w.json")
        #expect(workflow.warnings.isEmpty)
        let twice = #"{"nodes": [{"id": 1, "type": "KSampler", "type": "VAELoader"}]}"#
        #expect(throws: WorkflowError.self) { try Workflow.parse(Data(twice.utf8), name: "w.json") }
        #expect(try refusal(twice, as: "w.json")?.contains("nodes[0].type is given twice at line 1") == true)
    }

    @Test func theReaderNamesTheFieldAndPosition() throws {
        func problem(_ text: String, _ limits: JSONLimits = JSONLimits()) -> String? {
            do { _ = try JSONValue.parse(text, limits: limits); return nil } catch { return error.description }
        }
        #expect(problem(#"{"a": {"b": [1, 2, 0x3]}}"#) == "a.b[2] is not a JSON number (hexadecimal, octal and other spellings are not JSON) at line 1, column 21")
        #expect(problem(#"{"a": 1, "a": 2}"#) == "a is given twice at line 1, column 15")
        #expect(problem(#"{"a": [[[1]]]}"#, JSONLimits(maxDepth: 3)) == "arrays and objects are nested more than 3 levels deep in a[0][0] at line 1, column 9")
        #expect(problem("\u{FEFF}[1]", JSONLimits(byteOrderMark: false)) == "unexpected character '\u{FEFF}' at line 1, column 1"
            || problem("\u{FEFF}[1]", JSONLimits(byteOrderMark: false))?.hasPrefix("unexpected byte 0xef") == true)
        #expect(problem("\u{FEFF}[1]") == nil)
        #expect(problem("1e400") == "the document is a number that cannot be read or is out of range at line 1, column 6")
        #expect(problem("[NaN]", JSONLimits(workflowQuirks: true)) == nil)
        #expect(problem(#"["\udc00"]"#) == "a string has an unpaired surrogate escape at line 1, column 9")
        #expect(problem(#"["\ud83d\ude00"]"#) == nil)
    }
}
