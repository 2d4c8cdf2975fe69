import Foundation
import SIPConfig
import SIPProxy
import SIPTransport
import Testing

/// Replies echo every header back, so replies are as large as requests.
let echoScript = """
request_route { sl_send_reply("200", "OK"); exit; }
"""

@Suite("Timeouts and limits (seed §1.5.9)", .serialized)
struct TimeoutTests {
    @Test("tls_handshake_timeout closes a client that connects and says nothing")
    func handshakeTimeout() throws {
        let pki = try TestPKI()
        let proxy = try tlsProxy(pki, "tls_handshake_timeout=1", script: echoScript)
        defer { proxy.stop() }
        let r = Subprocess.run("python3", [Paths.peers + "/stalls.py", "silent", "--port", String(proxy.port(.tls)), "--limit", "6"], timeout: 15)
        #expect(r.out.hasPrefix("CLOSED"), "\(r.out)")
        // (When exactly: StreamHandlerTests, on a virtual clock.)
        #expect(proxy.closes.wait { $0 == .handshakeTimeout(1) }, "\(proxy.closes.reasons)")
        #expect(proxy.transport.counters.values.tlsHandshakeTimeouts == 1)
    }

    @Test("tls_send_timeout closes a connection whose peer stops reading")
    func sendTimeout() throws {
        let pki = try TestPKI()
        // A queue bound far above what the burst leaves queued: the timeout acts, not the bound.
        let proxy = try tlsProxy(pki, "tls_send_timeout=1\ntcp_conn_wq_max=8388608", script: """
        request_route { sl_send_reply("200", "OK \(String(repeating: "y", count: 4000))"); exit; }
        """)
        defer { proxy.stop() }
        // A burst of requests whose replies exceed what the sockets hold, then silence.
        let r = Subprocess.run("python3", [Paths.peers + "/stalls.py", "noread", "--tls", "--count", "1500", "--port", String(proxy.port(.tls)), "--limit", "15"], timeout: 25)
        #expect(r.out.hasPrefix("CLOSED"), "\(r.out)")
        #expect(proxy.closes.wait { if case .sendTimeout = $0 { true } else { false } }, "\(proxy.closes.reasons)")
        // While the replies waited, the connection was not read (back-pressure).
        #expect(proxy.transport.counters.values.readPauses >= 1, "\(proxy.transport.counters.values)")
    }

    @Test("the write queue is bounded: a peer that sends on but never reads is closed")
    func queueBound() throws {
        let pki = try TestPKI()
        let proxy = try tlsProxy(pki, "tls_send_timeout=60", script: """
        request_route { sl_send_reply("200", "OK \(String(repeating: "y", count: 4000))"); exit; }
        """)
        defer { proxy.stop() }
        let r = Subprocess.run("python3", [Paths.peers + "/stalls.py", "noread", "--tls", "--port", String(proxy.port(.tls)), "--limit", "20"], timeout: 30)
        #expect(r.out.hasPrefix("CLOSED"), "\(r.out)")
        #expect(proxy.closes.wait { if case .writeQueue = $0 { true } else { false } }, "\(proxy.closes.reasons)")
        #expect(proxy.transport.counters.values.queueLimitCloses >= 1, "\(proxy.transport.counters.values)")
    }

    @Test("tcp_connection_lifetime closes idle connections")
    func idle() throws {
        let proxy = try TestProxy("""
        listen=tcp:127.0.0.1:0
        tcp_connection_lifetime=1
        \(echoScript)
        """)
        defer { proxy.stop() }
        let r = Subprocess.run("python3", [Paths.peers + "/stalls.py", "silent", "--port", String(proxy.port(.tcp)), "--limit", "6"], timeout: 15)
        #expect(r.out.hasPrefix("CLOSED"), "\(r.out)")
        #expect(proxy.closes.wait { $0 == .idle }, "\(proxy.closes.reasons)")
    }

    @Test("tls_max_connections is enforced on connections whose handshake is done")
    func maxConnections() throws {
        let pki = try TestPKI()
        let proxy = try tlsProxy(pki, "tls_max_connections=1", script: echoScript)
        defer { proxy.stop() }
        // A connection whose handshake is done holds the one place (those
        // still in their handshake are counted by tls_max_handshakes).
        let first = try Background("python3", [Paths.peers + "/flood.py", "hold", "--tls", "--count", "1", "--stay", "10", "--port", String(proxy.port(.tls))])
        defer { first.stop() }
        #expect(first.wait(for: "HELD 1"), "\(first.lines)")
        let second = Subprocess.sipclient(["--proto", "tls", "--port", String(proxy.port(.tls)), "--options", "--wait", "2"])
        #expect(!second.out.contains("RESPONSE"), "\(second.out)")
        #expect(proxy.closes.wait { if case .limit = $0 { true } else { false } }, "\(proxy.closes.reasons)")
        #expect(proxy.transport.counters.values.poolRefusals >= 1, "\(proxy.transport.counters.values)")
    }

    @Test("a CRLF CRLF keep-alive is answered with CRLF")
    func keepAlive() throws {
        let proxy = try TestProxy("""
        listen=tcp:127.0.0.1:0
        \(echoScript)
        """)
        defer { proxy.stop() }
        let script = """
        import socket,sys
        s=socket.create_connection(("127.0.0.1",\(proxy.port(.tcp))));s.settimeout(3)
        s.sendall(b"\\r\\n\\r\\n");print(repr(s.recv(10)))
        """
        let r = Subprocess.run("python3", ["-c", script])
        #expect(r.out.trimmingCharacters(in: .whitespacesAndNewlines) == "b'\\r\\n'", "\(r.out) \(r.err)")
    }
}
