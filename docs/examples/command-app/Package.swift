// swift-tools-version:6.0
//
// The example app of docs/app-api.md: a terminal program standing in for the officers' mobile command app.
// It depends on FieldSync by path (this repository) and builds only what the FieldSync library needs.
import PackageDescription

let package = Package(
    name: "CommandApp",
    dependencies: [
        .package(name: "FieldSync", path: "../../.."),
    ],
    targets: [
        .executableTarget(
            name: "command-app",
            dependencies: [
                .product(name: "FieldSync", package: "FieldSync"),
                .product(name: "FieldSyncCore", package: "FieldSync"),
                .product(name: "FieldSyncCrypto", package: "FieldSync"),
                .product(name: "FieldSyncProtocol", package: "FieldSync"),
                .product(name: "FieldSyncNode", package: "FieldSync"),
                .product(name: "FieldSyncDriver", package: "FieldSync"),
            ]
        ),
    ]
)
