// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "SwiftSER",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "swiftser", targets: ["swiftser"]),
        .library(name: "SIPCore", targets: ["SIPCore"]),
        .library(name: "SIPConfig", targets: ["SIPConfig"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
    ],
    targets: [
        // Pure SIP: messages, URIs, headers, parsing, serialisation, stream framing.
        .target(name: "SIPCore"),
        // The ser.cfg language: lexer, parser, typed model, the route script.
        .target(name: "SIPConfig", dependencies: ["SIPCore"]),
        .executableTarget(
            name: "swiftser",
            dependencies: [
                "SIPCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(name: "SIPCoreTests", dependencies: ["SIPCore"]),
        .testTarget(name: "SIPConfigTests", dependencies: ["SIPConfig"]),
    ]
)
