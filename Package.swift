// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "SwiftSER",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "swiftser", targets: ["swiftser"]),
        .executable(name: "sipload", targets: ["sipload"]),
        .library(name: "SIPCore", targets: ["SIPCore"]),
        .library(name: "SIPConfig", targets: ["SIPConfig"]),
        .library(name: "SIPProxy", targets: ["SIPProxy", "SIPTransport", "SIPTLS"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-atomics.git", from: "1.3.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
    ],
    targets: [
        // Pure SIP: messages, URIs, headers, parsing, serialisation, stream framing.
        .target(name: "SIPCore"),
        // The ser.cfg language: lexer, parser, typed model, the route script.
        .target(name: "SIPConfig", dependencies: ["SIPCore"]),
        .executableTarget(
            name: "swiftser",
            dependencies: [
                "SIPCore", "SIPConfig", "SIPTLS", "SIPTransport", "SIPProxy",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ]
        ),
        // A closed-loop load generator for the benchmarks (docs/performance.md).
        .executableTarget(
            name: "sipload",
            dependencies: [
                "SIPCore",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ]
        ),
        // TLS domains: contexts from config, picking a domain, verification policy, certificates.
        .target(
            name: "SIPTLS",
            dependencies: [
                "SIPConfig",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
            ]
        ),
        // SwiftNIO sockets: listeners, stream framing, the connection table, outbound connections, timeouts.
        .target(
            name: "SIPTransport",
            dependencies: [
                "SIPCore", "SIPConfig", "SIPTLS", "CAres",
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        // c-ares (DNS look-ups of SIPTransport's DNSClient).
        .systemLibrary(name: "CAres", pkgConfig: "libcares", providers: [.apt(["libc-ares-dev"])]),
        // Routing: script interpreter, stateless and stateful forwarding, record-route, registrar, location store.
        .target(
            name: "SIPProxy",
            dependencies: [
                "SIPCore", "SIPConfig", "SIPTLS", "SIPTransport", "CSQLite",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ]
        ),
        .testTarget(name: "SIPCoreTests", dependencies: ["SIPCore", .product(name: "Crypto", package: "swift-crypto")]),
        .testTarget(name: "SIPTLSTests", dependencies: ["SIPTLS", .product(name: "X509", package: "swift-certificates")]),
        .testTarget(
            name: "SIPProxyTests",
            dependencies: [
                "SIPProxy", "SIPTransport", "SIPTLS", "SIPConfig", "SIPCore", "CSQLite",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ServiceLifecycleTestKit", package: "swift-service-lifecycle"),
            ],
            exclude: []
        ),
        // The checker is tested against the real table of script functions (SIPProxy's).
        .testTarget(name: "SIPConfigTests", dependencies: ["SIPConfig", "SIPProxy"]),
        .testTarget(name: "SIPTransportTests", dependencies: [
            "SIPTransport", "SIPConfig", "SIPCore",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
            .product(name: "NIOTLS", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
    ]
)
