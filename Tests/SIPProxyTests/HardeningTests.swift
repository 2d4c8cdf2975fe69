import Foundation
import Logging
import NIOCore
import SIPConfig
import SIPProxy
import SIPTransport
import Testing

/// Waits (bounded) until `condition` holds; returns whether it did.
func eventually(_ timeout: TimeInterval = 10, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if condition() { return true }
        usleep(20_000)
    }
    return condition()
}

@Suite("Hardening: the transport under attack (issue 15)", .serialized)
struct HardeningTests {
    /// A response whose top Via is the proxy's (a branch of a request it
    /// forwarded statelessly, so it goes on by its Via) and whose next Via names a
    /// destination `sendto` refuses (port 0: EINVAL on Linux), so the
    /// stateless forward fails on the UDP listener's socket.
    static func forgedResponse(proxyPort: UInt16, n: Int) -> String {
        "SIP/2.0 200 OK\r\n"
            + "Via: SIP/2.0/UDP 127.0.0.1:\(proxyPort);branch=z9hG4bKf0aaaaaaaaaaaaa-forged\(n)\r\n"
            + "Via: SIP/2.0/UDP 127.0.0.1:5060;rport=0;branch=z9hG4bK-victim\(n)\r\n"
            + "From: <sip:a@example.com>;tag=f\(n)\r\nTo: <sip:b@example.com>;tag=t\(n)\r\n"
            + "Call-ID: forged-\(n)@example.com\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    }

    @Test("send errors fail one datagram and are counted; the UDP listener keeps answering")
    func udpSendErrorsKeepListener() throws {
        let proxy = try TestProxy("""
        listen=udp:127.0.0.1:0
        request_route { sl_send_reply("200", "Alive"); exit; }
        """)
        defer { proxy.stop() }
        let port = proxy.port(.udp)
        let dir = makeTempDir("forged")
        var files: [String] = []
        for n in 0..<3 {
            let f = dir + "/forged\(n).sip"
            try HardeningTests.forgedResponse(proxyPort: port, n: n).write(toFile: f, atomically: true, encoding: .utf8)
            files.append(f)
        }
        var args = ["--proto", "udp", "--port", String(port), "--wait", "0.3"]
        for f in files { args += ["--file", f] }
        _ = Subprocess.sipclient(args)
        #expect(eventually { proxy.transport.counters.values.udpSendErrors >= 3 }, "\(proxy.transport.counters.values)")
        // The listener is still open and answers.
        let r = Subprocess.sipclient(["--proto", "udp", "--port", String(port), "--options", "--wait", "2"])
        #expect(r.out.contains("RESPONSE SIP/2.0 200 Alive"), "\(r.out) \(r.err)")
    }

    @Test("sendDirect: one sendto on the UDP listener's socket from any thread, to address literals only; none once the transport shuts down")
    func sendDirect() throws {
        let proxy = try TestProxy("""
        children=1
        listen=udp:127.0.0.1:0
        request_route { drop; }
        """)
        defer { proxy.stop() }
        // A peer socket to receive on.
        let peer = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(peer) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(peer, $0, len) } }
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(peer, $0, &len) } }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(peer, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let port = UInt16(bigEndian: addr.sin_port)
        let bytes = Array("OPTIONS sip:x@127.0.0.1 SIP/2.0\r\n\r\n".utf8)
        let transport = proxy.transport
        let toPeer = Destination(proto: .udp, host: "127.0.0.1", port: port)
        func outcome(_ d: Destination) -> String {
            switch transport.sendDirect(bytes, to: d) {
            case .sent: return "sent"
            case .failed: return "failed"
            case .notApplicable: return "full path"
            }
        }
        func received() -> [UInt8] {
            var buffer = [UInt8](repeating: 0, count: 2048)
            let n = recv(peer, &buffer, buffer.count, 0)
            return Array(buffer.prefix(max(0, n)))
        }
        // From this thread (no event loop) and from a loop.
        #expect(outcome(toPeer) == "sent")
        #expect(received() == bytes)
        let onLoop = try transport.group.next().submit { [outcome] in outcome(toPeer) }.wait()
        #expect(onLoop == "sent")
        #expect(received() == bytes)
        // A name to resolve, a stream: the full path.
        #expect(outcome(Destination(proto: .udp, host: "localhost", port: port)) == "full path")
        #expect(outcome(Destination(proto: .tcp, host: "127.0.0.1", port: port)) == "full path")
        // Shut down: nothing more goes out this way.
        transport.shutdown()
        #expect(outcome(toPeer) == "full path")
    }

    @Test("no other socket can bind the UDP listener's port (no SO_REUSEADDR sharing)")
    func udpPortNotShared() throws {
        let proxy = try TestProxy("""
        listen=udp:127.0.0.1:0
        request_route { sl_send_reply("200", "Alive"); exit; }
        """)
        defer { proxy.stop() }
        let script = """
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", \(proxy.port(.udp))))
            print("BOUND")
        except OSError as e:
            print("REFUSED", e.errno)
        """
        let r = Subprocess.run("python3", ["-c", script])
        #expect(r.out.hasPrefix("REFUSED"), "\(r.out) \(r.err)")
    }

    static func flood(_ args: [String], timeout: TimeInterval = 30) -> Subprocess.Result {
        Subprocess.run("python3", [Paths.peers + "/flood.py"] + args, timeout: timeout)
    }

    @Test("a TLS peer that streams keep-alives and never reads gets at most one pending pong; its queue stays within tcp_conn_wq_max")
    func keepAliveStreamer() throws {
        let pki = try TestPKI()
        let proxy = try tlsProxy(pki, "tls_send_timeout=2\ntcp_conn_wq_max=4096\nmax_message_size=4096", script: echoScript)
        defer { proxy.stop() }
        let limit = proxy.transport.connectionQueueLimit
        #expect(limit == 4096)
        let r = HardeningTests.flood(["pings", "--tls", "--port", String(proxy.port(.tls)), "--limit", "5"], timeout: 20)
        // Open while the queue holds (one pong per read at most), or closed by the send timeout.
        #expect(r.out.hasPrefix("CLOSED") || r.out.hasPrefix("STILL-OPEN"), "\(r.out) \(r.err)")
        let sent = Int(r.out.split(separator: " ").dropFirst().first.map { $0.trimmingCharacters(in: .whitespacesAndNewlines) } ?? "") ?? 0
        #expect(sent > 1_000_000, "\(r.out)")
        let v = proxy.transport.counters.values
        // Each ping was answered or skipped; a 16 KiB TLS record holds 4096
        // pings and gets at most one pong.
        #expect(v.pongsSkipped > 0 && v.pongsSent * 100 <= v.pongsSkipped, "\(v)")
        #expect(v.peakConnectionQueue <= limit, "\(v)")
        #expect(eventually { proxy.transport.counters.values.queuedBytes == 0 }, "\(proxy.transport.counters.values)")
        #expect(eventually { proxy.transport.connectionCount(.tls) == 0 })
    }

    @Test("a TCP peer that pipelines requests and never reads stays within tcp_conn_wq_max and is closed")
    func pipeliner() throws {
        let proxy = try TestProxy("""
        listen=tcp:127.0.0.1:0
        tcp_send_timeout=2
        tcp_conn_wq_max=8192
        max_message_size=8192
        request_route { sl_send_reply("200", "OK \(String(repeating: "y", count: 2000))"); exit; }
        """)
        defer { proxy.stop() }
        let limit = proxy.transport.connectionQueueLimit
        let r = Subprocess.run("python3", [Paths.peers + "/stalls.py", "noread", "--port", String(proxy.port(.tcp)), "--limit", "25"], timeout: 40)
        #expect(r.out.hasPrefix("CLOSED"), "\(r.out) \(r.err)")
        let v = proxy.transport.counters.values
        #expect(v.peakConnectionQueue <= limit + 8192, "\(v)")
        #expect(v.peakQueuedBytes <= proxy.config.core.tcpWriteQueueMax, "\(v)")
        #expect(eventually { proxy.transport.counters.values.queuedBytes == 0 }, "\(proxy.transport.counters.values)")
    }

    @Test("tcp_wq_max bounds the queues of all connections together")
    func globalQueueBound() throws {
        // Each connection may queue 64 KiB, all together 64 KiB: two peers
        // that do not read cannot both fill their queues.
        let proxy = try TestProxy("""
        listen=tcp:127.0.0.1:0
        tcp_send_timeout=30
        tcp_conn_wq_max=65536
        tcp_wq_max=65536
        request_route { sl_send_reply("200", "OK \(String(repeating: "y", count: 3000))"); exit; }
        """)
        defer { proxy.stop() }
        let port = String(proxy.port(.tcp))
        let a = try Background("python3", [Paths.peers + "/stalls.py", "noread", "--port", port, "--limit", "20"])
        let b = try Background("python3", [Paths.peers + "/stalls.py", "noread", "--port", port, "--limit", "20"])
        defer { a.stop(); b.stop() }
        #expect(a.wait(for: "CLOSED", timeout: 25) || b.wait(for: "CLOSED", timeout: 1), "\(a.lines) \(b.lines)")
        let v = proxy.transport.counters.values
        #expect(v.globalQueueLimitCloses + v.queueLimitCloses >= 1, "\(v)")
        #expect(v.peakQueuedBytes <= 65536, "\(v)")
    }

    @Test("one address holding its connection limit does not stop a second address")
    func perAddressLimit() throws {
        let proxy = try TestProxy("""
        listen=tcp:127.0.0.1:0
        tcp_max_connections_per_ip=4
        \(echoScript)
        """)
        defer { proxy.stop() }
        let r = HardeningTests.flood(["hold", "--port", String(proxy.port(.tcp)), "--count", "10", "--source", "127.0.0.1", "--probe-source", "127.0.0.2"])
        #expect(r.lines.first == "HELD 4", "\(r.out) \(r.err)")
        #expect(r.lines.contains("PROBE 200"), "\(r.out) \(r.err)")
        #expect(proxy.transport.counters.values.perAddressRefusals >= 6, "\(proxy.transport.counters.values)")
        // The same address is still refused while it holds its limit.
        let again = HardeningTests.flood(["hold", "--port", String(proxy.port(.tcp)), "--count", "4", "--source", "127.0.0.1", "--probe-source", "127.0.0.1"])
        #expect(again.lines.contains { $0.hasPrefix("PROBE-FAILED") }, "\(again.out)")
    }

    @Test("a flood of handshakes that never start leaves room for a real TLS client")
    func handshakeFlood() throws {
        let pki = try TestPKI()
        let proxy = try tlsProxy(pki, "tls_handshake_timeout=60\ntls_max_handshakes=4\ntcp_max_connections_per_ip=100", script: echoScript)
        defer { proxy.stop() }
        let r = HardeningTests.flood(["hold", "--port", String(proxy.port(.tls)), "--count", "20", "--probe-source", "127.0.0.1", "--probe-tls"])
        let held = r.lines.filter { $0.hasPrefix("HELD") }
        #expect(held.first == "HELD 4", "\(r.out) \(r.err)")
        #expect(r.lines.contains("PROBE 200"), "\(r.out) \(r.err)")
        #expect(proxy.transport.counters.values.handshakeEvictions >= 16, "\(proxy.transport.counters.values)")
        #expect(proxy.transport.handshakesInProgress <= 4)
    }

    @Test("a message whose body never arrives is closed after tcp_msg_read_timeout")
    func messageReadTimeout() throws {
        let proxy = try TestProxy("""
        listen=tcp:127.0.0.1:0
        tcp_msg_read_timeout=1
        \(echoScript)
        """)
        defer { proxy.stop() }
        let r = HardeningTests.flood(["partial", "--port", String(proxy.port(.tcp)), "--limit", "10"])
        #expect(r.out.hasPrefix("CLOSED"), "\(r.out) \(r.err)")
        #expect(proxy.transport.counters.values.messageReadTimeouts == 1)
        // A single CRLF keep-alive is no message begun: it stays open.
        let crlf = HardeningTests.flood(["partial", "--crlf", "--port", String(proxy.port(.tcp)), "--limit", "3"])
        #expect(crlf.out.hasPrefix("STILL-OPEN"), "\(crlf.out) \(crlf.err)")
        #expect(proxy.transport.counters.values.messageReadTimeouts == 1)
    }

    @Test("outbound connections have their own pool: a full inbound pool does not stop forwarding")
    func outboundPool() throws {
        let target = try TestProxy("""
        listen=tcp:127.0.0.1:0
        request_route { sl_send_reply("200", "Reached"); exit; }
        """)
        defer { target.stop() }
        let proxy = try TestProxy("""
        listen=udp:127.0.0.1:0
        listen=tcp:127.0.0.1:0
        tcp_max_connections=1
        request_route { forward_tcp("127.0.0.1", \(target.port(.tcp))); exit; }
        """)
        defer { proxy.stop() }
        let holder = try Background("python3", [Paths.peers + "/flood.py", "hold", "--port", String(proxy.port(.tcp)), "--count", "1", "--stay", "10"])
        defer { holder.stop() }
        #expect(holder.wait(for: "HELD 1"), "\(holder.lines)")
        let r = Subprocess.sipclient(["--proto", "udp", "--port", String(proxy.port(.udp)), "--options", "--wait", "3"])
        #expect(r.out.contains("RESPONSE SIP/2.0 200 Reached"), "\(r.out) \(proxy.log.lines.suffix(5))")
    }

    @Test("tcp_max_outbound_connections bounds the connections the proxy opens")
    func outboundLimit() throws {
        let a = try TestProxy("""
        listen=tcp:127.0.0.1:0
        request_route { sl_send_reply("200", "Reached A"); exit; }
        """)
        defer { a.stop() }
        let b = try TestProxy("""
        listen=tcp:127.0.0.1:0
        request_route { sl_send_reply("200", "Reached B"); exit; }
        """)
        defer { b.stop() }
        let proxy = try TestProxy("""
        listen=udp:127.0.0.1:0
        listen=tcp:127.0.0.1:0
        tcp_max_outbound_connections=1
        request_route {
            if ($rU == "a") { forward_tcp("127.0.0.1", \(a.port(.tcp))); exit; }
            forward_tcp("127.0.0.1", \(b.port(.tcp)));
            exit;
        }
        """)
        defer { proxy.stop() }
        let msg = { (user: String) -> String in
            "OPTIONS sip:\(user)@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-\(user)\(UUID().uuidString.prefix(8));rport\r\n"
                + "Max-Forwards: 70\r\nFrom: <sip:p@localhost>;tag=1\r\nTo: <sip:\(user)@127.0.0.1>\r\nCall-ID: \(UUID().uuidString)\r\n"
                + "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        }
        let dir = makeTempDir("outbound")
        try msg("a").write(toFile: dir + "/a.sip", atomically: true, encoding: .utf8)
        try msg("b").write(toFile: dir + "/b.sip", atomically: true, encoding: .utf8)
        let first = Subprocess.sipclient(["--proto", "udp", "--port", String(proxy.port(.udp)), "--file", dir + "/a.sip", "--wait", "3"])
        #expect(first.out.contains("RESPONSE SIP/2.0 200 Reached A"), "\(first.out)")
        // The one outbound place is taken by the connection to A.
        let second = Subprocess.sipclient(["--proto", "udp", "--port", String(proxy.port(.udp)), "--file", dir + "/b.sip", "--wait", "2"])
        #expect(!second.out.contains("Reached B"), "\(second.out)")
        #expect(proxy.transport.counters.values.poolRefusals >= 1, "\(proxy.transport.counters.values)")
    }

    @Test("RLIMIT_NOFILE: raised when the limits need it, a clear error when the hard limit is too low")
    func descriptorLimit() throws {
        let (soft, hard) = DescriptorLimit.current
        let logger = Logger(label: "test")
        try DescriptorLimit.raise(toFit: soft, logger: logger)
        #expect(DescriptorLimit.current.soft == soft)
        if hard < Int.max {
            #expect(throws: DescriptorLimit.TooLow.self) { try DescriptorLimit.raise(toFit: hard + 1, logger: logger) }
        }
        #expect(DescriptorLimit.current.soft >= soft)
    }
}
