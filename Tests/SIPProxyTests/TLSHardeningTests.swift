import Foundation
import NIOCore
import SIPConfig
import SIPTLS
@testable import SIPTransport
import Testing

/// Issue 15, TLS: a stale CRL (warn, or fail closed with tls_crl_stale=fail)
/// and a top-level tls_server_name refused by the config instead of a trap.
@Suite("TLS hardening: stale CRL, tls_server_name at the top level (issue 15)", .serialized)
struct TLSHardeningTests {
    func settings(_ pki: TestPKI, crl: String, extra: String = "") throws -> TLSSettings {
        try pki.issue("server", cn: "localhost", dns: ["localhost"])
        let c = try ConfigLoader.load(text: """
        listen=tls:127.0.0.1:5061
        tls_certificate="\(pki.dir)/server.pem"
        tls_private_key="\(pki.dir)/server.key"
        tls_ca_list="\(pki.caFile)"
        tls_verify=1
        tls_crl="\(crl)"
        \(extra)
        request_route { exit; }
        """)
        return c.tls
    }

    @Test("a CRL past its nextUpdate: a warning at load by default; with tls_crl_stale=fail the load fails and peers are refused")
    func staleCRL() throws {
        let pki = try TestPKI()
        let (revoked, _) = try pki.issue("phone1")
        let crl = try CRLTests.revoke(pki, revoked)   // nextUpdate: 30 days from now
        let list = try RevocationList.load(crl, domain: nil)
        let next = try #require(list.nextUpdate)
        #expect(next > Date().addingTimeInterval(29 * 86_400) && next < Date().addingTimeInterval(31 * 86_400), "\(next)")
        #expect(!list.isStale() && list.isStale(now: Date().addingTimeInterval(31 * 86_400)))

        // Fresh: no warning about it, nothing refused.
        let warn = try settings(pki, crl: crl)
        let fresh = try TLSDomainTable.build(warn)
        #expect(!fresh.warnings.contains { $0.contains("tls_crl") }, "\(fresh.warnings)")
        // 40 days on (every certificate still valid): stale.
        let later = Date().addingTimeInterval(40 * 86_400)
        let stale = try TLSDomainTable.build(warn, now: later)
        #expect(stale.warnings.contains { $0.contains("tls_crl") && $0.contains("stale") }, "\(stale.warnings)")
        #expect(!stale.defaultServer.refusesForStaleCRL(now: later))

        let failSettings = try settings(pki, crl: crl, extra: "tls_crl_stale=fail")
        #expect(failSettings.crlStaleFails)
        #expect(throws: TLSSetupErrors.self) { _ = try TLSDomainTable.build(failSettings, now: later) }
        let failing = try TLSDomainTable.build(failSettings)
        #expect(!failing.defaultServer.refusesForStaleCRL())
        // Loaded while fresh, then stale while running: peer certificates are refused.
        #expect(failing.defaultServer.refusesForStaleCRL(now: later))
    }

    @Test("tls_crl_stale takes warn or fail")
    func crlStaleValues() throws {
        let route = "request_route { exit; }"
        #expect(try !ConfigLoader.load(text: route).tls.crlStaleFails)
        #expect(try !ConfigLoader.load(text: "tls_crl_stale=warn\n" + route).tls.crlStaleFails)
        #expect(throws: ConfigErrors.self) { _ = try ConfigLoader.load(text: "tls_crl_stale=maybe\n" + route) }
    }

    @Test("RFC 5923: an inbound TLS connection carries a request only for a name its verified certificate proves")
    func inboundReuse() throws {
        let pki = try TestPKI()
        let (cert, _) = try pki.issue("peer", cn: "a.example.com", dns: ["a.example.com"], ips: ["192.0.2.5"])
        let pem = try String(contentsOfFile: cert, encoding: .utf8)
        let body = pem.split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined()
        let der = try #require(Data(base64Encoded: body))
        var tls = TLSSessionInfo()
        tls.peerCertificateDER = Array(der)
        tls.peerVerified = true
        #expect(SIPTransport.inboundIdentityFits(tls, name: "a.example.com", allowWildcards: false))
        #expect(SIPTransport.inboundIdentityFits(tls, name: "A.Example.COM", allowWildcards: false))
        #expect(SIPTransport.inboundIdentityFits(tls, name: "192.0.2.5", allowWildcards: false))
        // Another name at the same address: a new connection is made instead.
        #expect(!SIPTransport.inboundIdentityFits(tls, name: "b.example.com", allowWildcards: false))
        #expect(!SIPTransport.inboundIdentityFits(tls, name: nil, allowWildcards: false))
        // A certificate that was not verified proves nothing; nor does a connection without one.
        tls.peerVerified = false
        #expect(!SIPTransport.inboundIdentityFits(tls, name: "a.example.com", allowWildcards: false))
        #expect(!SIPTransport.inboundIdentityFits(nil, name: "a.example.com", allowWildcards: false))
    }

    /// A MESSAGE for `uri` sent to the proxy over UDP; the client's output.
    func message(_ uri: String, proxy: TestProxy) -> Subprocess.Result {
        let dir = makeTempDir("reuse")
        let msg = "MESSAGE \(uri) SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-\(UUID().uuidString.prefix(8));rport\r\nMax-Forwards: 70\r\nFrom: <sip:t@test>;tag=1\r\nTo: <\(uri)>\r\nCall-ID: \(UUID().uuidString)\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
        try? msg.write(toFile: dir + "/m.sip", atomically: true, encoding: .utf8)
        return Subprocess.sipclient(["--proto", "udp", "--port", String(proxy.port(.udp)), "--file", dir + "/m.sip", "--wait", "6"])
    }

    /// The peer's connection a request for `user` arrived on (C: the one the
    /// peer opened to the proxy; L1, L2, ...: ones the proxy opened to it).
    func arrival(of user: String, at peer: Background) -> String? {
        guard peer.wait(for: " MESSAGE sip:\(user)@", timeout: 5) else { return nil }
        let line = peer.lines.first { $0.hasPrefix("REQUEST ") && $0.contains(" MESSAGE sip:\(user)@") }
        return line.map { String($0.split(separator: " ")[1]) }
    }

    /// A proxy that relays by Request-URI over verified TLS (every name is
    /// 127.0.0.1), and Tests/Peers/reusepeer.py on one port that both
    /// connected to the proxy (certificate for a.example.com) and listens
    /// (certificate for b.example.com); ready once its OPTIONS was answered.
    func reuseSetup() throws -> (TestProxy, Background, UInt16) {
        let pki = try TestPKI()
        try pki.issue("server", cn: "proxy.test", dns: ["proxy.test"], ips: ["127.0.0.1"])
        let a = try pki.issue("a", cn: "a.example.com", dns: ["a.example.com"])
        let b = try pki.issue("b", cn: "b.example.com", dns: ["b.example.com"])
        let proxy = try TestProxy("""
        listen=udp:127.0.0.1:0
        listen=tls:127.0.0.1:0
        dns_hosts_file="hosts"
        tls_certificate="\(pki.dir)/server.pem"
        tls_private_key="\(pki.dir)/server.key"
        tls_ca_list="\(pki.caFile)"
        tls_verify=1
        tls_require_certificate=1
        tls_client_domain { tls_verify=1
         tls_verify_hostname=yes }
        request_route {
            if (is_method("OPTIONS")) { sl_send_reply("200", "OK"); exit; }
            if (!t_relay()) { sl_reply_error(); }
            exit;
        }
        """, files: ["hosts": "127.0.0.1 a.example.com b.example.com c.example.com\n"])
        let port = freePort()
        do {
            let peer = try Background("python3", [Paths.peers + "/reusepeer.py", "--port", String(port), "--proxy-port", String(proxy.port(.tls)),
                                                  "--cert", b.0, "--key", b.1, "--client-cert", a.0, "--client-key", a.1, "--ca", pki.caFile])
            return (proxy, peer, port)
        } catch {
            proxy.stop()
            throw error
        }
    }

    @Test("RFC 5923 end to end: a connection from a.example.com's address carries requests for a.example.com only; b.example.com at that same address gets a new, verified connection")
    func inboundReuseEndToEnd() throws {
        let (proxy, peer, port) = try reuseSetup()
        defer { proxy.stop() }
        defer { peer.stop() }
        try #require(peer.wait(for: "READY", timeout: 10), "\(peer.lines)")
        #expect(peer.lines.contains("RESPONSE C SIP/2.0 200 OK"), "\(peer.lines)")
        // The proxy knows the peer's connection, from 127.0.0.1:port, verified as a.example.com.
        let inbound = proxy.transport.openConnections.filter { !$0.outbound && $0.proto == .tls && $0.remote.port == Int(port) }
        #expect(inbound.count == 1 && inbound.first?.tls?.peerVerified == true, "\(inbound)")

        // b.example.com:port is the same address, but a's certificate does
        // not name b: a new connection, whose certificate names b.
        let r1 = message("sip:b1@b.example.com:\(port);transport=tls", proxy: proxy)
        #expect(r1.out.contains("RESPONSE SIP/2.0 200 OK"), "\(r1.out) \(peer.lines) \(proxy.log.lines.suffix(6))")
        #expect(arrival(of: "b1", at: peer) == "L1", "\(peer.lines)")
        #expect(peer.lines.contains("ACCEPTED L1 sni=b.example.com"), "\(peer.lines)")

        // a.example.com:port: the peer proved to be a, so its own connection is used.
        let r2 = message("sip:a1@a.example.com:\(port);transport=tls", proxy: proxy)
        #expect(r2.out.contains("RESPONSE SIP/2.0 200 OK"), "\(r2.out) \(peer.lines)")
        #expect(arrival(of: "a1", at: peer) == "C", "\(peer.lines)")

        // b again: the verified connection made for b is reused.
        let r3 = message("sip:b2@b.example.com:\(port);transport=tls", proxy: proxy)
        #expect(r3.out.contains("RESPONSE SIP/2.0 200 OK"), "\(r3.out) \(peer.lines)")
        #expect(arrival(of: "b2", at: peer) == "L1", "\(peer.lines)")

        // c.example.com:port: neither a's connection nor the one made for b
        // proves c; a new connection is tried and refused (the listener's
        // certificate names b), and the request goes nowhere.
        let r4 = message("sip:c1@c.example.com:\(port);transport=tls", proxy: proxy)
        #expect(!r4.out.contains("200 OK") && r4.out.contains("RESPONSE SIP/2.0 5"), "\(r4.out)")
        #expect(proxy.closes.wait { if case .verificationFailed = $0 { true } else { false } }, "\(proxy.closes.reasons)")
        #expect(proxy.transport.counters.values.tlsVerificationRefusals == 1)
        #expect(!peer.lines.contains { $0.contains(" MESSAGE sip:c1@") }, "\(peer.lines)")

        // In all: one connection for b accepted by the peer (the refused c
        // attempt aside), and the peer's own connection still open.
        #expect(peer.lines.filter { $0.hasPrefix("ACCEPTED") && $0.contains("sni=b.example.com") }.count == 1, "\(peer.lines)")
        #expect(!peer.lines.contains("CLOSED C"), "\(peer.lines)")
    }

    @Test("a refused connection to one name ends only the requests sent over it, not one in flight to another name at the same address")
    func refusedConnectionIsolated() throws {
        let (proxy, peer, port) = try reuseSetup()
        defer { proxy.stop() }
        defer { peer.stop() }
        try #require(peer.wait(for: "READY", timeout: 10), "\(peer.lines)")
        // A MESSAGE for b that the peer holds unanswered (on the new connection for b).
        let dir = makeTempDir("held")
        let uri = "sip:held@b.example.com:\(port);transport=tls"
        try "MESSAGE \(uri) SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-\(UUID().uuidString.prefix(8));rport\r\nMax-Forwards: 70\r\nFrom: <sip:t@test>;tag=1\r\nTo: <\(uri)>\r\nCall-ID: \(UUID().uuidString)\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
            .write(toFile: dir + "/m.sip", atomically: true, encoding: .utf8)
        let held = try Background("python3", [Paths.peers + "/sipclient.py", "--proto", "udp", "--port", String(proxy.port(.udp)), "--file", dir + "/m.sip", "--wait", "15"])
        defer { held.stop() }
        try #require(peer.wait(for: "HELD L1 MESSAGE \(uri)", timeout: 10), "\(peer.lines)")
        // Meanwhile c at the same address: its connection is refused and closed.
        let r = message("sip:c1@c.example.com:\(port);transport=tls", proxy: proxy)
        #expect(!r.out.contains("200 OK") && r.out.contains("RESPONSE SIP/2.0 5"), "\(r.out)")
        #expect(proxy.closes.wait { if case .verificationFailed = $0 { true } else { false } }, "\(proxy.closes.reasons)")
        // The connection for b is untouched: the held request's answer, sent
        // now, is the one that goes up.
        kill(peer.process.processIdentifier, SIGUSR1)
        #expect(held.finish(timeout: 15) == 0)
        #expect(held.lines.contains("RESPONSE SIP/2.0 200 OK") && !held.lines.contains { $0.hasPrefix("RESPONSE SIP/2.0 5") }, "\(held.lines) \(peer.lines)")
        #expect(peer.lines.filter { $0.hasPrefix("ACCEPTED") && $0.contains("sni=b.example.com") }.count == 1, "\(peer.lines)")
    }

    @Test("a top-level tls_server_name is a config error naming where it belongs, not a trap at the first ClientHello without SNI")
    func topLevelServerName() throws {
        do {
            _ = try ConfigLoader.load(text: "listen=tls:127.0.0.1:5061\ntls_server_name=\"sip.example.com\"\nrequest_route { exit; }\n")
            Issue.record("a top-level tls_server_name was accepted")
        } catch {
            #expect(error.description.contains("tls_server_name") && error.description.contains("tls_server_domain"), "\(error)")
        }
        // In a domain it is an SNI domain, and the defaults stay.
        let c = try ConfigLoader.load(text: """
        listen=tls:127.0.0.1:5061
        tls_server_domain { tls_server_name="sip.example.com" }
        request_route { exit; }
        """)
        #expect(c.tls.defaultServer != nil && c.tls.domains.contains { $0.serverName == "sip.example.com" })
    }
}

@Suite("A closed TLS connection leaves nothing behind", .serialized)
struct TLSConnectionLifetimeTests {
    @Test("after an accepted TLS connection closes, its channel (pipeline, TLS buffers, handlers) is freed: no reference cycle through the SNI handler")
    func closedConnectionFreed() throws {
        let pki = try TestPKI()
        let proxy = try tlsProxy(pki, "")
        defer { proxy.stop() }
        // openssl s_client stays connected after its input ends (-ign_eof)
        // until it is stopped.
        let client = try Background("openssl", ["s_client", "-connect", "127.0.0.1:\(proxy.port(.tls))", "-ign_eof", "-quiet"])
        defer { client.stop() }
        var deadline = Date().addingTimeInterval(10)
        while proxy.transport.connections.all.isEmpty && Date() < deadline { usleep(20_000) }
        weak var channel: (any Channel)? = proxy.transport.connections.all.first?.channel
        #expect(channel != nil)
        client.stop()
        deadline = Date().addingTimeInterval(10)
        while channel != nil && Date() < deadline { usleep(20_000) }
        #expect(channel == nil, "the closed connection's channel is still referenced")
        #expect(proxy.transport.connections.all.isEmpty)
    }
}
