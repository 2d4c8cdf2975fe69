import Foundation
import SIPConfig
import SIPTLS
import SIPTransport
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
