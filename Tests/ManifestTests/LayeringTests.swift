import Foundation
import TestSupport
import Testing

/// The module graph points one way: the domain libraries never reach Redis.
@Suite("Domain libraries are free of Redis")
struct LayeringTests {
    static let domain = [
        "JobCore", "GitClient", "Downloader", "NodeInstaller", "Services",
        "ComponentSpec", "WorkflowAnalysis", "Planning", "Verification", "Export",
    ]
    static let queue = ["JobQueue", "Scheduler", "RedisClient", "CHiredis"]

    @Test func packageSwiftGivesNoDomainModuleARedisDependency() throws {
        let manifest = try String(contentsOf: packageRoot().appendingPathComponent("Package.swift"), encoding: .utf8)
        for target in Self.domain {
            let start = try #require(manifest.range(of: "name: \"\(target)\""), "\(target) is not a target")
            // The target's declaration runs to the next `.target(` / `.testTarget(` / `.executableTarget(`.
            let rest = manifest[start.upperBound...]
            let end = rest.range(of: #"\.(target|testTarget|executableTarget|systemLibrary|plugin)\("#, options: .regularExpression)?.lowerBound ?? rest.endIndex
            let declaration = rest[..<end]
            for forbidden in Self.queue {
                #expect(!declaration.contains("\"\(forbidden)\""), "\(target) depends on \(forbidden)")
            }
        }
    }

    @Test func noDomainSourceImportsTheQueue() throws {
        for target in Self.domain {
            let folder = packageRoot().appendingPathComponent("Sources/\(target)")
            let files = try FileManager.default.subpathsOfDirectory(atPath: folder.path).filter { $0.hasSuffix(".swift") }
            #expect(!files.isEmpty)
            for file in files {
                let lines = try String(contentsOf: folder.appendingPathComponent(file), encoding: .utf8).split(whereSeparator: \.isNewline)
                for line in lines where line.hasPrefix("import ") || line.hasPrefix("@_exported import ") {
                    let module = line.split(separator: " ").last.map(String.init) ?? ""
                    #expect(!Self.queue.contains(module), "\(target)/\(file) imports \(module)")
                }
            }
        }
    }
}
