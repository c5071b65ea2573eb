import Downloader
import Foundation
import TestSupport
import Testing

/// Host spellings that all reach 127.0.0.1 (or ::1) and must be refused without `--allow-loopback`.
/// `PORT` is replaced by a live origin's port.
let loopbackSpellings = [
    "2130706433", "0x7f000001", "127.1", "0177.0.0.1", "127.0.0.1", "0", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]",
    "[0:0:0:0:0:0:0:1]", "[::1]", "localhost", "LocalHost",
]

/// The machine's own host name when every address it resolves to is loopback (then a download to it
/// stays on this machine whatever happens), else nil.
func loopbackHostName() -> String? {
    var buffer = [CChar](repeating: 0, count: 256)
    guard gethostname(&buffer, buffer.count) == 0 else { return nil }
    let name = String(cString: buffer)
    let addresses = NetworkAddress.resolve(name)
    guard !name.isEmpty, !addresses.isEmpty, addresses.allSatisfy({ $0.restrictedRange == "loopback" }) else { return nil }
    return name
}

@Suite("Address checks on the resolved address", .serialized)
struct AddressPolicyTests {
    @Test func rangesAreClassifiedOnTheAddress() throws {
        let restricted = [
            "127.0.0.1", "127.255.255.254", "10.0.0.1", "172.16.0.1", "172.31.255.255", "192.168.1.1", "169.254.169.254",
            "0.0.0.0", "0.1.2.3", "100.64.0.1", "100.127.255.255", "224.0.0.1", "239.255.255.250", "255.255.255.255", "240.0.0.1",
            "::1", "::", "fe80::1", "febf::1", "fc00::1", "fd12:3456::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:7f00:1",
            "::ffff:169.254.169.254", "::ffff:10.0.0.1", "::127.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::1", "2002:a9fe:a9fe::",
            "0:0:0:0:0:0:0:1", "2001:db8::1", "198.18.0.1", "192.0.0.8",
        ]
        for text in restricted {
            let address = try #require(NetworkAddress(numeric: text), "\(text)")
            #expect(address.restrictedRange != nil, "\(text) should be restricted")
        }
        for text in ["8.8.8.8", "1.1.1.1", "100.63.255.255", "100.128.0.1", "172.15.255.255", "172.32.0.1", "169.253.1.1",
                     "2606:4700:4700::1111", "2a00:1450:4001::200e", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"] {
            let address = try #require(NetworkAddress(numeric: text), "\(text)")
            #expect(address.restrictedRange == nil, "\(text) is public: \(address.restrictedRange ?? "")")
        }
        #expect(NetworkAddress(numeric: "::ffff:127.0.0.1")?.restrictedRange == "loopback")
        #expect(NetworkAddress(numeric: "169.254.169.254")?.restrictedRange?.hasPrefix("link-local") == true)
    }

    /// Every legacy spelling is read as the resolver (and so libcurl) reads it. Nothing connects here.
    @Test func everySpellingIsRefusedBeforeAnyConnection() throws {
        let strict = URLPolicy()
        var hosts = loopbackSpellings
        if let own = loopbackHostName() { hosts.append(own) }
        // 169.254.169.254 (cloud metadata) in the spellings that passed before, and other local ranges.
        hosts += ["2852039166", "0xa9fea9fe", "169.254.169.254", "[::ffff:169.254.169.254]", "[::ffff:a9fe:a9fe]", "10.1.2.3",
                  "167772161", "[fd00::1]", "[fe80::1]", "100.64.0.1", "0.0.0.0", "[::]", "a.localhost"]
        for host in hosts {
            for url in ["http://\(host)/f", "https://\(host):8443/f?X-Sig=s"] {
                let started = ContinuousClock.now
                do {
                    _ = try strict.check(url)
                    Issue.record("\(url) was not refused")
                } catch {
                    #expect(error.type == "invalid_url", "\(url): \(error)")
                    #expect(error.description.contains("not allowed"), "\(url): \(error)")
                    #expect(!error.description.contains("X-Sig"))
                }
                // Refused by arithmetic on the address, not by a connection attempt timing out.
                #expect(ContinuousClock.now - started < .seconds(2), "\(url)")
            }
        }
        #expect(throws: DownloadError.self) { try strict.checkWithoutResolving("http://[::ffff:7f00:1]/f") }
        // A public numeric address passes (nothing is fetched from it).
        #expect((try? strict.check("http://8.8.8.8/f")) != nil)
        #expect((try? strict.check("http://134744072/f")) != nil)
        // Allowed one by one, with the port.
        let one = URLPolicy(allowedOrigins: [try #require(URLPolicy.AllowedOrigin("127.0.0.1:8080"))])
        #expect((try? one.check("http://127.0.0.1:8080/f")) != nil)
        #expect((try? one.check("http://2130706433:8080/f")) != nil)
        #expect(throws: DownloadError.self) { try one.check("http://127.0.0.1:8081/f") }
        #expect(throws: DownloadError.self) { try one.check("http://[::1]:8080/f") }
        #expect(URLPolicy.AllowedOrigin("localhost:80") == nil && URLPolicy.AllowedOrigin("127.0.0.1") == nil && URLPolicy.AllowedOrigin("::1:80") == nil)
        #expect(URLPolicy.AllowedOrigin("[::1]:80")?.description == "[::1]:80")
    }

    /// `provision download` with each spelling of a live loopback origin: refused without a request
    /// reaching it, while with `--allow-loopback` the same URLs download (so the refusal is the check).
    @Test func theDownloadCommandRefusesEverySpellingOfALiveOrigin() async throws {
        let origin = try await TestOrigin()
        defer { origin.stop() }
        let data = try origin.addFile("f.bin", size: 200_000)
        let folder = try makeTemporaryDirectory("spell")
        defer { try? FileManager.default.removeItem(at: folder) }
        var hosts = loopbackSpellings
        if let own = loopbackHostName() { hosts.append(own) }
        for (index, host) in hosts.enumerated() {
            let output = folder.appendingPathComponent("f\(index).bin").path
            let url = "http://\(host):\(origin.port)/files/f.bin"
            let refused = try await run(provisionExecutable(), ["download", url, "--output", output], environment: ["PROVISION_ALLOW_LOOPBACK": ""])
            #expect(refused.status == 1, "\(url): \(refused.output)")
            #expect(refused.output.contains("not allowed") && refused.output.hasPrefix("provision: "), "\(url): \(refused.output)")
            #expect(!FileManager.default.fileExists(atPath: output))
        }
        #expect(try await origin.stats().requests.isEmpty)
        // The IPv4 spellings (and the IPv4-mapped ones) do reach the origin when allowed.
        for host in ["2130706433", "0x7f000001", "127.1", "0177.0.0.1", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]"] {
            let output = folder.appendingPathComponent("allowed.bin").path
            let allowed = try await run(provisionExecutable(), ["download", "http://\(host):\(origin.port)/files/f.bin", "--output", output, "--allow-loopback"])
            #expect(allowed.status == 0, "\(host): \(allowed.output)")
            #expect((try? Data(contentsOf: URL(fileURLWithPath: output))) == data, "\(host)")
            try? FileManager.default.removeItem(atPath: output)
        }
    }

    /// An origin allowed by `--allow-origin` redirects to every spelling of another loopback origin:
    /// each redirect is refused; the allowed origin itself and an allowed redirect work.
    @Test func redirectsFromAnAllowedOriginToLocalSpellingsAreRefused() async throws {
        let allowedOrigin = try await TestOrigin()
        let target = try await TestOrigin()
        defer { allowedOrigin.stop(); target.stop() }
        let data = try target.addFile("f.bin", size: 300_000)
        try data.write(to: allowedOrigin.root.appendingPathComponent("f.bin"))
        let folder = try makeTemporaryDirectory("redir")
        defer { try? FileManager.default.removeItem(at: folder) }
        let allowed = try #require(URLPolicy.AllowedOrigin("127.0.0.1:\(allowedOrigin.port)"))

        func download(_ url: String, policy: URLPolicy, name: String) async -> Result<DownloadResult, DownloadError> {
            var req = request(url, into: folder, name: name)
            req.policy = policy
            req.maxAttemptsPerChunk = 2
            do throws(DownloadError) { return .success(try await Downloader().download(req)) } catch { return .failure(error) }
        }
        func goto(_ host: String) -> String {
            let to = "http://\(host):\(target.port)/files/f.bin".addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
            return "\(allowedOrigin.base)/goto?to=\(to)"
        }

        // The allowed origin itself downloads.
        guard case .success(let direct) = await download(allowedOrigin.url("f.bin"), policy: URLPolicy(allowedOrigins: [allowed]), name: "direct.bin") else {
            Issue.record("the allowed origin was refused")
            return
        }
        #expect(direct.sha256 == sha256(data))
        var hosts = loopbackSpellings
        if let own = loopbackHostName() { hosts.append(own) }
        for (index, host) in hosts.enumerated() {
            let started = ContinuousClock.now
            let outcome = await download(goto(host), policy: URLPolicy(allowedOrigins: [allowed]), name: "r\(index).bin")
            guard case .failure(let error) = outcome else {
                Issue.record("the redirect to \(host) was followed")
                continue
            }
            #expect(error.type == "invalid_url" && error.description.contains("not allowed"), "\(host): \(error)")
            #expect(ContinuousClock.now - started < .seconds(10), "\(host)")
            #expect(!FileManager.default.fileExists(atPath: folder.appendingPathComponent("r\(index).bin").path))
        }
        // The redirect target saw no request at all, and the redirects to 169.254.169.254 are refused
        // before any connection (decided on the address, with no time spent connecting).
        #expect(try await target.stats().requests.isEmpty)
        for host in ["2852039166", "169.254.169.254", "[::ffff:a9fe:a9fe]"] {
            let to = "http://\(host)/latest/meta-data/".addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
            let started = ContinuousClock.now
            let outcome = await download("\(allowedOrigin.base)/goto?to=\(to)", policy: URLPolicy(allowedOrigins: [allowed]), name: "meta.bin")
            guard case .failure(let error) = outcome else { Issue.record("\(host) was followed"); continue }
            #expect(error.type == "invalid_url" && error.description.contains("link-local"), "\(error)")
            #expect(ContinuousClock.now - started < .seconds(2))
        }
        // Allowing the target's address:port lets the same spelled redirect through: the decision
        // is on the resolved address and port.
        let both = URLPolicy(allowedOrigins: [allowed, try #require(URLPolicy.AllowedOrigin("127.0.0.1:\(target.port)"))])
        guard case .success(let through) = await download(goto("2130706433"), policy: both, name: "through.bin") else {
            Issue.record("an allowed redirect was refused")
            return
        }
        #expect(through.sha256 == sha256(data))
    }

    /// The open-socket check sees the address libcurl really connects to: a URL whose host does not
    /// resolve at all passes the first check, but with a proxy on loopback the connection goes to
    /// 127.0.0.1 and is refused. Nothing leaves the machine: `.invalid` names never resolve.
    @Test func theConnectionItselfIsChecked() async throws {
        let origin = try await TestOrigin()
        defer { origin.stop() }
        let data = try origin.addFile("f.bin", size: 100_000)
        let folder = try makeTemporaryDirectory("sock")
        defer { try? FileManager.default.removeItem(at: folder) }
        let url = "http://provision-test.invalid/files/f.bin"
        let proxy = ["http_proxy": origin.base, "HTTP_PROXY": origin.base, "no_proxy": "", "NO_PROXY": ""]
        let refused = try await run(provisionExecutable(), ["download", url, "--output", folder.appendingPathComponent("a.bin").path], environment: proxy)
        #expect(refused.status == 1, "\(refused.output)")
        #expect(refused.output.contains("a connection would go to 127.0.0.1") && refused.output.contains("not allowed"), "\(refused.output)")
        #expect(try await origin.stats().requests.isEmpty)
        // Allowing the proxy's address:port lets it through: the origin answers as the proxy.
        let allowed = try await run(provisionExecutable(), ["download", url, "--output", folder.appendingPathComponent("b.bin").path, "--allow-origin", "127.0.0.1:\(origin.port)"], environment: proxy)
        #expect(allowed.status == 0, "\(allowed.output)")
        #expect((try? Data(contentsOf: folder.appendingPathComponent("b.bin"))) == data)
    }

    @Test func smallFetchesAreCheckedToo() async throws {
        let origin = try await TestOrigin()
        defer { origin.stop() }
        try Data("{}".utf8).write(to: origin.root.appendingPathComponent("api.json"))
        for host in ["2130706433", "127.1", "[::ffff:127.0.0.1]", "localhost"] {
            do {
                _ = try await SmallFetch().get("http://\(host):\(origin.port)/files/api.json")
                Issue.record("\(host) was fetched")
            } catch {
                #expect(error.type == "invalid_url", "\(error)")
            }
        }
        #expect(try await origin.stats().requests.isEmpty)
        let allowed = URLPolicy(allowedOrigins: [try #require(URLPolicy.AllowedOrigin("127.0.0.1:\(origin.port)"))])
        #expect(try await SmallFetch(policy: allowed).get("http://2130706433:\(origin.port)/files/api.json") == Data("{}".utf8))
    }
}
