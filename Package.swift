// swift-tools-version:6.0
//
// FieldSync: an offline-first, peer-to-peer sync framework for field policing nodes.
// Layers (see docs/overview.md, "Layers"): FieldSyncCore <- FieldSyncCrypto <- FieldSyncProtocol <- FieldSyncDriver
// (the node's sans-IO driver policy) and FieldSyncStore <- FieldSyncNode / FieldSim <- executables.
import PackageDescription

let package = Package(
    name: "FieldSync",
    products: [
        .library(name: "FieldSyncCore", targets: ["FieldSyncCore"]),
        .library(name: "FieldSyncCrypto", targets: ["FieldSyncCrypto"]),
        .library(name: "FieldSyncProtocol", targets: ["FieldSyncProtocol"]),
        .library(name: "FieldSyncStore", targets: ["FieldSyncStore"]),
        .library(name: "FieldSyncDriver", targets: ["FieldSyncDriver"]),
        .library(name: "FieldSyncNode", targets: ["FieldSyncNode"]),
        .library(name: "FieldSyncFeed", targets: ["FieldSyncFeed"]),
        .library(name: "FieldSync", targets: ["FieldSync"]),
        .library(name: "FieldSyncGeo", targets: ["FieldSyncGeo"]),
        .library(name: "FieldSyncReports", targets: ["FieldSyncReports"]),
        .library(name: "FieldSyncWeb", targets: ["FieldSyncWeb"]),
        .executable(name: "fieldsync", targets: ["fieldsync"]),
        .executable(name: "fieldsync-bench", targets: ["fieldsync-bench"]),
        .executable(name: "fieldsim", targets: ["fieldsim"]),
        .executable(name: "fieldsync-fuzz", targets: ["fieldsync-fuzz"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        // `swift package generate-documentation --target FieldSync` (the DocC catalog, Sources/FieldSync/FieldSync.docc).
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
    ],
    targets: [
        // libsodium from Debian (`libsodium-dev`), found through pkg-config.
        .systemLibrary(
            name: "CSodium",
            pkgConfig: "libsodium",
            providers: [.apt(["libsodium-dev"])]
        ),
        // Pure data model: identifiers, HLC, CRDTs, records, canonical encoding. No I/O, no clock.
        .target(name: "FieldSyncCore"),
        // Safe Swift API over the libsodium primitives FieldSync uses, identity and sealed changes.
        .target(name: "FieldSyncCrypto", dependencies: ["CSodium", "FieldSyncCore"]),
        // Sans-IO sync logic: the store contract, commit rules, in-memory store, sessions.
        .target(name: "FieldSyncProtocol", dependencies: ["FieldSyncCore", "FieldSyncCrypto"]),
        // Sans-IO driver policy shared by the node and the simulator: when to contact which peer, backoff,
        // live-session rules, HQ receipt timing, refused-change retry, the store-heads trigger. No clock, no I/O.
        .target(name: "FieldSyncDriver", dependencies: ["FieldSyncCore", "FieldSyncCrypto", "FieldSyncProtocol"]),
        // The SQLite store (GRDB), encrypted at rest.
        .target(
            name: "FieldSyncStore",
            dependencies: ["FieldSyncCore", "FieldSyncCrypto", "FieldSyncProtocol", .product(name: "GRDB", package: "GRDB.swift")]
        ),
        // The node: the only layer with sockets, timers and tasks (SwiftNIO TCP around the sans-IO session).
        .target(
            name: "FieldSyncNode",
            dependencies: [
                "FieldSyncCore", "FieldSyncCrypto", "FieldSyncProtocol", "FieldSyncDriver", "FieldSyncStore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        // The HQ feed into PostgreSQL (docs/postgres-feed.md): reads the store in its own order, opens changes with
        // the replicator's keys, writes rows and the cursor in one PostgreSQL transaction. Only nodes that run a
        // feed use it; the store pays nothing for it.
        .target(
            name: "FieldSyncFeed",
            dependencies: [
                "FieldSyncCore", "FieldSyncCrypto", "FieldSyncProtocol", "FieldSyncStore",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        // The app API (docs/app-api.md): typed writes, queries and history, observation, background sync.
        .target(
            name: "FieldSync",
            dependencies: [
                "FieldSyncCore", "FieldSyncCrypto", "FieldSyncProtocol", "FieldSyncDriver", "FieldSyncStore", "FieldSyncNode",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        // Geometry shared by the simulator's staleness map and the reports' map: haversine, projection, Voronoi
        // cells, the seeded generator and the synthetic station layout. Pure.
        .target(name: "FieldSyncGeo", dependencies: ["FieldSyncCore"]),
        // The command center's reports (docs/reports.md): daily report, suspected duplicates, units, map of
        // Longnan; pure functions over the app API's queries, rendered as HTML, CSV, JSON and SVG. No HTTP.
        .target(
            name: "FieldSyncReports",
            dependencies: ["FieldSync", "FieldSyncGeo", "FieldSyncCore", "FieldSyncCrypto", "FieldSyncProtocol", "FieldSyncStore", "FieldSyncNode"]
        ),
        // The command center (docs/command-center.md): a Hummingbird web UI served by a reading node, over the
        // FieldSync library's queries and observation; operator accounts, sessions, CSRF, scopes, access log.
        .target(
            name: "FieldSyncWeb",
            dependencies: [
                "FieldSync", "FieldSyncReports", "FieldSyncGeo", "FieldSyncCore", "FieldSyncCrypto", "FieldSyncProtocol", "FieldSyncNode", "CSodium",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "fieldsync",
            dependencies: [
                "FieldSync",
                "FieldSyncReports",
                "FieldSyncWeb",
                "FieldSyncCore",
                "FieldSyncCrypto",
                "FieldSyncProtocol",
                "FieldSyncStore",
                "FieldSyncNode",
                "FieldSyncFeed",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        // Deterministic discrete-event simulator (Simulator/README.md): engine, scenarios, metrics, charts.
        // Release builds drop the dynamic exclusivity checks (a third of the engine's time, measured in
        // docs/simulator.md); debug builds and tests keep them.
        // The shipped scenarios (Simulator/Scenarios, with the traces they name) are its resources, so `fieldsim
        // --scenario NAME` runs from any directory (ShippedScenarios, Bundle.module).
        .target(
            name: "FieldSim",
            dependencies: ["FieldSyncCore", "FieldSyncCrypto", "FieldSyncProtocol", "FieldSyncDriver", "FieldSyncGeo"],
            path: "Simulator",
            exclude: ["README.md", "Sources/fieldsim"],
            sources: ["Sources/FieldSim"],
            resources: [.copy("Scenarios")],
            swiftSettings: [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]
        ),
        .executableTarget(
            name: "fieldsim",
            dependencies: ["FieldSim", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Simulator/Sources/fieldsim"
        ),
        .executableTarget(
            name: "fieldsync-bench",
            dependencies: [
                "FieldSync",
                "FieldSyncReports",
                "FieldSyncCore",
                "FieldSyncCrypto",
                "FieldSyncProtocol",
                "FieldSyncStore",
                "FieldSyncNode",
                "FieldSyncFeed",
                "FieldSyncWeb",
                "FieldSim",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            exclude: ["fuzz.sh"]
        ),
        // The example app (docs/examples/command-app, its own package depending on this one by path), built here
        // too from the same source, so that CommandAppTests drive it without a second build of every dependency.
        .executableTarget(
            name: "command-app",
            dependencies: ["FieldSync", "FieldSyncCore", "FieldSyncCrypto", "FieldSyncProtocol", "FieldSyncNode", "FieldSyncDriver"],
            path: "docs/examples/command-app/Sources/command-app"
        ),
        // Shared by the test targets: the trait that keeps blocking tests off the cooperative pool, and the
        // built `fieldsync` binary with one way to run it.
        .target(name: "FieldSyncTestSupport", dependencies: [.product(name: "Logging", package: "swift-log")], path: "Tests/FieldSyncTestSupport"),
        // Fuzz entry points for every decoder of peer bytes and the session after a handshake
        // (docs/fuzzing.md); compiled in every build so the suite replays their corpora.
        .target(
            name: "FieldSyncFuzz",
            dependencies: ["FieldSyncCore", "FieldSyncCrypto", "FieldSyncProtocol", "FieldSyncNode"]
        ),
        // The fuzz targets as one program: seeds, replay, and (built by Sources/fieldsync-bench/fuzz.sh
        // with -sanitize=fuzzer) libFuzzer runs.
        .executableTarget(name: "fieldsync-fuzz", dependencies: ["FieldSyncFuzz"]),
        .testTarget(name: "FieldSyncCoreTests", dependencies: ["FieldSyncCore"]),
        .testTarget(name: "FieldSyncCryptoTests", dependencies: ["FieldSyncCrypto", "FieldSyncCore", "FieldSyncTestSupport"]),
        .testTarget(name: "FieldSyncProtocolTests", dependencies: ["FieldSyncProtocol", "FieldSyncCore", "FieldSyncCrypto"]),
        .testTarget(name: "FieldSyncStoreTests", dependencies: ["FieldSyncStore", "FieldSyncProtocol", "FieldSyncCore", "FieldSyncCrypto", "FieldSyncTestSupport"]),
        .testTarget(
            name: "FieldSyncNodeTests",
            dependencies: ["FieldSyncNode", "FieldSyncStore", "FieldSyncProtocol", "FieldSyncCore", "FieldSyncCrypto", "FieldSyncTestSupport",
                           "FieldSyncFeed",
                           .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                           .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                           .product(name: "Logging", package: "swift-log"), .product(name: "Prometheus", package: "swift-prometheus")]
        ),
        .testTarget(
            name: "FieldSyncDriverTests",
            dependencies: ["FieldSyncDriver", "FieldSyncNode", "FieldSim", "FieldSyncProtocol", "FieldSyncCore", "FieldSyncCrypto",
                           "FieldSyncTestSupport"]
        ),
        .testTarget(
            name: "FieldSyncTests",
            dependencies: ["FieldSync", "FieldSyncNode", "FieldSyncDriver", "FieldSyncStore", "FieldSyncProtocol", "FieldSyncCore",
                           "FieldSyncCrypto", "FieldSyncTestSupport", .product(name: "NIOCore", package: "swift-nio")]
        ),
        .testTarget(
            name: "FieldSyncReportsTests",
            dependencies: ["FieldSyncReports", "FieldSyncGeo", "FieldSync", "FieldSyncNode", "FieldSyncStore", "FieldSyncProtocol", "FieldSyncCore",
                           "FieldSyncCrypto", "FieldSyncTestSupport"]
        ),
        .testTarget(
            name: "FieldSyncWebTests",
            dependencies: ["FieldSyncWeb", "FieldSync", "FieldSyncNode", "FieldSyncCore", "FieldSyncCrypto", "FieldSyncTestSupport",
                           .product(name: "Hummingbird", package: "hummingbird"), .product(name: "Logging", package: "swift-log")]
        ),
        .testTarget(name: "FieldSimTests", dependencies: ["FieldSim", "FieldSyncCore", "FieldSyncProtocol", "FieldSyncGeo", "FieldSyncTestSupport"], path: "Tests/FieldSimTests"),
        .testTarget(name: "FieldSyncFuzzTests", dependencies: ["FieldSyncFuzz", "FieldSyncTestSupport"], exclude: ["Regressions"]),
    ]
)
