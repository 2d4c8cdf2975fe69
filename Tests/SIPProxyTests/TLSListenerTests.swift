import Foundation
import SIPConfig
import SIPTLS
import SIPTransport
import Testing

/// Replies tell the client what the proxy saw of its certificate.
let verifyScript = """
request_route {
    if (is_peer_verified()) {
        sl_send_reply("200", "Verified $tls_peer_subject_cn");
    } else {
        sl_send_reply("200", "Unverified");
    }
    exit;
}
"""

func tlsProxy(_ pki: TestPKI, _ settings: String, script: String = verifyScript) throws -> TestProxy {
    try pki.issue("server", cn: "localhost", dns: ["localhost"], ips: ["127.0.0.1"], sip: ["sip:localhost"])
    return try TestProxy("""
    listen=tls:127.0.0.1:0
    tls_certificate="\(pki.dir)/server.pem"
    tls_private_key="\(pki.dir)/server.key"
    tls_ca_list="\(pki.caFile)"
    tls_handshake_timeout=2
    \(settings)
    \(script)
    """)
}

@Suite("TLS verification per seed §1.5.8 and §1.6, against Python's ssl", .serialized)
struct TLSVerificationTests {
    enum ClientCert: String, CaseIterable, Sendable { case none, good, otherCA, expired }

    /// (tls_verify, tls_require_certificate, client certificate) → the reply, or nil when the connection must fail.
    static let table: [(Int, Int, ClientCert, String?)] = [
        (0, 0, .none, "Unverified"), (0, 0, .good, "Unverified"), (0, 0, .otherCA, "Unverified"), (0, 0, .expired, "Unverified"),
        (1, 0, .none, "Unverified"), (1, 0, .good, "Verified phone1"), (1, 0, .otherCA, nil), (1, 0, .expired, nil),
        (1, 1, .none, nil), (1, 1, .good, "Verified phone1"), (1, 1, .otherCA, nil), (1, 1, .expired, nil),
    ]

    @Test("verify/require × client certificate", arguments: Array(0..<12))
    func mode(row: Int) throws {
        let (verify, require, cert, expected) = TLSVerificationTests.table[row]
        let pki = try TestPKI()
        try pki.issue("phone1", dns: ["phone1.example.com"])
        try pki.issue("stranger", byOtherCA: true)
        try pki.issue("old", expired: true)
        let proxy = try tlsProxy(pki, "tls_verify=\(verify)\ntls_require_certificate=\(require)")
        defer { proxy.stop() }
        var args = ["--proto", "tls", "--port", String(proxy.port(.tls)), "--ca", pki.caFile, "--options", "--wait", "3"]
        switch cert {
        case .none: break
        case .good: args += ["--cert", pki.dir + "/phone1.pem", "--key", pki.dir + "/phone1.key"]
        case .otherCA: args += ["--cert", pki.dir + "/stranger.pem", "--key", pki.dir + "/stranger.key"]
        case .expired: args += ["--cert", pki.dir + "/old.pem", "--key", pki.dir + "/old.key"]
        }
        let r = Subprocess.sipclient(args)
        let response = r.lines.first { $0.hasPrefix("RESPONSE") }
        if let expected {
            #expect(response == "RESPONSE SIP/2.0 200 \(expected)", "verify=\(verify) require=\(require) cert=\(cert): \(r.out) \(r.err)")
        } else {
            #expect(response == nil, "verify=\(verify) require=\(require) cert=\(cert) must fail: \(r.out)")
            // The connection closes with the reason as a case.
            let expected: [TLSFailure] = cert == .none ? [.noClientCertificate, .certificateRequired] : [.notTrusted]
            #expect(proxy.closes.wait { if case .handshakeFailed(let f) = $0 { expected.contains(f) } else { false } }, "\(proxy.closes.reasons)")
            #expect(proxy.transport.counters.values.tlsHandshakesFailed >= 1)
            // The metric's reason label: the failure's group.
            let group: TLSFailure.Group = cert == .none ? .noClientCertificate : .notTrusted
            #expect(proxy.transport.counters.values.tlsHandshakeFailuresByGroup[group.rawValue] >= 1)
        }
    }
}

@Suite("TLS listeners against openssl s_client", .serialized)
struct OpenSSLClientTests {
    static func sClient(_ port: UInt16, _ extra: [String], input: String = "") -> Subprocess.Result {
        Subprocess.run("openssl", ["s_client", "-connect", "127.0.0.1:\(port)", "-brief"] + extra, timeout: 10, stdin: Data(input.utf8))
    }

    static func negotiated(_ r: Subprocess.Result) -> Bool {
        (r.out + r.err).contains("Protocol version:") && !(r.out + r.err).contains("alert")
    }

    @Test("tls_method bounds the versions", arguments: [
        ("tlsv1.2+", "-tls1_2", true), ("tlsv1.2+", "-tls1_3", true), ("tlsv1.2+", "-tls1_1", false),
        ("tlsv1.2", "-tls1_3", false), ("tlsv1.2", "-tls1_2", true), ("tlsv1.3", "-tls1_2", false),
        ("tlsv1.3", "-tls1_3", true), ("sslv23", "-tls1_1", false), ("sslv23", "-tls1_3", true),
    ])
    func methods(method: String, flag: String, ok: Bool) throws {
        let pki = try TestPKI()
        let proxy = try tlsProxy(pki, "tls_method=\(method)")
        defer { proxy.stop() }
        let r = OpenSSLClientTests.sClient(proxy.port(.tls), [flag, "-CAfile", pki.caFile])
        #expect(OpenSSLClientTests.negotiated(r) == ok, "\(method) with \(flag): \(r.out) \(r.err)")
        if !ok {
            #expect(proxy.closes.wait { if case .handshakeFailed(let f) = $0 { f.isVersionMismatch } else { false } }, "\(proxy.closes.reasons)")
        }
    }

    /// TLS 1.0 and 1.1 have no AEAD suites: a config that asks for them
    /// must list CBC ciphers, and OpenSSL 3's client only offers them at
    /// security level 0.
    @Test("tls_method tlsv1 and tlsv1.1 are exactly TLS 1.0 and 1.1 (legacy peers)", arguments: [
        ("tlsv1", "-tls1", true, "TLSv1"), ("tlsv1", "-tls1_1", false, ""), ("tlsv1", "-tls1_2", false, ""),
        ("tlsv1.1", "-tls1_1", true, "TLSv1.1"), ("tlsv1.1", "-tls1", false, ""), ("tlsv1.1", "-tls1_3", false, ""),
    ])
    func legacyMethods(method: String, flag: String, ok: Bool, version: String) throws {
        let pki = try TestPKI()
        let proxy = try tlsProxy(pki, "tls_method=\(method)\ntls_ciphers_list=\"ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA\"")
        defer { proxy.stop() }
        let r = OpenSSLClientTests.sClient(proxy.port(.tls), [flag, "-cipher", "DEFAULT@SECLEVEL=0", "-CAfile", pki.caFile])
        #expect(OpenSSLClientTests.negotiated(r) == ok, "\(method) with \(flag): \(r.out) \(r.err)")
        if ok {
            #expect((r.out + r.err).contains("Protocol version: \(version)"), "\(r.out) \(r.err)")
        }
    }

    @Test("the cipher list is honoured for TLS 1.2")
    func ciphers() throws {
        let pki = try TestPKI()
        let proxy = try tlsProxy(pki, "tls_ciphers_list=\"ECDHE-ECDSA-CHACHA20-POLY1305\"\ntls_method=tlsv1.2")
        defer { proxy.stop() }
        let chacha = OpenSSLClientTests.sClient(proxy.port(.tls), ["-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"])
        #expect((chacha.out + chacha.err).contains("Ciphersuite: ECDHE-ECDSA-CHACHA20-POLY1305"), "\(chacha.err)")
        let aes = OpenSSLClientTests.sClient(proxy.port(.tls), ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"])
        #expect(!OpenSSLClientTests.negotiated(aes))
        #expect(proxy.closes.wait { $0 == .handshakeFailed(.noSharedCipher) || $0 == .handshakeFailed(.noCiphersAvailable) }, "\(proxy.closes.reasons)")
    }

    @Test("tls_curves limits the key-exchange groups (openssl s_client -groups)")
    func curves() throws {
        let pki = try TestPKI()
        let proxy = try tlsProxy(pki, "tls_curves=\"P-256:P-384\"")
        defer { proxy.stop() }
        let x25519 = OpenSSLClientTests.sClient(proxy.port(.tls), ["-groups", "X25519"])
        #expect(!OpenSSLClientTests.negotiated(x25519), "\(x25519.out)")
        let p256 = OpenSSLClientTests.sClient(proxy.port(.tls), ["-groups", "X25519:P-256", "-CAfile", pki.caFile])
        #expect(OpenSSLClientTests.negotiated(p256), "\(p256.err)")
        #expect((p256.out + p256.err).contains("P-256") || (p256.out + p256.err).contains("prime256v1"), "\(p256.out)")
    }

    @Test("the default offers only ECDHE with AEAD ciphers")
    func defaultCiphers() throws {
        let pki = try TestPKI()
        let proxy = try tlsProxy(pki, "tls_method=tlsv1.2")
        defer { proxy.stop() }
        let cbc = OpenSSLClientTests.sClient(proxy.port(.tls), ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA:AES128-GCM-SHA256"])
        #expect(!OpenSSLClientTests.negotiated(cbc))
        let gcm = OpenSSLClientTests.sClient(proxy.port(.tls), ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384"])
        #expect(OpenSSLClientTests.negotiated(gcm), "\(gcm.err)")
    }

    @Test("two listeners with different tls_domain serve different certificates")
    func domainsPerListener() throws {
        let pki = try TestPKI()
        try pki.issue("server", cn: "localhost", dns: ["localhost"])
        try pki.issue("second", cn: "second.example.com", dns: ["second.example.com"])
        let p1 = freePort(), p2 = freePort()
        let proxy = try TestProxy("""
        listen=tls:127.0.0.1:\(p1)
        listen=tls:127.0.0.1:\(p2)
        tls_certificate="\(pki.dir)/server.pem"
        tls_private_key="\(pki.dir)/server.key"
        tls_domain[127.0.0.1:\(p2)] {
            tls_certificate="\(pki.dir)/second.pem"
            tls_private_key="\(pki.dir)/second.key"
        }
        \(verifyScript)
        """)
        defer { proxy.stop() }
        let a = OpenSSLClientTests.sClient(p1, [])
        let b = OpenSSLClientTests.sClient(p2, [])
        #expect((a.out + a.err).contains("CN=localhost") || (a.out + a.err).contains("CN = localhost"), "\(a.err)")
        #expect((b.out + b.err).contains("second.example.com"), "\(b.err)")
    }

    @Test("SNI picks the certificate and the CA policy of its domain")
    func sni() throws {
        let pki = try TestPKI()
        try pki.issue("server", cn: "localhost", dns: ["localhost"])
        try pki.issue("voice", cn: "voice.example.com", dns: ["voice.example.com"])
        try pki.issue("phone1")
        let port = freePort()
        let proxy = try TestProxy("""
        listen=tls:127.0.0.1:\(port)
        tls_certificate="\(pki.dir)/server.pem"
        tls_private_key="\(pki.dir)/server.key"
        tls_ca_list="\(pki.caFile)"
        tls_verify=0
        tls_domain[127.0.0.1:\(port)] {
            tls_server_name="*.example.com"
            tls_certificate="\(pki.dir)/voice.pem"
            tls_private_key="\(pki.dir)/voice.key"
            tls_verify=1
            tls_require_certificate=1
        }
        request_route { sl_send_reply("200", "sni=$tls_peer_server_name"); exit; }
        """)
        defer { proxy.stop() }
        let plain = OpenSSLClientTests.sClient(port, ["-servername", "other.test"])
        #expect((plain.out + plain.err).contains("localhost"), "\(plain.err)")
        // *.example.com requires a client certificate.
        let noCert = Subprocess.sipclient(["--proto", "tls", "--port", String(port), "--sni", "voice.example.com", "--options"])
        #expect(!noCert.out.contains("RESPONSE"), "\(noCert.out)")
        let withCert = Subprocess.sipclient(["--proto", "tls", "--port", String(port), "--sni", "voice.example.com", "--options",
                                             "--cert", pki.dir + "/phone1.pem", "--key", pki.dir + "/phone1.key"])
        #expect(withCert.out.contains("RESPONSE SIP/2.0 200 sni=voice.example.com"), "\(withCert.out)")
        let voice = OpenSSLClientTests.sClient(port, ["-servername", "voice.example.com", "-cert", pki.dir + "/phone1.pem", "-key", pki.dir + "/phone1.key"])
        #expect((voice.out + voice.err).contains("voice.example.com"), "\(voice.err)")
    }
}

@Suite("IPv6 listeners")
struct IPv6Tests {
    @Test("OPTIONS over UDP, TCP and TLS on [::1]")
    func ipv6() throws {
        let pki = try TestPKI()
        try pki.issue("server", cn: "localhost", dns: ["localhost"], ips: ["::1"])
        let proxy = try TestProxy("""
        listen=udp:[::1]:0
        listen=tcp:[::1]:0
        listen=tls:[::1]:0
        tls_certificate="\(pki.dir)/server.pem"
        tls_private_key="\(pki.dir)/server.key"
        request_route { sl_send_reply("200", "OK $pr $af"); exit; }
        """)
        defer { proxy.stop() }
        for proto in ["udp", "tcp", "tls"] {
            let port = proxy.transport.listeners.first { $0.proto.rawValue == proto }!.port
            let r = Subprocess.sipclient(["--proto", proto, "--host", "::1", "--port", String(port), "--options"])
            #expect(r.out.contains("RESPONSE SIP/2.0 200 OK \(proto) INET6"), "\(proto): \(r.out)")
        }
    }
}

@Suite("tls_crl: revoked certificates", .serialized)
struct CRLTests {
    /// Revokes `cert` with openssl's `ca` command and writes crl.pem.
    static func revoke(_ pki: TestPKI, _ cert: String) throws -> String {
        let d = pki.dir
        try "".write(toFile: d + "/index.txt", atomically: true, encoding: .utf8)
        try "01\n".write(toFile: d + "/crlnumber", atomically: true, encoding: .utf8)
        try """
        [ ca ]
        default_ca = CA_default
        [ CA_default ]
        database = \(d)/index.txt
        crlnumber = \(d)/crlnumber
        default_md = sha256
        default_crl_days = 30
        """.write(toFile: d + "/ca.cnf", atomically: true, encoding: .utf8)
        let base = ["-config", d + "/ca.cnf", "-keyfile", d + "/ca.key", "-cert", d + "/ca.pem"]
        let r1 = Subprocess.run("openssl", ["ca", "-revoke", cert] + base)
        let r2 = Subprocess.run("openssl", ["ca", "-gencrl", "-out", d + "/crl.pem"] + base)
        #expect(r1.status == 0 && r2.status == 0, "\(r1.err) \(r2.err)")
        return d + "/crl.pem"
    }

    @Test("a client whose certificate tls_crl revokes is refused; others are served")
    func revoked() throws {
        let pki = try TestPKI()
        let (bad, badKey) = try pki.issue("phone1")
        let (good, goodKey) = try pki.issue("phone2")
        let crl = try CRLTests.revoke(pki, bad)
        let proxy = try tlsProxy(pki, "tls_verify=1\ntls_require_certificate=1\ntls_crl=\"\(crl)\"")
        defer { proxy.stop() }
        let r1 = Subprocess.sipclient(["--proto", "tls", "--port", String(proxy.port(.tls)), "--options", "--cert", bad, "--key", badKey, "--wait", "2"])
        #expect(!r1.out.contains("RESPONSE"), "\(r1.out)")
        #expect(proxy.closes.wait { if case .verificationFailed = $0 { true } else { false } }, "\(proxy.closes.reasons)")
        #expect(proxy.transport.counters.values.tlsVerificationRefusals == 1)
        let r2 = Subprocess.sipclient(["--proto", "tls", "--port", String(proxy.port(.tls)), "--options", "--cert", good, "--key", goodKey])
        #expect(r2.out.contains("RESPONSE SIP/2.0 200 Verified phone2"), "\(r2.out)")
    }
}

@Suite("tls_verify_depth", .serialized)
struct VerifyDepthTests {
    @Test("a client chain with one intermediate CA passes at depth 1 and is refused at depth 0, with the reason logged")
    func depth() throws {
        let pki = try TestPKI()
        try pki.issue("server", cn: "localhost", dns: ["localhost"], ips: ["127.0.0.1"])
        let dir = pki.dir
        let root = try CertificateGenerator.makeCA(commonName: "Depth Root", maxPathLength: 1)
        let mid = try CertificateGenerator.makeCA(commonName: "Depth Intermediate", issuer: root)
        let leaf = try CertificateGenerator.issue(CertificateGenerator.Request(commonName: "phone9"), by: mid)
        try CertificateGenerator.writeFile(dir + "/root.pem", try root.certificatePEM(), mode: 0o644)
        try CertificateGenerator.writeFile(dir + "/chain.pem", try leaf.certificatePEM() + "\n" + (try mid.certificatePEM()), mode: 0o644)
        try CertificateGenerator.writeFile(dir + "/leaf.key", try leaf.keyPEM(), mode: 0o600)
        for (depth, accepted) in [(1, true), (0, false)] {
            let proxy = try TestProxy("""
            listen=tls:127.0.0.1:0
            tls_certificate="\(dir)/server.pem"
            tls_private_key="\(dir)/server.key"
            tls_ca_list="\(dir)/root.pem"
            tls_verify=1
            tls_require_certificate=1
            tls_verify_depth=\(depth)
            \(verifyScript)
            """)
            defer { proxy.stop() }
            let r = Subprocess.sipclient(["--proto", "tls", "--port", String(proxy.port(.tls)), "--options", "--cert", dir + "/chain.pem", "--key", dir + "/leaf.key", "--wait", "2"])
            if accepted {
                #expect(r.out.contains("RESPONSE SIP/2.0 200 Verified phone9"), "\(r.out)\n\(proxy.log.lines)")
            } else {
                #expect(!r.out.contains("RESPONSE"), "\(r.out)")
                #expect(proxy.closes.wait { $0 == .handshakeFailed(.chainTooLong(depth: 0)) }, "\(proxy.closes.reasons)")
            }
        }
    }
}
