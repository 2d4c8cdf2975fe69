// swift-tools-version:6.0
import PackageDescription

// Micro-benchmarks, kept out of the main package so the test build stays lean.
// Run: (cd Benchmarks && swift run -c release sipcore-bench)
let package = Package(
    name: "SwiftSERBenchmarks",
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
    ],
    targets: [
        // Counts heap allocations by wrapping glibc's malloc family.
        .target(name: "CMallocCounter"),
        .executableTarget(
            name: "sipcore-bench",
            dependencies: [
                "CMallocCounter",
                .product(name: "SIPCore", package: "main"),
                .product(name: "SIPConfig", package: "main"),
                .product(name: "SIPProxy", package: "main"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: [.swiftLanguageMode(.v5)]
        ),
    ]
)
