import Foundation
import SIPConfig
import SIPProxy
import SIPTransport
import Testing

/// The proxy forwards OPTIONS for sip:peer@NAME:PORT;transport=tls to a
/// Python TLS server; NAME resolves through a hosts file.
func outboundProxy(_ pki: TestPKI, peerPort: UInt16, client: String) throws -> TestProxy {
    try pki.issue("server", cn: "proxy.test", dns: ["proxy.test"], ips: ["127.0.0.1"])
    return try TestProxy("""
    listen=udp:127.0.0.1:0
    listen=tls:127.0.0.1:0
    dns_hosts_file="hosts"
    tls_certificate="\(pki.dir)/server.pem"
    tls_private_key="\(pki.dir)/server.key"
    tls_ca_list="\(pki.caFile)"
    \(client)
    request_route {
        if (!t_relay()) { sl_reply_error(); }
        exit;
    }
    """, files: ["hosts": "127.0.0.1 pbx.test wrong.test\n"])
}

func optionsTo(_ uri: String, proxy: TestProxy) -> Subprocess.Result {
    let dir = makeTempDir("msg")
    let msg = "OPTIONS \(uri) SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-\(UUID().uuidString.prefix(8));rport\r\nMax-Forwards: 70\r\nFrom: <sip:t@test>;tag=1\r\nTo: <\(uri)>\r\nCall-ID: \(UUID().uuidString)\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    try? msg.write(toFile: dir + "/m.sip", atomically: true, encoding: .utf8)
    return Subprocess.sipclient(["--proto", "udp", "--port", String(proxy.port(.udp)), "--file", dir + "/m.sip", "--wait", "6"])
}

/// Starts the Python TLS peer with `cert`, a proxy with `client` settings,
/// sends OPTIONS for `target` (port appended) and returns the client's
/// output with the proxy and the peer for further checks.
func outbound(_ pki: TestPKI, cert: (String, String), peerArgs: [String] = [], client: String, target: String,
              check: (Subprocess.Result, TestProxy, Background) -> Void) throws {
    let port = freePort()
    let peer = try Background("python3", [Paths.peers + "/tlsserver.py", "--port", String(port), "--cert", cert.0, "--key", cert.1] + peerArgs)
    defer { peer.stop() }
    #expect(peer.wait(for: "READY"))
    let proxy = try outboundProxy(pki, peerPort: port, client: client)
    defer { proxy.stop() }
    check(optionsTo("sip:peer@\(target):\(port);transport=tls", proxy: proxy), proxy, peer)
}

@Suite("Outbound TLS: client domains, RFC 5922 name checks, client certificates", .serialized)
struct OutboundTLSTests {
    @Test("a server certificate that names the target is accepted; the proxy presents its certificate")
    func rightName() throws {
        let pki = try TestPKI()
        let cert = try pki.issue("pbx", cn: "pbx.test", sip: ["sip:pbx.test"])
        try outbound(pki, cert: cert, peerArgs: ["--ca", pki.caFile, "--require-client-cert"], client: "tls_client_domain { tls_verify=1 }", target: "pbx.test") { r, proxy, peer in
            #expect(r.out.contains("RESPONSE SIP/2.0 200 OK"), "\(r.out) \(proxy.log.lines)")
            #expect(peer.lines.contains { $0.hasPrefix("CONNECTED") && $0.contains("commonName=proxy.test") && $0.contains("sni=pbx.test") }, "\(peer.lines)")
        }
    }

    @Test("a certificate for another name is refused (and nothing is sent)")
    func wrongName() throws {
        let pki = try TestPKI()
        let cert = try pki.issue("pbx", cn: "pbx.test", dns: ["pbx.test"])
        try outbound(pki, cert: cert, client: "tls_client_domain { tls_verify=1 }", target: "wrong.test") { r, proxy, peer in
            #expect(!r.out.contains("200 OK"), "\(r.out)")
            #expect(proxy.closes.wait { if case .verificationFailed = $0 { true } else { false } }, "\(proxy.closes.reasons)")
            #expect(proxy.transport.counters.values.tlsVerificationRefusals == 1)
            #expect(!peer.lines.contains { $0.hasPrefix("REQUEST") }, "\(peer.lines)")
        }
    }

    @Test("with tls_verify_hostname=no the name is not checked, the chain still is")
    func noHostnameCheck() throws {
        let pki = try TestPKI()
        let cert = try pki.issue("pbx", cn: "pbx.test", dns: ["pbx.test"])
        try outbound(pki, cert: cert, client: "tls_client_domain { tls_verify=1\n tls_verify_hostname=no }", target: "wrong.test") { r, proxy, peer in
            #expect(r.out.contains("200 OK"), "\(r.out) \(proxy.log.lines) \(peer.lines)")
        }
    }

    @Test("a server certificate from an unknown CA is refused")
    func unknownCA() throws {
        let pki = try TestPKI()
        let cert = try pki.issue("pbx", cn: "pbx.test", dns: ["pbx.test"], byOtherCA: true)
        try outbound(pki, cert: cert, client: "tls_client_domain { tls_verify=1 }", target: "pbx.test") { r, proxy, _ in
            #expect(!r.out.contains("200 OK"))
            #expect(proxy.closes.wait { $0 == .handshakeFailed(.notTrusted) }, "\(proxy.closes.reasons)")
        }
    }

    @Test("wildcard certificates only with tls_allow_wildcard_certs", arguments: [false, true])
    func wildcard(allow: Bool) throws {
        let pki = try TestPKI()
        let cert = try pki.issue("wild", cn: "*.test", dns: ["*.test"])
        try outbound(pki, cert: cert, client: "tls_client_domain { tls_verify=1\n tls_allow_wildcard_certs=\(allow ? "yes" : "no") }", target: "pbx.test") { r, proxy, _ in
            #expect(r.out.contains("200 OK") == allow, "\(r.out) \(proxy.log.lines)")
        }
    }

    @Test("a server that refuses our client certificate (seen after a TLS 1.3 handshake) fails the branch at once: a 503, which goes up as 500 (§16.7 step 6)")
    func refusedClientCertificate() throws {
        let pki = try TestPKI()
        let cert = try pki.issue("pbx", cn: "pbx.test", dns: ["pbx.test"])
        // The peer trusts only the other CA, so it refuses the proxy's certificate.
        try outbound(pki, cert: cert, peerArgs: ["--ca", pki.dir + "/other-ca.pem", "--require-client-cert"],
                     client: "tls_client_domain { tls_verify=1 }", target: "pbx.test") { r, proxy, _ in
            #expect(r.out.contains("RESPONSE SIP/2.0 500"), "\(r.out) \(proxy.log.lines.suffix(4))")
        }
    }

    @Test("disable_tls=1: a request that needs TLS gets 503 and a clear log line")
    func disabled() throws {
        let pki = try TestPKI()
        try pki.issue("server", cn: "proxy.test")
        let proxy = try TestProxy("""
        listen=udp:127.0.0.1:0
        disable_tls=1
        request_route { if (!t_relay()) { sl_reply_error(); } exit; }
        """)
        defer { proxy.stop() }
        let r = optionsTo("sip:peer@127.0.0.1:5999;transport=tls", proxy: proxy)
        #expect(r.out.contains("RESPONSE SIP/2.0 503"), "\(r.out) \(proxy.log.lines)")
    }
}

@Suite("RFC 5923 connection reuse (alias)", .serialized)
struct AliasTests {
    /// OPTIONS with `alias` in its Via announces the sent-by 127.0.0.1:PORT;
    /// a MESSAGE then asks the proxy to relay to that address. With a verified
    /// certificate naming 127.0.0.1, the MESSAGE comes back over the same
    /// connection; without one, the proxy must not reuse it.
    func run(withCertificate: Bool) throws -> Subprocess.Result {
        let pki = try TestPKI()
        let port = freePort() // nothing listens there
        let proxy = try tlsProxy(pki, "tls_verify=1\ntls_require_certificate=0", script: """
        request_route {
            if (is_method("OPTIONS")) { sl_send_reply("200", "OK"); exit; }
            $du = "sip:127.0.0.1:\(port);transport=tls";
            t_relay();
        }
        """)
        defer { proxy.stop() }
        let (c, k) = try pki.issue("peer", cn: "127.0.0.1", ips: ["127.0.0.1"])
        let dir = makeTempDir("alias")
        let via = "Via: SIP/2.0/TLS 127.0.0.1:\(port);branch=z9hG4bK-\(UUID().uuidString.prefix(8));alias"
        try "OPTIONS sip:127.0.0.1 SIP/2.0\r\n\(via)\r\nMax-Forwards: 70\r\nFrom: <sip:p@test>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: \(UUID().uuidString)\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            .write(toFile: dir + "/1.sip", atomically: true, encoding: .utf8)
        try "MESSAGE sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:9;branch=z9hG4bK-\(UUID().uuidString.prefix(8))\r\nMax-Forwards: 70\r\nFrom: <sip:p@test>;tag=2\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: \(UUID().uuidString)\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
            .write(toFile: dir + "/2.sip", atomically: true, encoding: .utf8)
        var args = ["--proto", "tls", "--port", String(proxy.port(.tls)), "--file", dir + "/1.sip", "--file", dir + "/2.sip", "--expect", "3", "--wait", "3"]
        if withCertificate { args += ["--cert", c, "--key", k] }
        return Subprocess.sipclient(args)
    }

    @Test("honoured when the verified certificate names the sent-by")
    func honoured() throws {
        let r = try run(withCertificate: true)
        #expect(r.out.contains("REQUEST MESSAGE sip:bob@127.0.0.1 SIP/2.0"), "\(r.out)")
    }

    @Test("not honoured without an authenticated certificate")
    func refused() throws {
        let r = try run(withCertificate: false)
        #expect(!r.out.contains("REQUEST MESSAGE"), "\(r.out)")
    }
}
