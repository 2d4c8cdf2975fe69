import Logging
import NIOCore
import NIOEmbedded
import NIOTLS
import SIPConfig
import SIPCore
import Testing
@testable import SIPTransport

/// What the transport hands up: messages and closes. Used on the embedded
/// loop's thread only (the test's own).
final class StreamRecorder: SIPTransportDelegate, @unchecked Sendable { // touched only on the test's thread, which runs the EmbeddedEventLoop
    var received: [ReceivedMessage] = []
    var closed: [CloseReason] = []
    func transport(_ transport: SIPTransport, received r: ReceivedMessage) { received.append(r) }
    func transport(_ transport: SIPTransport, closed connection: SIPConnection, reason: CloseReason) { closed.append(reason) }
}

/// One `SIPStreamHandler` in an `EmbeddedChannel`: no sockets, and time
/// moves only when the test advances the loop's clock.
struct StreamHarness {
    let loop: EmbeddedEventLoop
    let transport: SIPTransport
    let recorder: StreamRecorder
    let settings: SIPStreamHandler.Settings
    let proto: TransportProtocol

    init(proto: TransportProtocol = .tcp, loop: EmbeddedEventLoop = EmbeddedEventLoop(), _ configure: (inout SIPStreamHandler.Settings) -> Void = { _ in }) {
        self.loop = loop
        self.proto = proto
        transport = SIPTransport(config: Config(file: "test.cfg", configDirectory: "/tmp"), tls: nil, group: loop,
                                 logger: Logger(label: "stream-test", factory: { _ in SwiftLogNoOpLogHandler() }))
        recorder = StreamRecorder()
        transport.delegate = recorder
        var s = transport.streamSettings(proto)
        configure(&s)
        settings = s
    }

    /// A new inbound connection from `peer`, active.
    func connect(peer: String = "192.0.2.10", port: Int = 40000) throws -> EmbeddedChannel {
        let listener = ListenSocket(proto: proto, host: "127.0.0.1", port: proto.defaultPort)
        let handler = SIPStreamHandler(transport: transport, listener: listener, settings: settings, outbound: false)
        let channel = EmbeddedChannel(handler: handler, loop: loop)
        channel.localAddress = try SocketAddress(ipAddress: "127.0.0.1", port: Int(proto.defaultPort))
        // An EmbeddedChannel's "connect" address becomes its remote address.
        try channel.connect(to: SocketAddress(ipAddress: peer, port: port)).wait()
        return channel
    }

    var counters: TransportCounterValues { transport.counters.values }
}

func options(_ n: Int, body: String = "") -> [UInt8] {
    Array("""
    OPTIONS sip:127.0.0.1 SIP/2.0\r
    Via: SIP/2.0/TCP 192.0.2.10:40000;branch=z9hG4bK-s\(n)\r
    Max-Forwards: 70\r
    From: <sip:a@example.com>;tag=1\r
    To: <sip:b@example.com>\r
    Call-ID: stream-\(n)\r
    CSeq: \(n) OPTIONS\r
    Content-Length: \(body.utf8.count)\r
    \r
    \(body)
    """.utf8)
}

extension EmbeddedChannel {
    func send(_ bytes: [UInt8]) throws { try writeInbound(ByteBuffer(bytes: bytes)) }
    /// Everything written to the peer so far.
    func written() throws -> [UInt8] {
        var out: [UInt8] = []
        while let b = try readOutbound(as: ByteBuffer.self) { out += b.readableBytesView }
        return out
    }
}

@Suite("The stream handler in an EmbeddedChannel (framing, keep-alives, timeouts, limits)")
struct StreamHandlerTests {
    // MARK: Framing

    @Test("A message split across many reads is delivered once, when its last octet arrives")
    func splitMessage() throws {
        let h = StreamHarness()
        let ch = try h.connect()
        let bytes = options(1, body: "v=0\r\n")
        for i in 0..<(bytes.count - 1) {
            try ch.send([bytes[i]])
            #expect(h.recorder.received.isEmpty, "delivered early after \(i + 1) octets")
        }
        try ch.send([bytes[bytes.count - 1]])
        #expect(h.recorder.received.count == 1)
        #expect(h.recorder.received.first?.message.callID == "stream-1")
        #expect(h.recorder.received.first?.message.body.count == 5)
        #expect(h.recorder.received.first?.connection != nil)
        #expect(ch.isActive)
    }

    @Test("Several messages (and a keep-alive between them) in one read are all delivered, in order")
    func manyInOneRead() throws {
        let h = StreamHarness()
        let ch = try h.connect()
        try ch.send(options(1) + options(2) + Array("\r\n\r\n".utf8) + options(3, body: "abc") + Array(options(4).prefix(20)))
        #expect(h.recorder.received.map { $0.message.callID } == ["stream-1", "stream-2", "stream-3"])
        #expect(try ch.written() == Array("\r\n".utf8))
        // The rest of the fourth completes it.
        try ch.send(Array(options(4).dropFirst(20)))
        #expect(h.recorder.received.count == 4)
        #expect(ch.isActive)
    }

    @Test("CRLF CRLF is answered with one CRLF (RFC 5626 §4.4.1)")
    func keepAlive() throws {
        let h = StreamHarness()
        let ch = try h.connect()
        try ch.send(Array("\r\n\r\n".utf8))
        #expect(try ch.written() == Array("\r\n".utf8))
        #expect(h.counters.pongsSent == 1)
        // A ping split across reads is still one ping.
        try ch.send(Array("\r\n".utf8))
        #expect(try ch.written().isEmpty)
        try ch.send(Array("\r\n".utf8))
        #expect(try ch.written() == Array("\r\n".utf8))
        #expect(h.counters.pongsSent == 2)
        #expect(h.recorder.received.isEmpty)
        #expect(ch.isActive)
    }

    @Test("At most one pong is pending: pings in one read get one pong; none while the peer does not read")
    func onePongPending() throws {
        let h = StreamHarness()
        let ch = try h.connect()
        try ch.send(Array(String(repeating: "\r\n\r\n", count: 5).utf8))
        #expect(try ch.written() == Array("\r\n".utf8))
        #expect(h.counters.pongsSent == 1)
        #expect(h.counters.pongsSkipped == 4)
        // Once it went out, the next ping is answered again.
        try ch.send(Array("\r\n\r\n".utf8))
        #expect(h.counters.pongsSent == 2)
        _ = try ch.written()
        // A peer that does not read (channel not writable) gets none.
        ch.isWritable = false
        ch.pipeline.syncOperations.fireChannelWritabilityChanged()
        try ch.send(Array("\r\n\r\n".utf8))
        #expect(try ch.written().isEmpty)
        #expect(h.counters.pongsSent == 2)
        #expect(h.counters.pongsSkipped == 5)
    }

    @Test("A Content-Length that is not a number closes the connection with a framing reason; messages before it were delivered")
    func badContentLength() throws {
        let h = StreamHarness()
        let ch = try h.connect()
        var bad = options(2)
        let text = String(decoding: bad, as: UTF8.self).replacingOccurrences(of: "Content-Length: 0", with: "Content-Length: 1x")
        bad = Array(text.utf8)
        try ch.send(options(1) + bad)
        #expect(h.recorder.received.map { $0.message.callID } == ["stream-1"])
        #expect(!ch.isActive)
        #expect(h.recorder.closed.count == 1)
        guard case .framing? = h.recorder.closed.first else {
            Issue.record("close reason \(String(describing: h.recorder.closed.first))")
            return
        }
    }

    @Test("A message without Content-Length on a stream closes the connection (framing)")
    func missingContentLength() throws {
        let h = StreamHarness()
        let ch = try h.connect()
        let text = String(decoding: options(1), as: UTF8.self).replacingOccurrences(of: "Content-Length: 0\r\n", with: "")
        try ch.send(Array(text.utf8))
        #expect(h.recorder.received.isEmpty)
        #expect(!ch.isActive)
        guard case .framing? = h.recorder.closed.first else {
            Issue.record("close reason \(String(describing: h.recorder.closed.first))")
            return
        }
    }

    @Test("A body larger than max_message_size closes the connection (framing) before it is read")
    func oversizedBody() throws {
        let h = StreamHarness()
        let ch = try h.connect()
        let text = String(decoding: options(1), as: UTF8.self).replacingOccurrences(of: "Content-Length: 0", with: "Content-Length: \(h.settings.limits.maxBodyBytes + 1)")
        try ch.send(Array(text.utf8))
        #expect(!ch.isActive)
        guard case .framing? = h.recorder.closed.first else {
            Issue.record("close reason \(String(describing: h.recorder.closed.first))")
            return
        }
        #expect(h.recorder.received.isEmpty)
    }

    @Test("A header section that never ends closes the connection (framing) once it passes the header limit")
    func oversizedHeader() throws {
        let h = StreamHarness()
        let ch = try h.connect()
        try ch.send(Array("OPTIONS sip:127.0.0.1 SIP/2.0\r\n".utf8))
        let line = Array("X-Filler: \(String(repeating: "a", count: 1000))\r\n".utf8)
        var sent = 0
        while ch.isActive && sent <= h.settings.limits.maxHeaderBytes + 2 * line.count {
            try ch.send(line)
            sent += line.count
        }
        #expect(!ch.isActive)
        #expect(sent <= h.settings.limits.maxHeaderBytes + line.count)
        guard case .framing? = h.recorder.closed.first else {
            Issue.record("close reason \(String(describing: h.recorder.closed.first))")
            return
        }
    }

    // MARK: Timeouts (the loop's virtual clock)

    @Test("tcp_msg_read_timeout: a message begun and not finished in time closes the connection")
    func messageReadTimeout() throws {
        let h = StreamHarness { $0.messageReadTimeout = .seconds(5) }
        let ch = try h.connect()
        try ch.send(Array(options(1).prefix(30)))
        h.loop.advanceTime(by: .seconds(4))
        #expect(ch.isActive)
        // More octets do not extend the deadline of the same message.
        try ch.send(Array(options(1).dropFirst(30).prefix(10)))
        h.loop.advanceTime(by: .seconds(1))
        #expect(!ch.isActive)
        #expect(h.recorder.closed == [.messageReadTimeout(5)])
        #expect(h.counters.messageReadTimeouts == 1)
        #expect(h.recorder.received.isEmpty)
    }

    @Test("tcp_msg_read_timeout: messages completed in time never close; a later partial one gets its own full period")
    func messageReadTimeoutRearmed() throws {
        let h = StreamHarness { $0.messageReadTimeout = .seconds(5) }
        let ch = try h.connect()
        let first = options(1), second = options(2)
        try ch.send(Array(first.prefix(30)))
        h.loop.advanceTime(by: .seconds(3))
        try ch.send(Array(first.dropFirst(30)) + Array(second.prefix(30)))
        #expect(h.recorder.received.count == 1)
        // The first timer fires at 5 s: its message completed, so the
        // second (begun at 3 s) is given a new period, not closed.
        h.loop.advanceTime(by: .seconds(2))
        #expect(ch.isActive)
        h.loop.advanceTime(by: .seconds(4))
        #expect(ch.isActive)
        try ch.send(Array(second.dropFirst(30)))
        #expect(h.recorder.received.count == 2)
        h.loop.advanceTime(by: .seconds(20))
        #expect(h.counters.messageReadTimeouts == 0)
        // Keep-alives alone never count as a message begun.
        try ch.send(Array("\r\n".utf8))
        h.loop.advanceTime(by: .seconds(6))
        #expect(h.counters.messageReadTimeouts == 0)
    }

    @Test("tcp_connection_lifetime: idle connections close; any read or write keeps one open")
    func idle() throws {
        let h = StreamHarness { $0.idleLifetime = .seconds(10) }
        let ch = try h.connect()
        h.loop.advanceTime(by: .seconds(9))
        #expect(ch.isActive)
        try ch.send(Array("\r\n\r\n".utf8))   // a read (and the pong, a write)
        h.loop.advanceTime(by: .seconds(9))
        #expect(ch.isActive)
        h.loop.advanceTime(by: .seconds(1))
        #expect(!ch.isActive)
        #expect(h.recorder.closed == [.idle])
    }

    @Test("tls_handshake_timeout: a TLS connection whose handshake does not complete in time closes")
    func handshakeTimeout() throws {
        let h = StreamHarness(proto: .tls) { $0.handshakeTimeout = .seconds(3) }
        let ch = try h.connect()
        #expect(h.transport.handshakesInProgress == 1)
        h.loop.advanceTime(by: .milliseconds(2_999))
        #expect(ch.isActive)
        h.loop.advanceTime(by: .milliseconds(1))
        #expect(!ch.isActive)
        #expect(h.recorder.closed == [.handshakeTimeout(3)])
        #expect(h.counters.tlsHandshakeTimeouts == 1)
        #expect(h.transport.handshakesInProgress == 0)
    }

    @Test("A TLS handshake completed in time stops the handshake timer and leaves the handshake pool")
    func handshakeCompleted() throws {
        let h = StreamHarness(proto: .tls) { $0.handshakeTimeout = .seconds(3) }
        let ch = try h.connect()
        ch.pipeline.syncOperations.fireUserInboundEventTriggered(TLSUserEvent.handshakeCompleted(negotiatedProtocol: nil))
        h.loop.advanceTime(by: .seconds(10))
        #expect(ch.isActive)
        #expect(h.counters.tlsHandshakesCompleted == 1)
        #expect(h.counters.tlsHandshakeTimeouts == 0)
        #expect(h.transport.handshakesInProgress == 0)
        #expect(h.recorder.closed.isEmpty)
    }

    @Test("tls_max_connections counts connections whose handshake is done: one past it is closed with a limit reason")
    func maxConnectionsAfterHandshake() throws {
        let h = StreamHarness(proto: .tls) { $0.maxConnections = 1 }
        let a = try h.connect(peer: "192.0.2.10")
        let b = try h.connect(peer: "192.0.2.11")
        a.pipeline.syncOperations.fireUserInboundEventTriggered(TLSUserEvent.handshakeCompleted(negotiatedProtocol: nil))
        b.pipeline.syncOperations.fireUserInboundEventTriggered(TLSUserEvent.handshakeCompleted(negotiatedProtocol: nil))
        #expect(a.isActive)
        #expect(!b.isActive)
        #expect(h.counters.poolRefusals == 1)
        guard case .limit? = h.recorder.closed.first else {
            Issue.record("close reason \(String(describing: h.recorder.closed.first))")
            return
        }
    }

    @Test("tcp_max_connections_per_ip refuses one connection too many from an address, not from another")
    func perAddressLimit() throws {
        let h = StreamHarness { $0.maxConnectionsPerIP = 1 }
        let a = try h.connect(peer: "192.0.2.10", port: 1000)
        let b = try h.connect(peer: "192.0.2.10", port: 1001)
        let c = try h.connect(peer: "192.0.2.20", port: 1000)
        #expect(a.isActive && !b.isActive && c.isActive)
        #expect(h.counters.perAddressRefusals == 1)
    }

    // MARK: Writing

    @Test("tcp_send_timeout: a connection that stays unwritable for the send timeout closes; reads stop meanwhile")
    func sendTimeout() throws {
        let h = StreamHarness { $0.sendTimeout = .seconds(4) }
        let ch = try h.connect()
        ch.isWritable = false
        ch.pipeline.syncOperations.fireChannelWritabilityChanged()
        ch.pipeline.syncOperations.read()
        #expect(h.counters.readPauses == 1)
        h.loop.advanceTime(by: .seconds(3))
        #expect(ch.isActive)
        h.loop.advanceTime(by: .seconds(1))
        #expect(!ch.isActive)
        guard case .sendTimeout? = h.recorder.closed.first else {
            Issue.record("close reason \(String(describing: h.recorder.closed.first))")
            return
        }
    }

    @Test("Writable again in time: the send timer stops and the connection stays")
    func sendTimeoutCancelled() throws {
        let h = StreamHarness { $0.sendTimeout = .seconds(4) }
        let ch = try h.connect()
        ch.isWritable = false
        ch.pipeline.syncOperations.fireChannelWritabilityChanged()
        h.loop.advanceTime(by: .seconds(3))
        ch.isWritable = true
        ch.pipeline.syncOperations.fireChannelWritabilityChanged()
        h.loop.advanceTime(by: .seconds(10))
        #expect(ch.isActive)
        #expect(h.recorder.closed.isEmpty)
    }

    @Test("tcp_conn_wq_max: a write past the bound while the peer does not read closes the connection")
    func writeQueueBound() throws {
        let h = StreamHarness { $0.maxQueuedBytes = 1_000 }
        let ch = try h.connect()
        ch.isWritable = false
        ch.pipeline.syncOperations.fireChannelWritabilityChanged()
        // (An EmbeddedChannel reports nothing buffered in a socket: what
        // counts here is what one write adds.)
        let ok = ch.writeAndFlush(ByteBuffer(repeating: 0x61, count: 600))
        #expect(ch.isActive)
        let tooMuch = ch.writeAndFlush(ByteBuffer(repeating: 0x62, count: 1_001))
        #expect(!ch.isActive)
        #expect(h.counters.queueLimitCloses == 1)
        #expect(h.counters.queuedBytes == 0)
        #expect(throws: (any Error).self) { try tooMuch.wait() }
        #expect(throws: Never.self) { try ok.wait() }
        guard case .writeQueue? = h.recorder.closed.first else {
            Issue.record("close reason \(String(describing: h.recorder.closed.first))")
            return
        }
    }
}

@Suite("RFC 3261 §18.2.2: a response whose connection is gone")
struct ReconnectDestinationTests {
    func request(via: String, proto: TransportProtocol) throws -> ReceivedMessage {
        let text = "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: \(via)\r\nMax-Forwards: 70\r\nFrom: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>\r\nCall-ID: r\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        let m = try SIPMessage.parse(Array(text.utf8), framing: .stream)
        return ReceivedMessage(message: m, source: try SocketAddress(ipAddress: "192.0.2.10", port: 40123),
                               listener: ListenSocket(proto: proto, host: "127.0.0.1", port: proto.defaultPort), proto: proto, connection: nil)
    }

    @Test("goes to the address it came from (received) and the sent-by port, not the old ephemeral port")
    func tcp() throws {
        let r = try request(via: "SIP/2.0/TCP client.example.com:5070;branch=z9hG4bK-1", proto: .tcp)
        let d = try #require(SIPTransport.reconnectDestination(for: r))
        #expect(d.proto == .tcp && d.host == "192.0.2.10" && d.port == 5070)
        #expect(d.tlsServerName == nil)
    }

    @Test("over TLS: the sent-by host is the name the certificate must prove; no sent-by port means 5061")
    func tls() throws {
        let r = try request(via: "SIP/2.0/TLS Client.Example.com;branch=z9hG4bK-2;rport", proto: .tls)
        let d = try #require(SIPTransport.reconnectDestination(for: r))
        #expect(d.proto == .tls && d.host == "192.0.2.10" && d.port == 5061)
        #expect(d.tlsServerName == "client.example.com")
    }
}
