// swift-tools-version:6.0
import PackageDescription

// Micro-benchmarks, kept out of the main package so the test build stays lean.
// Run: (cd Benchmarks && swift run -c release sipcore-bench)
let package = Package(
    name: "SwiftSERBenchmarks",
    dependencies: [.package(path: "..")],
    targets: [
        // Counts heap allocations by wrapping glibc's malloc family.
        .target(name: "CMallocCounter"),
        .executableTarget(
            name: "sipcore-bench",
            dependencies: ["CMallocCounter", .product(name: "SIPCore", package: "main")],
            swiftSettings: [.unsafeFlags(["-Ounchecked"])]
        ),
    ]
)
