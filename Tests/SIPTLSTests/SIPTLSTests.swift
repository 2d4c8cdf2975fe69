import Foundation
import SIPConfig
@testable import SIPTLS
import Testing
import X509

@Suite("tls_ciphers_list evaluation")
struct CipherListTests {
    func names(_ s: String) -> [String]? {
        if case .success(let c) = TLSCipherList.parse(s) { return c.selected.map(\.openSSLName) }
        return nil
    }

    @Test("OpenSSL names, aliases, intersections, removals")
    func evaluation() {
        #expect(names("ECDHE-RSA-AES128-GCM-SHA256") == ["ECDHE-RSA-AES128-GCM-SHA256"])
        #expect(names("ECDHE+AESGCM")?.count == 4)
        #expect(names("HIGH:!aRSA:!kRSA:!SHA1")?.allSatisfy { $0.hasPrefix("ECDHE-ECDSA") && !$0.hasSuffix("-SHA") } == true)
        #expect(names("ALL:-AES128:+CHACHA20")?.last?.contains("CHACHA20") == true)
        #expect(names("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384") == ["ECDHE-ECDSA-AES256-GCM-SHA384"])
        // The seed's example: NULL suites do not exist here; the AES ones stay.
        #expect(names("NULL-SHA:NULL-MD5:AES256-SHA:AES128-SHA") == ["AES256-SHA", "AES128-SHA"])
    }

    @Test("a string that selects nothing is refused with a message", arguments: ["NULL-SHA:NULL-MD5", "RC4", "FOO-BAR", "ALL:!ALL"])
    func nothing(s: String) {
        guard case .failure(let e) = TLSCipherList.parse(s) else {
            Issue.record("'\(s)' accepted")
            return
        }
        #expect(e.description.contains("selects no cipher suite"))
    }

    @Test("the default is ECDHE with AEAD only")
    func defaultList() {
        #expect(TLSCipherList.secureDefault.isModernOnly)
        #expect(TLSCipherList.secureDefault.selected.count == 6)
    }
}

@Suite("RFC 5922 certificate names")
struct PeerIdentityTests {
    func cert(cn: String, dns: [String] = [], sip: [String] = [], ips: [String] = []) throws -> Certificate {
        let ca = try CertificateGenerator.makeCA(commonName: "CA")
        var r = CertificateGenerator.Request(commonName: cn)
        r.dnsNames = dns
        r.sipURIs = sip
        r.ipAddresses = ips
        return try CertificateGenerator.issue(r, by: ca).certificate
    }

    @Test("IP literals: dotted quads of octets, anything with a colon; host names are not")
    func ipLiterals() {
        for s in ["127.0.0.1", "0.0.0.0", "255.255.255.255", "010.1.1.1", "::1", "2001:db8::5", "[::1]"] {
            #expect(PeerIdentity.isIPLiteral(s), "\(s)")
        }
        for s in ["", "256.1.1.1", "1.2.3", "1.2.3.4.5", "1..2.3", ".1.2.3", "1.2.3.", "1.2.3.4x", "+1.2.3.4", "1.2.3.1000",
                  "example.com", "a.b.c.d", "1.2.3.d", "localhost"] {
            #expect(!PeerIdentity.isIPLiteral(s), "\(s)")
        }
    }

    @Test("SAN sip: URIs first, then DNS names; CN only without SAN")
    func order() throws {
        let sipOnly = try cert(cn: "cn.test", dns: ["dns.test"], sip: ["sip:sip.test"])
        #expect(PeerIdentity.matches(sipOnly, domain: "sip.test", allowWildcards: false))
        #expect(!PeerIdentity.matches(sipOnly, domain: "dns.test", allowWildcards: false))
        #expect(!PeerIdentity.matches(sipOnly, domain: "cn.test", allowWildcards: false))
        let dnsOnly = try cert(cn: "cn.test", dns: ["dns.test"])
        #expect(PeerIdentity.matches(dnsOnly, domain: "DNS.test", allowWildcards: false))
        #expect(!PeerIdentity.matches(dnsOnly, domain: "cn.test", allowWildcards: false))
        let cnOnly = try cert(cn: "cn.test")
        #expect(PeerIdentity.matches(cnOnly, domain: "cn.test", allowWildcards: false))
        let userURI = try cert(cn: "x", sip: ["sip:alice@user.test"])
        #expect(!PeerIdentity.matches(userURI, domain: "user.test", allowWildcards: false))
    }

    @Test("wildcards match one label, and only when allowed")
    func wildcards() throws {
        let w = try cert(cn: "w", dns: ["*.example.com"])
        #expect(!PeerIdentity.matches(w, domain: "a.example.com", allowWildcards: false))
        #expect(PeerIdentity.matches(w, domain: "a.example.com", allowWildcards: true))
        #expect(!PeerIdentity.matches(w, domain: "a.b.example.com", allowWildcards: true))
        #expect(!PeerIdentity.matches(w, domain: "example.com", allowWildcards: true))
    }

    @Test("an IP target matches an IP SAN only")
    func ip() throws {
        let c = try cert(cn: "192.0.2.1", dns: ["host.test"], ips: ["192.0.2.1", "2001:db8::1"])
        #expect(PeerIdentity.matches(c, domain: "192.0.2.1", allowWildcards: false))
        #expect(PeerIdentity.matches(c, domain: "[2001:db8::1]", allowWildcards: false))
        #expect(!PeerIdentity.matches(c, domain: "192.0.2.2", allowWildcards: false))
    }
}

@Suite("TLS domain selection (the seed's tls_find_domain, with SNI)")
struct DomainSelectionTests {
    @Test("exact IP:port, then SNI, then the default")
    func selection() throws {
        let dir = NSTemporaryDirectory() + "swiftser-sel-\(UUID().uuidString.prefix(6))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let ca = try CertificateGenerator.makeCA(commonName: "CA")
        for n in ["def", "lo", "sni"] {
            try CertificateGenerator.write(try CertificateGenerator.issue(.init(commonName: n), by: ca), certificate: "\(dir)/\(n).pem", key: "\(dir)/\(n).key")
        }
        let config = try ConfigLoader.load(text: """
        listen=tls:127.0.0.1:5061
        listen=tls:127.0.0.2:5061
        tls_certificate="\(dir)/def.pem"
        tls_private_key="\(dir)/def.key"
        tls_domain[127.0.0.2:5061] { tls_certificate="\(dir)/lo.pem"
          tls_private_key="\(dir)/lo.key" }
        tls_server_domain { tls_server_name="voice.test"
          tls_certificate="\(dir)/sni.pem"
          tls_private_key="\(dir)/sni.key" }
        request_route { drop; }
        """, functions: FunctionCatalogue([]))
        let table = try TLSDomainTable.build(config.tls)
        #expect(table.server(local: HostPort(host: "127.0.0.1", port: 5061), serverName: nil).summary.subject.contains("CN=def"))
        #expect(table.server(local: HostPort(host: "127.0.0.2", port: 5061), serverName: nil).summary.subject.contains("CN=lo"))
        #expect(table.server(local: HostPort(host: "127.0.0.2", port: 5061), serverName: "voice.test").summary.subject.contains("CN=sni"))
        #expect(table.server(local: HostPort(host: "127.0.0.1", port: 5061), serverName: "other.test").summary.subject.contains("CN=def"))
        #expect(table.client(remote: HostPort(host: "192.0.2.1", port: 5061)).domain.isDefault)
    }
}
