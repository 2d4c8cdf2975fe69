import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import SIPCore

/// The SIP load generator of the benchmarks (docs/performance.md).
///
/// Modes: closed loop (each connection keeps `--window` units in flight),
/// open loop at `--rate`, `--find-max` (step the rate up until losses pass
/// 0.1 %), `--new-connection` (one request per TCP/TLS connection: full
/// handshakes per second) and `--idle N` (open N TLS connections and hold
/// them). With `--server-pid` it samples the server's CPU and memory.
@main
struct SIPLoad: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sipload",
        abstract: "SIP load generator: OPTIONS, REGISTER or whole calls over UDP, TCP or TLS.")

    @Option(help: "options, register or call.") var scenario: Scenario = .options
    @Option(help: "udp, tcp or tls.") var proto = "tls"
    @Option(help: "Target (proxy) address.") var host = "127.0.0.1"
    @Option(help: "Target port.") var port: Int
    @Option(help: "Connections (UDP: sockets); with --new-connection: concurrent handshakes.") var connections = 1
    @Option(help: "Closed loop: units in flight per connection.") var window = 8
    @Option(help: "Seconds to run (at most 300).") var duration = 10.0
    @Option(help: "Open loop: units per second in total.") var rate: Double?
    @Option(help: "--rate: seconds at the rate before measuring (connections warm, queues settled).") var warmup = 0.0
    @Flag(help: "Step the rate up until failures + retransmissions pass 0.1 % or the achieved rate falls behind.") var findMax = false
    @Option(help: "--find-max: first rate.") var startRate = 1000.0
    @Option(help: "--find-max: seconds per step.") var stepDuration = 3.0
    @Option(help: "--find-max: factor between steps.") var stepFactor = 1.25
    @Flag(help: "One request per connection (TCP/TLS): measures connection set-ups per second.") var newConnection = false
    @Option(help: "Open this many TLS/TCP connections, send one OPTIONS on each, and hold them.") var idle: Int?
    @Option(help: "--idle: seconds to hold the connections open.") var hold = 3.0
    @Option(help: "Seconds before an unanswered unit counts as a timeout.") var timeout = 5.0
    @Option(help: "Domain for From/To and REGISTER.") var domain = "localhost"
    @Option(help: "REGISTER: distinct users cycled through.") var users = 1000
    @Option(help: "REGISTER: the password of every user user0…userN; a 401/407 challenge is answered with digest (MD5 or SHA-256, qop=auth).") var password: String?
    @Option(help: "call: address the UAS binds (UDP).") var uasHost = "127.0.0.1"
    @Option(help: "call: UAS port (0: any free port).") var uasPort = 0
    @Option(help: "CA file to verify the server (TLS); none: no verification.") var ca: String?
    @Option(help: "Client certificate (TLS).") var cert: String?
    @Option(help: "Client private key (TLS).") var key: String?
    @Option(help: "Key-exchange groups the client offers, e.g. X25519:P-256 (X25519MLKEM768, X25519, P-256, P-384, P-521); default: the library's (ML-KEM hybrid first).") var curves: String?
    @Option(help: "Server process to sample (CPU, PSS); repeat for several.") var serverPid: [Int32] = []
    @Flag(help: "Allow a target that is not on loopback.") var allowRemote = false
    @Flag(help: "Print JSON instead of a table.") var json = false

    func validate() throws {
        guard ["udp", "tcp", "tls"].contains(proto) else { throw ValidationError("--proto must be udp, tcp or tls") }
        guard duration > 0 && duration <= 300 else { throw ValidationError("--duration must be in (0, 300]") }
        guard allowRemote || ["127.0.0.1", "::1", "localhost"].contains(host) else {
            throw ValidationError("refusing a non-loopback target without --allow-remote")
        }
        if newConnection || idle != nil { guard proto != "udp" else { throw ValidationError("--new-connection and --idle need tcp or tls") } }
        if let idle { guard idle > 0 && idle <= 50_000 else { throw ValidationError("--idle must be in 1…50000") } }
        guard stepFactor > 1 else { throw ValidationError("--step-factor must be above 1") }
        guard (cert == nil) == (key == nil) else { throw ValidationError("--cert and --key go together") }
    }

    func run() throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let loop = group.next()
        let env = try Environment(command: self, loop: loop)
        var result = Report(command: self)
        if let idle {
            result.idle = try IdleRun(env: env, count: idle, hold: hold).run()
        } else if newConnection {
            result.steps = [try HandshakeRun(env: env, slots: connections, duration: duration).run()]
        } else {
            result.steps = try LoadRun(env: env, command: self).run()
        }
        env.uasChannel.map { try? $0.close().wait() }
        result.print(json: json)
    }
}

/// What every mode shares: the event loop, TLS context, request factory,
/// the UAS for calls and the server sampler.
struct Environment {
    let loop: EventLoop
    let target: SocketAddress
    let proto: String
    let tls: NIOSSLContext?
    let factory: RequestFactory
    let sampler: ProcessSampler
    let scenario: Scenario
    let timeout: TimeAmount
    let uasChannel: Channel?

    init(command c: SIPLoad, loop: EventLoop) throws {
        self.loop = loop
        proto = c.proto
        scenario = c.scenario
        let resolved = c.host == "localhost" ? "127.0.0.1" : c.host
        target = try SocketAddress(ipAddress: resolved, port: c.port)
        if c.proto == "tls" {
            var t = TLSConfiguration.makeClientConfiguration()
            t.minimumTLSVersion = .tlsv12
            if let list = c.curves {
                t.curves = try list.split(separator: ":").map { name -> NIOTLSCurve in
                    switch name.lowercased() {
                    case "x25519mlkem768": return .x25519_MLKEM768
                    case "x25519": return .x25519
                    case "p-256", "prime256v1", "secp256r1": return .secp256r1
                    case "p-384", "secp384r1": return .secp384r1
                    case "p-521", "secp521r1": return .secp521r1
                    default: throw ValidationError("--curves: unknown group \(name)")
                    }
                }
            }
            if let ca = c.ca { t.trustRoots = .file(ca); t.certificateVerification = .noHostnameVerification } else { t.certificateVerification = .none }
            if let cert = c.cert, let key = c.key {
                t.certificateChain = try NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) }
                t.privateKey = .file(key)
            }
            tls = try NIOSSLContext(configuration: t)
        } else {
            tls = nil
        }
        var uasPort = c.uasPort
        if c.scenario == .call {
            let uas = UAS()
            let ch = try DatagramBootstrap(group: loop).channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture { try ch.pipeline.syncOperations.addHandler(uas) }
            }.bind(host: c.uasHost, port: c.uasPort).wait()
            uasPort = ch.localAddress?.port ?? 0
            let host = c.uasHost.contains(":") ? "[\(c.uasHost)]" : c.uasHost
            try loop.submit { uas.contact = "sip:uas@\(host):\(uasPort)" }.wait()
            uasChannel = ch
        } else {
            uasChannel = nil
        }
        var requests = RequestFactory(proto: c.proto, host: c.host, port: c.port, domain: c.domain, users: c.users, uasHost: c.uasHost, uasPort: uasPort)
        requests.password = c.password
        factory = requests
        sampler = ProcessSampler(pids: c.serverPid)
        timeout = .nanoseconds(Int64(c.timeout * 1e9))
    }

    /// Opens one client channel (UDP socket or TCP/TLS connection) with `handler` on top.
    func open<H: ChannelHandler & Sendable>(_ handler: H) -> EventLoopFuture<Channel> {
        if proto == "udp" {
            let local = target.protocol == .inet6 ? "::1" : "127.0.0.1"
            return DatagramBootstrap(group: loop).channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture { try ch.pipeline.syncOperations.addHandler(handler) }
            }.bind(host: local, port: 0)
        }
        let tls = self.tls
        return ClientBootstrap(group: loop)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(5))
            .channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    if let tls { try ch.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: tls, serverHostname: nil)) }
                    try ch.pipeline.syncOperations.addHandler(handler)
                }
            }.connect(to: target)
    }
}

