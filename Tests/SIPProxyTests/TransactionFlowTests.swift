import Foundation
import SIPConfig
@testable import SIPProxy
import SIPTransport
import Testing

/// A few flows of the transaction core through real sockets: what the
/// machines decide reaches the wire.
@Suite("Transaction core through real sockets", .serialized)
struct TransactionFlowTests {
    static let relayScript = """
    loadmodule "tm.so"
    loadmodule "sl.so"
    request_route { t_relay(); }
    """

    /// Writes a message with CRLF line ends to a temporary file.
    static func messageFile(_ text: String) throws -> String {
        let path = makeTempDir("msg") + "/m.sip"
        try text.replacingOccurrences(of: "\n", with: "\r\n").write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// A registrar and stateful proxy over UDP (lookup, record_route,
    /// t_relay, loose_route in dialog) with alice's phone registered; it
    /// answers calls with 200 for 15 s.
    static func registrarWithPhone() throws -> (TestProxy, Background) {
        let proxy = try TestProxy("""
        listen=udp:127.0.0.1:0
        alias="localhost"
        \(TestModules.registrar)
        loadmodule "rr.so"
        loadmodule "siputils.so"
        request_route {
            if (has_totag()) { if (loose_route()) { t_relay(); exit; } sl_send_reply("404", "Not here"); exit; }
            if (is_method("REGISTER")) { save("location"); exit; }
            if (!lookup("location")) { sl_send_reply("404", "Not Found"); exit; }
            record_route();
            t_relay();
        }
        """)
        do {
            let phone = try Background.ua(["phone", "--proto", "udp", "--port", String(proxy.port(.udp)), "--user", "alice", "--answer", "200", "--duration", "15"])
            #expect(phone.wait(for: "REGISTERED"), "\(phone.lines)")
            return (proxy, phone)
        } catch {
            proxy.stop()
            throw error
        }
    }

    @Test("a request the proxy sends to itself comes back unchanged: 482, not a storm until Max-Forwards runs out (§16.3 step 4)")
    func loopDetected() throws {
        let proxy = try TestProxy("listen=udp:127.0.0.1:0\n" + Self.relayScript)
        defer { proxy.stop() }
        let port = proxy.port(.udp)
        let file = try Self.messageFile("""
        OPTIONS sip:someone@127.0.0.1:\(port) SIP/2.0
        Via: SIP/2.0/UDP 127.0.0.1:{LOCAL_PORT};branch=z9hG4bK-loop1;rport
        Max-Forwards: 70
        From: <sip:a@localhost>;tag=1
        To: <sip:someone@localhost>
        Call-ID: loop-1
        CSeq: 1 OPTIONS
        Content-Length: 0


        """)
        let r = Subprocess.sipclient(["--proto", "udp", "--port", String(port), "--file", file, "--wait", "5", "--expect", "1"])
        #expect(r.out.contains("RESPONSE SIP/2.0 482"), "\(r.out) \(proxy.log.lines.suffix(10))")
    }

    @Test("parallel forking: a first branch whose send fails at once (sendto refuses it) does not answer the caller before the other branch rings and answers (§16.7)")
    func forkWithFailingFirstBranch() throws {
        let (proxy, phone) = try Self.registrarWithPhone()
        defer { phone.stop(); proxy.stop() }
        let port = proxy.port(.udp)
        // A second binding first in q order, at an IPv6 address while the
        // proxy listens on IPv4 only: the kernel refuses every datagram to
        // it at once (sendto on an IPv4 socket).
        let aor = try #require(proxy.location.all().first?.aor)
        var bindings = proxy.location.bindings(for: aor)
        var dead = try #require(bindings.first)
        dead.contact = "sip:alice@[::1]:5099"
        dead.receivedIP = "::1"
        dead.receivedPort = 5099
        dead.q = 1.0
        dead.callID = "dead-contact"
        bindings.insert(dead, at: 0)
        try proxy.location.replace(aor: aor, with: bindings)
        let errorsBefore = proxy.transport.counters.values.udpSendErrors
        let caller = try Background.ua(["call", "--proto", "udp", "--port", String(port), "--to", "alice", "--expect", "200", "--timeout", "10"])
        defer { caller.stop() }
        #expect(caller.finish(timeout: 20) == 0, "\(caller.lines) \(proxy.log.lines)")
        #expect(caller.lines.contains { $0.hasPrefix("CALL-OK") }, "\(caller.lines)")
        #expect(!caller.lines.contains { $0.hasPrefix("RESPONSE 5") }, "\(caller.lines)")
        #expect(phone.wait(for: "BYE-RECEIVED"), "\(phone.lines)")
        #expect(proxy.transport.counters.values.udpSendErrors > errorsBefore)
    }

    @Test("after a call, the INVITE transaction held in Accepted (RFC 6026, 32 s) keeps no context, response or request octets; the BYE's keeps only its last response")
    func heldTransactionsReleased() throws {
        let (proxy, phone) = try Self.registrarWithPhone()
        defer { phone.stop(); proxy.stop() }
        let port = proxy.port(.udp)
        let caller = try Background.ua(["call", "--proto", "udp", "--port", String(port), "--to", "alice", "--expect", "200", "--timeout", "10"])
        defer { caller.stop() }
        #expect(caller.finish(timeout: 20) == 0, "\(caller.lines) \(proxy.log.lines)")
        #expect(phone.wait(for: "BYE-RECEIVED"), "\(phone.lines)")
        // The caller ended after the 200 to its BYE came through the proxy.
        #expect(caller.lines.contains { $0.hasPrefix("BYE-OK") }, "\(caller.lines)")
        struct Held { var method: String; var context: Bool; var lastResponse: Bool; var octets: Int; var responses: Int }
        let held: [Held] = proxy.core.transactions.shards.flatMap { shard in
            shard.lock.withLock {
                shard.servers.values.map { t in
                    Held(method: t.request.message.method?.description ?? "", context: t.ctx != nil || t.replyRequest != nil,
                         lastResponse: t.lastResponse != nil,
                         octets: t.branches.reduce(0) { $0 + ($1.out?.bytes.count ?? 0) },
                         responses: t.branches.filter { $0.response != nil }.count)
                }
            }
        }
        let invite = try #require(held.first { $0.method == "INVITE" }, "\(held)")
        #expect(!invite.context && !invite.lastResponse && invite.octets == 0 && invite.responses == 0, "\(invite)")
        // The BYE came over UDP: its server side stays Completed (Timer J,
        // 32 s) to answer a retransmitted BYE with the same 200.
        let bye = try #require(held.first { $0.method == "BYE" }, "\(held)")
        #expect(!bye.context && bye.lastResponse && bye.octets == 0 && bye.responses == 0, "\(bye)")
    }

    @Test("a forged response carrying our Via that matches no transaction is dropped, and UDP service goes on")
    func unmatchedResponseDropped() throws {
        let proxy = try TestProxy("listen=udp:127.0.0.1:0\n" + Self.relayScript)
        defer { proxy.stop() }
        let port = proxy.port(.udp)
        // The second Via points back at the sender: were the response
        // forwarded, the client would receive it.
        let file = try Self.messageFile("""
        SIP/2.0 200 OK
        Via: SIP/2.0/UDP 127.0.0.1:\(port);branch=z9hG4bKs0aaaaaaaaaaaaabbbb
        Via: SIP/2.0/UDP 127.0.0.1:{LOCAL_PORT};branch=z9hG4bK-victim
        From: <sip:a@localhost>;tag=1
        To: <sip:b@localhost>;tag=2
        Call-ID: forged-1
        CSeq: 1 INVITE
        Content-Length: 0


        """)
        let r = Subprocess.sipclient(["--proto", "udp", "--port", String(port), "--file", file, "--wait", "1", "--expect", "1"])
        #expect(!r.out.contains("RESPONSE"), "\(r.out)")
        let ok = Subprocess.sipclient(["--proto", "udp", "--port", String(port), "--options", "--wait", "5"])
        #expect(ok.out.contains("RESPONSE SIP/2.0"), "\(ok.out)")
    }

    @Test("a request whose Route names only this proxy is routed by its Request-URI (the core removes our Route, §16.4)")
    func ownRouteRemoved() throws {
        let proxy = try TestProxy("listen=udp:127.0.0.1:0\n" + Self.relayScript)
        defer { proxy.stop() }
        let port = proxy.port(.udp)
        // The Request-URI is the client itself: with our Route taken off,
        // the request comes back to it (with our Via on top).
        let file = try Self.messageFile("""
        MESSAGE sip:me@127.0.0.1:{LOCAL_PORT} SIP/2.0
        Via: SIP/2.0/UDP 127.0.0.1:{LOCAL_PORT};branch=z9hG4bK-route1;rport
        Route: <sip:127.0.0.1:\(port);lr>
        Max-Forwards: 70
        From: <sip:a@localhost>;tag=1
        To: <sip:me@localhost>
        Call-ID: route-1
        CSeq: 1 MESSAGE
        Content-Length: 0


        """)
        let r = Subprocess.sipclient(["--proto", "udp", "--port", String(port), "--file", file, "--wait", "3", "--expect", "1"])
        #expect(r.out.contains("REQUEST MESSAGE sip:me@127.0.0.1"), "\(r.out) \(proxy.log.lines.suffix(10))")
    }

    @Test("a TLS next hop whose name cannot be a server name (a 300-octet host, maddr, transport=tls) gets 478 and the proxy stays up")
    func invalidServerName() throws {
        let pki = try TestPKI()
        let proxy = try defaultProxy(pki, script: "request_route { t_relay(); }")
        defer { proxy.stop() }
        let port = proxy.port(.udp)
        let host = String(repeating: "a", count: 300) + ".example.com"
        let file = try Self.messageFile("""
        OPTIONS sip:x@\(host);maddr=127.0.0.1;transport=tls SIP/2.0
        Via: SIP/2.0/UDP 127.0.0.1:{LOCAL_PORT};branch=z9hG4bK-sni1;rport
        Max-Forwards: 70
        From: <sip:a@localhost>;tag=1
        To: <sip:x@localhost>
        Call-ID: sni-1
        CSeq: 1 OPTIONS
        Content-Length: 0


        """)
        let r = Subprocess.sipclient(["--proto", "udp", "--port", String(port), "--file", file, "--wait", "5", "--expect", "1"])
        #expect(r.out.contains("RESPONSE SIP/2.0 478"), "\(r.out) \(proxy.log.lines.suffix(5))")
        let again = Subprocess.sipclient(["--proto", "udp", "--port", String(port), "--options", "--wait", "5"])
        #expect(again.out.contains("RESPONSE SIP/2.0"), "\(again.out)")
    }

    @Test("server names: host names of at most 253 octets with labels of 1-63 letters, digits and hyphens")
    func serverNames() {
        #expect(SIPTransport.isValidServerName("pbx.example.com"))
        #expect(SIPTransport.isValidServerName("pbx.example.com."))
        #expect(SIPTransport.isValidServerName("a-b.c"))
        #expect(!SIPTransport.isValidServerName(String(repeating: "a", count: 64) + ".com"))
        #expect(!SIPTransport.isValidServerName(String(repeating: "a.", count: 130) + "com"))
        #expect(!SIPTransport.isValidServerName("-a.com"))
        #expect(!SIPTransport.isValidServerName("a..com"))
        #expect(!SIPTransport.isValidServerName("a_b.com"))
        #expect(!SIPTransport.isValidServerName(""))
    }
}
