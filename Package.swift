// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "provision",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "provision", targets: ["provision"]),
        .library(name: "JobQueue", targets: ["JobQueue"]),
        .library(name: "RedisClient", targets: ["RedisClient"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.0.0"),
    ],
    targets: [
        // C bindings: nothing but the system libraries and the glue for variadic C calls.
        .systemLibrary(
            name: "CHiredis", pkgConfig: "hiredis",
            providers: [.apt(["libhiredis-dev"])]),
        .systemLibrary(
            name: "CCurl", pkgConfig: "libcurl",
            providers: [.apt(["libcurl4-openssl-dev"])]),
        .target(name: "CCurlShim", dependencies: ["CCurl"]),
        .target(name: "CSHA256", linkerSettings: [.linkedLibrary("crypto")]),

        .target(name: "CSpawn"),
        .target(name: "CFileSync"),
        .target(name: "ProcessControl", dependencies: ["CSpawn"]),
        // git for the whole project: one source policy (https, rewrites, refs), one safe runner.
        .target(name: "GitClient", dependencies: ["ProcessControl"]),
        .target(name: "RedisClient", dependencies: ["CHiredis"]),
        // A private redis-server launched from this process (`provision up`, offline readers, tests).
        .target(name: "RedisServerProcess", dependencies: ["RedisClient", "ProcessControl"]),
        // What a job is without any queue: payload contracts per kind, failure, context, progress,
        // the executor protocol. Domain modules depend on this, never on Redis.
        .target(name: "JobCore", dependencies: [.product(name: "Logging", package: "swift-log")]),
        .target(
            name: "JobQueue",
            dependencies: ["RedisClient"],
            plugins: ["EmbedScripts"]),
        .target(
            name: "Scheduler",
            dependencies: [
                "JobCore", "JobQueue", "RedisClient", "ProcessControl",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),
        .target(
            name: "Downloader",
            dependencies: [
                "CCurl", "CCurlShim", "CSHA256", "CFileSync", "JobCore",
                .product(name: "Logging", package: "swift-log"),
            ]),
        .target(
            name: "NodeInstaller",
            dependencies: [
                "JobCore", "ProcessControl", "GitClient",
                .product(name: "Logging", package: "swift-log"),
            ]),
        // The documents: spec (manifest, config_nodes.json), lockfile, model directories, input
        // limits, repository URLs, and the git of lock and verify. The core the others share.
        .target(
            name: "ComponentSpec",
            dependencies: ["Downloader", "JobCore", "ProcessControl", "GitClient"]),
        // Workflows (UI and API), the node registry and its prepared index, the analyzer.
        .target(
            name: "WorkflowAnalysis",
            dependencies: ["ComponentSpec", "Downloader", "JobCore", "ProcessControl", "GitClient"]),
        // Spec → plan of jobs (PlanBuilder, Planner), and lock: refs to commits, models to hashes.
        .target(
            name: "Planning",
            dependencies: ["ComponentSpec", "WorkflowAnalysis", "Downloader", "JobCore", "GitClient"]),
        // What is on disk against a lockfile or spec, and the verify job.
        .target(
            name: "Verification",
            dependencies: ["ComponentSpec", "Downloader", "JobCore"]),
        // A lockfile as a plan, a shell script or a requirements file for other tools.
        .target(
            name: "Export",
            dependencies: ["ComponentSpec", "WorkflowAnalysis", "Planning", "JobCore"]),
        // Step events (names, attributes, batching into the machine's stream, redaction of secrets).
        .target(
            name: "Telemetry",
            dependencies: ["JobCore", "JobQueue", "ProcessControl", "RedisClient", "Scheduler", .product(name: "Logging", package: "swift-log")]),
        // Machine status for people and the fleet: the flip's announcement, stalled detection, metrics.
        .target(
            name: "Aggregator",
            dependencies: ["JobQueue", "RedisClient", "Scheduler", "Telemetry", .product(name: "Logging", package: "swift-log")]),
        // HTTP on 9090: /health, /status, /metrics.
        .target(
            name: "HealthServer",
            dependencies: [
                "Aggregator", "JobQueue", "Telemetry",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        // ComfyUI per GPU (steps 9-13, 19-21): hardware, instance list, supervision, readiness probes.
        .target(
            name: "Services",
            dependencies: ["ProcessControl", .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")],
            plugins: ["EmbedScripts"]),
        .executableTarget(
            name: "provision",
            dependencies: [
                "JobQueue", "RedisClient", "Scheduler", "Downloader", "NodeInstaller", "Telemetry", "Aggregator",
                "HealthServer", "ComponentSpec", "WorkflowAnalysis", "Planning", "Verification", "Export",
                "Services", "RedisServerProcess", "Fixtures",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]),

        // Build tooling: protocols/scripts/*.lua are compiled into JobQueue, so the files other
        // languages load are byte for byte the ones the Swift workers run.
        .executableTarget(name: "embed-scripts"),
        .plugin(name: "EmbedScripts", capability: .buildTool(), dependencies: ["embed-scripts"]),

        // Sample data and servers for the demo (in the release binary) and the tests: pseudo-random
        // files, bare git repositories, a loopback origin.
        .target(name: "Fixtures", dependencies: ["ProcessControl", "RedisServerProcess"]),

        // Test helpers: private redis-server, process control, temporary folders.
        .target(name: "TestSupport", dependencies: ["RedisClient", "RedisServerProcess", "ProcessControl", "Fixtures"]),
        .testTarget(name: "RedisClientTests", dependencies: ["RedisClient", "TestSupport"]),
        .testTarget(name: "JobQueueTests", dependencies: ["JobQueue", "RedisClient", "TestSupport"]),
        .testTarget(name: "NodeInstallerTests", dependencies: ["NodeInstaller", "Scheduler", "JobQueue", "GitClient", "TestSupport"]),
        .testTarget(name: "DownloaderTests", dependencies: ["Downloader", "Scheduler", "TestSupport"]),
        .testTarget(
            name: "ManifestTests",
            dependencies: [
                "ComponentSpec", "WorkflowAnalysis", "Planning", "Verification", "Export",
                "Downloader", "JobCore", "Scheduler", "JobQueue", "RedisClient", "TestSupport",
            ],
            exclude: ["Fixtures"]),
        .testTarget(
            name: "WorkerTests",
            dependencies: [
                "JobQueue", "RedisClient", "Scheduler", "Downloader", "TestSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),
        .testTarget(
            name: "TelemetryTests",
            dependencies: [
                "Telemetry", "Aggregator", "Scheduler", "JobQueue", "ProcessControl", "RedisClient", "TestSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),
        .testTarget(
            name: "AggregatorTests",
            dependencies: [
                "Aggregator", "Telemetry", "Scheduler", "JobQueue", "RedisClient", "TestSupport",
                .product(name: "Logging", package: "swift-log"),
            ]),
        .testTarget(
            name: "ServicesTests",
            dependencies: ["Services", "ComponentSpec", "Planning", "ProcessControl", "RedisClient", "TestSupport"]),
        .testTarget(
            name: "HealthServerTests",
            dependencies: [
                "HealthServer", "Aggregator", "Telemetry", "JobQueue", "RedisClient", "TestSupport",
                .product(name: "Logging", package: "swift-log"),
            ]),
    ],
    swiftLanguageModes: [.v6]
)
