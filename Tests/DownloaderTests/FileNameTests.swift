import Downloader
import Foundation
import TestSupport
import Testing

@Suite("Long file names and empty bodies", .serialized)
struct FileNameTests {
    /// Names whose `NAME.partial.lock` (or `NAME.partial`) would pass NAME_MAX download, with side
    /// files named after a hash of the name, and leave none behind.
    @Test(arguments: [241, 243, 247, 248, 250, 255])
    func longNamesDownload(length: Int) async throws {
        let origin = try await TestOrigin()
        defer { origin.stop() }
        let name = String(repeating: "m", count: length - 12) + ".safetensors"
        let data = try origin.addFile(name, size: 300_000)
        let folder = try makeTemporaryDirectory("long")
        defer { try? FileManager.default.removeItem(at: folder) }
        let result = try await Downloader().download(request(origin.url(name), into: folder, name: name))
        #expect(result.sha256 == sha256(data))
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path) == [name])
    }

    /// A long name's download that stops half-way leaves its resume state under the hashed name, and
    /// the next run picks it up.
    @Test func aLongNameResumes() async throws {
        let origin = try await TestOrigin()
        defer { origin.stop() }
        let name = String(repeating: "r", count: 243) + ".safetensors"
        let data = try origin.addFile(name, size: 2 << 20)
        let folder = try makeTemporaryDirectory("long-resume")
        defer { try? FileManager.default.removeItem(at: folder) }
        var slow = request(origin.url(name, "throttle=400000"), into: folder, name: name, chunk: 262_144, connections: 2)
        slow.connections = 2
        let task = Task { try await Downloader().download(slow) }
        _ = await eventually(timeout: .seconds(20)) {
            ((try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []).contains { $0.hasSuffix(".partial.state") }
        }
        try await Task.sleep(for: .milliseconds(1500))
        task.cancel()
        _ = try? await task.value
        let side = try FileManager.default.contentsOfDirectory(atPath: folder.path)
        #expect(side.contains { $0.hasPrefix(".provision-") && $0.hasSuffix(".partial.state") }, "\(side)")
        #expect(side.allSatisfy { $0.utf8.count <= 255 })
        let result = try await Downloader().download(request(origin.url(name), into: folder, name: name, chunk: 262_144, connections: 2))
        #expect(result.sha256 == sha256(data) && result.resumedBytes > 0, "\(result)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path) == [name])
    }

    /// A name over NAME_MAX fails for good before anything is fetched; so does a job's path with one.
    @Test func aNameOverNameMaxFailsAtOnceForGood() async throws {
        let origin = try await TestOrigin()
        defer { origin.stop() }
        try origin.addFile("f.bin", size: 1000)
        let folder = try makeTemporaryDirectory("toolong")
        defer { try? FileManager.default.removeItem(at: folder) }
        let name = String(repeating: "x", count: 256)
        do {
            _ = try await Downloader().download(request(origin.url("f.bin"), into: folder, name: name))
            Issue.record("a 256-byte name was placed")
        } catch {
            #expect(error.type == "invalid_destination" && !error.isRetryable, "\(error)")
        }
        #expect(try await origin.stats().requests.isEmpty)
        #expect(throws: DownloadError.self) { try Destination.resolve("checkpoints/" + name, under: folder.path) }
        #expect(throws: DownloadError.self) { try Destination.resolve("checkpoints/.provision-abc.partial", under: folder.path) }
        let cli = try await run(provisionExecutable(), ["download", origin.url("f.bin"), "-o", folder.appendingPathComponent(name).path, "--allow-loopback"])
        #expect(cli.status == 1 && cli.output.contains("longer than 255 bytes"), "\(cli.output)")
        #expect(try await origin.stats().requests.isEmpty)
    }

    /// An empty answer is refused unless the request expects an empty file (size 0, or its hash),
    /// ranged or as one stream.
    @Test(arguments: ["", "norange=1"])
    func anEmptyBodyIsRefusedUnlessExpected(query: String) async throws {
        let origin = try await TestOrigin()
        defer { origin.stop() }
        try origin.addFile("empty.bin", size: 0)
        let folder = try makeTemporaryDirectory("empty")
        defer { try? FileManager.default.removeItem(at: folder) }
        do {
            let result = try await Downloader().download(request(origin.url("empty.bin", query), into: folder))
            Issue.record("an empty body was placed: \(result)")
        } catch {
            #expect(error.type == "bad_response" && error.description.contains("empty"), "\(error)")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path).isEmpty)
        var sized = request(origin.url("empty.bin", query), into: folder, name: "sized.bin")
        sized.expectedSize = 0
        #expect(try await Downloader().download(sized).bytes == 0)
        var hashed = request(origin.url("empty.bin", query), into: folder, name: "hashed.bin")
        hashed.expectedSHA256 = sha256(Data())
        #expect(try await Downloader().download(hashed).bytes == 0)
        let cli = try await run(provisionExecutable(), ["download", origin.url("empty.bin", query), "-o", folder.appendingPathComponent("cli.bin").path, "--allow-loopback"])
        #expect(cli.status == 1 && cli.output.contains("empty file"), "\(cli.output)")
    }
}
