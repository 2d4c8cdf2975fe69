import ArgumentParser
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import SIPCore

/// A closed-loop SIP load generator: N connections (or UDP sockets), each
/// with `window` OPTIONS in flight; every answer is timed and replaced by a
/// new request until the duration ends. Loopback only by default.
@main
struct SIPLoad: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "sipload", abstract: "SIP load generator (OPTIONS, closed loop) over UDP, TCP or TLS.")

    @Option(help: "udp, tcp or tls.") var proto = "tls"
    @Option(help: "Target address.") var host = "127.0.0.1"
    @Option(help: "Target port.") var port: Int
    @Option(help: "Connections (UDP: sockets).") var connections = 1
    @Option(help: "Requests in flight per connection.") var window = 8
    @Option(help: "Seconds to run (at most 300).") var duration = 10.0
    @Option(help: "CA file to verify the server (TLS); none: no verification.") var ca: String?
    @Flag(help: "Allow a target that is not on loopback.") var allowRemote = false
    @Flag(help: "Print JSON instead of a table.") var json = false

    func validate() throws {
        guard ["udp", "tcp", "tls"].contains(proto) else { throw ValidationError("--proto must be udp, tcp or tls") }
        guard duration > 0 && duration <= 300 else { throw ValidationError("--duration must be in (0, 300]") }
        guard allowRemote || host == "127.0.0.1" || host == "::1" || host == "localhost" else {
            throw ValidationError("refusing a non-loopback target without --allow-remote")
        }
    }

    func run() throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let stats = Stats()
        let deadline = NIODeadline.now() + .nanoseconds(Int64(duration * 1e9))
        let address = try SocketAddress(ipAddress: host, port: port)
        var tlsContext: NIOSSLContext? = nil
        if proto == "tls" {
            var c = TLSConfiguration.makeClientConfiguration()
            c.minimumTLSVersion = .tlsv12
            if let ca { c.trustRoots = .file(ca); c.certificateVerification = .noHostnameVerification } else { c.certificateVerification = .none }
            tlsContext = try NIOSSLContext(configuration: c)
        }
        let start = NIODeadline.now()
        var channels: [Channel] = []
        for i in 0..<connections {
            let ch: Channel
            if proto == "udp" {
                let handler = LoadHandler<AddressedEnvelope<ByteBuffer>>(id: i, window: window, deadline: deadline, stats: stats, datagram: true, target: address, host: host, port: port, proto: proto)
                ch = try DatagramBootstrap(group: group).channelInitializer { c in
                    c.eventLoop.makeCompletedFuture { try c.pipeline.syncOperations.addHandler(handler) }
                }.bind(host: host.contains(":") ? "::1" : "127.0.0.1", port: 0).wait()
                ch.eventLoop.execute { handler.kick(ch) }
            } else {
                let handler = LoadHandler<ByteBuffer>(id: i, window: window, deadline: deadline, stats: stats, datagram: false, target: address, host: host, port: port, proto: proto)
                ch = try ClientBootstrap(group: group).channelOption(.socketOption(.tcp_nodelay), value: 1).channelInitializer { c in
                    c.eventLoop.makeCompletedFuture {
                        if let tlsContext { try c.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: tlsContext, serverHostname: nil)) }
                        try c.pipeline.syncOperations.addHandler(handler)
                    }
                }.connect(to: address).wait()
                ch.eventLoop.execute { handler.kick(ch) }
            }
            channels.append(ch)
        }
        Thread.sleep(forTimeInterval: duration + 0.5)
        for ch in channels { try? ch.close().wait() }
        let elapsed = Double((NIODeadline.now() - start).nanoseconds) / 1e9
        stats.report(elapsed: min(elapsed, duration), json: json, proto: proto, connections: connections, window: window)
    }
}

final class Stats: @unchecked Sendable {
    private let lock = NIOLock()
    private var latencies: [Double] = []
    private var failures = 0
    func record(_ seconds: Double) { lock.withLock { latencies.append(seconds) } }
    func fail() { lock.withLock { failures += 1 } }

    func report(elapsed: Double, json: Bool, proto: String, connections: Int, window: Int) {
        let l = lock.withLock { latencies.sorted() }
        func p(_ q: Double) -> Double { l.isEmpty ? 0 : l[min(l.count - 1, Int(Double(l.count) * q))] * 1000 }
        let rate = Double(l.count) / elapsed
        if json {
            print("{\"proto\":\"\(proto)\",\"connections\":\(connections),\"window\":\(window),\"answered\":\(l.count),\"failures\":\(failures),\"rate\":\(Int(rate)),\"p50_ms\":\(p(0.5)),\"p99_ms\":\(p(0.99))}")
        } else {
            print("| \(proto) | \(connections) | \(window) | \(l.count) | \(failures) | \(Int(rate)) | \(String(format: "%.2f", p(0.5))) | \(String(format: "%.2f", p(0.99))) |")
        }
    }
}

/// Sends OPTIONS and times their answers on one connection or socket.
final class LoadHandler<In>: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = In
    let id: Int, window: Int, deadline: NIODeadline, stats: Stats, datagram: Bool, target: SocketAddress
    let host: String, port: Int, proto: String
    var framer = SIPStreamFramer()
    var sent: [String: NIODeadline] = [:]
    var seq = 0

    init(id: Int, window: Int, deadline: NIODeadline, stats: Stats, datagram: Bool, target: SocketAddress, host: String, port: Int, proto: String) {
        self.id = id; self.window = window; self.deadline = deadline; self.stats = stats; self.datagram = datagram
        self.target = target; self.host = host; self.port = port; self.proto = proto
    }

    func kick(_ ch: Channel) { for _ in 0..<window { send(ch) } }

    func send(_ ch: Channel) {
        guard NIODeadline.now() < deadline else { return }
        seq += 1
        let callID = "load-\(id)-\(seq)"
        let h = host.contains(":") ? "[\(host)]" : host
        let msg = "OPTIONS sip:\(h):\(port) SIP/2.0\r\nVia: SIP/2.0/\(proto.uppercased()) \(h):9;branch=z9hG4bK-\(callID);rport\r\nMax-Forwards: 70\r\nFrom: <sip:load@\(h)>;tag=\(id)\r\nTo: <sip:\(h)>\r\nCall-ID: \(callID)\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        sent[callID] = .now()
        let buf = ch.allocator.buffer(string: msg)
        if datagram {
            ch.writeAndFlush(AddressedEnvelope(remoteAddress: target, data: buf), promise: nil)
        } else {
            ch.writeAndFlush(buf, promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var messages: [[UInt8]] = []
        let value = unwrapInboundIn(data)
        if let env = value as? AddressedEnvelope<ByteBuffer> {
            messages.append(Array(env.data.readableBytesView))
        } else if let b = value as? ByteBuffer {
            framer.append(b.readableBytesView)
            while let e = try? framer.next() { if case .message(let m) = e { messages.append(m) } }
        }
        for m in messages {
            guard let msg = try? SIPMessage.parse(m), let cid = msg.callID, let t0 = sent.removeValue(forKey: cid) else { continue }
            if (msg.statusCode ?? 0) >= 200 {
                stats.record(Double((NIODeadline.now() - t0).nanoseconds) / 1e9)
                if (msg.statusCode ?? 0) >= 300 { stats.fail() }
                send(context.channel)
            } else {
                sent[cid] = t0
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        stats.fail()
        context.close(promise: nil)
    }
}
