import Foundation
@testable import SIPProxy
import Testing

@Suite("Certificate identity and who sees the bindings", .serialized)
struct IdentityTests {
    static func register(_ proxy: TestProxy, proto: String = "udp", user: String, contacts: Int, extra: [String] = []) -> (status: String?, contacts: Int, out: String) {
        let port = proto == "tls" ? proxy.port(.tls) : proxy.port(.udp)
        let r = Subprocess.run("python3", [Paths.peers + "/ua.py", "register", "--proto", proto, "--port", String(port), "--user", user,
                                           "--contacts", String(contacts)] + extra, timeout: 20)
        let status = r.lines.first { $0.hasPrefix("RESPONSE") }
        return (status, r.lines.filter { $0.hasPrefix("CONTACT") }.count, r.out + r.err)
    }

    @Test("tls_peer_verified_from(): accepted when the verified certificate names the From domain (RFC 5922: sip: URI first, then DNS)")
    func certificateNamesFromDomain() throws {
        let pki = try TestPKI()
        let (dnsCert, dnsKey) = try pki.issue("pbx-dns", dns: ["localhost"])
        let (sipCert, sipKey) = try pki.issue("pbx-sip", sip: ["sip:localhost"])
        let (otherCert, otherKey) = try pki.issue("pbx-other", dns: ["elsewhere.example"])
        // A sip: URI in the SAN names the domain; a DNS name beside it is then not looked at.
        let (mixedCert, mixedKey) = try pki.issue("pbx-mixed", dns: ["localhost"], sip: ["sip:elsewhere.example"])
        let (strangerCert, strangerKey) = try pki.issue("pbx-stranger", dns: ["localhost"], byOtherCA: true)
        let proxy = try tlsProxy(pki, "tls_verify=1\ntls_require_certificate=0", script: """
        request_route {
            if (tls_peer_verified_from()) { sl_send_reply("200", "Peer of $fd"); exit; }
            sl_send_reply("403", "Not by certificate");
        }
        """)
        defer { proxy.stop() }
        func ask(_ cert: (String, String)?, domain: String = "localhost") -> String? {
            var extra = ["--ca", pki.caFile, "--domain", domain]
            if let cert { extra += ["--cert", cert.0, "--key", cert.1] }
            return IdentityTests.register(proxy, proto: "tls", user: "pbx", contacts: 0, extra: extra).status
        }
        #expect(ask((dnsCert, dnsKey)) == "RESPONSE SIP/2.0 200 Peer of localhost")
        #expect(ask((sipCert, sipKey)) == "RESPONSE SIP/2.0 200 Peer of localhost")
        #expect(ask((otherCert, otherKey)) == "RESPONSE SIP/2.0 403 Not by certificate")
        #expect(ask((otherCert, otherKey), domain: "elsewhere.example") == "RESPONSE SIP/2.0 200 Peer of elsewhere.example")
        #expect(ask((mixedCert, mixedKey)) == "RESPONSE SIP/2.0 403 Not by certificate")
        #expect(ask(nil) == "RESPONSE SIP/2.0 403 Not by certificate")
        // Not trusted: the handshake fails with tls_verify=1, so no answer at all.
        #expect(ask((strangerCert, strangerKey)) == nil)
    }

    @Test("save(): the AOR's other bindings are listed only to an authenticated REGISTER (a verified certificate here); others see their own contacts")
    func bindingsOnlyToAuthenticated() throws {
        let pki = try TestPKI()
        let (cert, key) = try pki.issue("phone", dns: ["localhost"])
        let proxy = try tlsProxy(pki, "listen=udp:127.0.0.1:0\nalias=\"localhost\"\ntls_verify=1\ntls_require_certificate=0\nmodparam(\"usrloc\", \"db_mode\", 0)", script: """
        request_route {
            if (is_method("REGISTER")) { save("location"); exit; }
            sl_send_reply("404", "Not here");
        }
        """)
        defer { proxy.stop() }
        let two = IdentityTests.register(proxy, user: "dave", contacts: 2)
        #expect(two.status == "RESPONSE SIP/2.0 200 OK" && two.contacts == 2, "\(two.out)")   // its own two
        let query = IdentityTests.register(proxy, user: "dave", contacts: 0)
        #expect(query.status == "RESPONSE SIP/2.0 200 OK" && query.contacts == 0, "\(query.out)")
        let one = IdentityTests.register(proxy, user: "dave", contacts: 1)
        #expect(one.status == "RESPONSE SIP/2.0 200 OK" && one.contacts == 1, "\(one.out)")  // its own, not the other
        #expect(proxy.location.bindings(for: "dave@localhost").count == 2)
        // Over TLS with a verified certificate: every binding.
        let verified = IdentityTests.register(proxy, proto: "tls", user: "dave", contacts: 0, extra: ["--ca", pki.caFile, "--cert", cert, "--key", key])
        #expect(verified.status == "RESPONSE SIP/2.0 200 OK" && verified.contacts == 2, "\(verified.out)")
        // Over TLS without a certificate: none.
        let anonymous = IdentityTests.register(proxy, proto: "tls", user: "dave", contacts: 0, extra: ["--ca", pki.caFile])
        #expect(anonymous.status == "RESPONSE SIP/2.0 200 OK" && anonymous.contacts == 0, "\(anonymous.out)")
    }

    @Test("save() after digest authentication lists every binding")
    func bindingsAfterDigest() throws {
        let proxy = try authProxy()
        defer { proxy.stop() }
        let two = IdentityTests.register(proxy, user: "alice", contacts: 2, extra: ["--password", "secret"])
        #expect(two.status == "RESPONSE SIP/2.0 200 OK" && two.contacts == 2, "\(two.out)")
        let query = IdentityTests.register(proxy, user: "alice", contacts: 0, extra: ["--password", "secret"])
        #expect(query.status == "RESPONSE SIP/2.0 200 OK" && query.contacts == 2, "\(query.out)")
    }
}
