import Foundation
import SIPConfig
import SIPProxy
import SIPTransport
import Testing

/// RFC 3263 next hops through SRV records served by a DNS server we start.
@Suite("DNS: SRV next hops (RFC 3263)", .serialized)
struct DNSTests {
    /// A second proxy that plays the far end: answers every request itself.
    func farEnd() throws -> TestProxy {
        try TestProxy("""
        listen=udp:127.0.0.1:0
        listen=tcp:127.0.0.1:0
        request_route { sl_send_reply("200", "Reached by SRV"); exit; }
        """)
    }

    func dnsServer(_ zone: [String: [String: [Any]]]) throws -> (Background, UInt16) {
        let port = freePort()
        let json = String(decoding: try JSONSerialization.data(withJSONObject: zone), as: UTF8.self)
        let server = try Background("python3", [Paths.peers + "/dnsserver.py", "--port", String(port), "--zone", json])
        #expect(server.wait(for: "READY"))
        return (server, port)
    }

    func relayProxy(dnsPort: UInt16) throws -> TestProxy {
        try TestProxy("""
        listen=udp:127.0.0.1:0
        listen=tcp:127.0.0.1:0
        dns_server="127.0.0.1:\(dnsPort)"
        request_route {
            if (!t_relay()) { sl_reply_error(); }
            exit;
        }
        """)
    }

    @Test("a name without a port is reached through its _sip._udp SRV record and the target's A record")
    func udpSRV() throws {
        let far = try farEnd()
        defer { far.stop() }
        let (dns, dnsPort) = try dnsServer([
            "_sip._udp.example.test": ["SRV": [[10, 0, Int(far.port(.udp)), "uas.example.test"]]],
            "uas.example.test": ["A": ["127.0.0.1"]],
        ])
        defer { dns.stop() }
        let proxy = try relayProxy(dnsPort: dnsPort)
        defer { proxy.stop() }
        let r = optionsTo("sip:bob@example.test", proxy: proxy)
        #expect(r.out.contains("RESPONSE SIP/2.0 200 Reached by SRV"), "\(r.out)\n\(proxy.log.lines)")
        #expect(dns.lines.contains("QUERY _sip._udp.example.test SRV"))
        #expect(dns.lines.contains("QUERY uas.example.test A"))
    }

    @Test("TCP: when the first SRV target refuses the connection, the next one is tried (RFC 3263 §4.3)")
    func tcpFailover() throws {
        let far = try farEnd()
        defer { far.stop() }
        let dead = freePort()
        let (dns, dnsPort) = try dnsServer([
            "_sip._tcp.fail.test": ["SRV": [[10, 0, Int(dead), "dead.fail.test"], [20, 0, Int(far.port(.tcp)), "live.fail.test"]]],
            "dead.fail.test": ["A": ["127.0.0.1"]],
            "live.fail.test": ["A": ["127.0.0.1"]],
        ])
        defer { dns.stop() }
        let proxy = try relayProxy(dnsPort: dnsPort)
        defer { proxy.stop() }
        let r = optionsTo("sip:bob@fail.test;transport=tcp", proxy: proxy)
        #expect(r.out.contains("RESPONSE SIP/2.0 200 Reached by SRV"), "\(r.out)\n\(proxy.log.lines)")
        // The first target refused; the 200 came from the second (RFC 3263 §4.3).
    }

    @Test("a name without SRV records falls back to its A record and the default port; an unknown name gets an error reply")
    func fallbackAndFailure() throws {
        let far = try farEnd()
        defer { far.stop() }
        let (dns, dnsPort) = try dnsServer(["plain.test": ["A": ["127.0.0.1"]]])
        defer { dns.stop() }
        let proxy = try relayProxy(dnsPort: dnsPort)
        defer { proxy.stop() }
        // With an explicit port no SRV look-up happens; the A record gives the address.
        let r = optionsTo("sip:bob@plain.test:\(far.port(.udp))", proxy: proxy)
        #expect(r.out.contains("RESPONSE SIP/2.0 200 Reached by SRV"), "\(r.out)\n\(proxy.log.lines)")
        #expect(!dns.lines.contains { $0.contains("SRV") })
        let unknown = optionsTo("sip:bob@nowhere.test", proxy: proxy)
        #expect(unknown.out.contains("RESPONSE SIP/2.0 5"), "\(unknown.out)")
    }

    @Test("NAPTR picks the transport (TCP before UDP by order) and the SRV name, statefully and statelessly")
    func naptr() throws {
        let far = try farEnd()
        defer { far.stop() }
        let (dns, dnsPort) = try dnsServer([
            "naptr.test": ["NAPTR": [[20, 10, "s", "SIP+D2U", "", "_sip._udp.naptr.test"], [10, 10, "s", "SIP+D2T", "", "_sip._tcp.naptr.test"],
                                     [5, 10, "s", "SIPS+D2T", "", "_sips._tcp.naptr.test"]]],
            "_sip._tcp.naptr.test": ["SRV": [[10, 0, Int(far.port(.tcp)), "live.naptr.test"]]],
            "live.naptr.test": ["A": ["127.0.0.1"]],
        ])
        defer { dns.stop() }
        // No TLS listener here: the SIPS+D2T record (lowest order) is skipped.
        let proxy = try relayProxy(dnsPort: dnsPort)
        defer { proxy.stop() }
        let r = optionsTo("sip:bob@naptr.test", proxy: proxy)
        #expect(r.out.contains("RESPONSE SIP/2.0 200 Reached by SRV"), "\(r.out)\n\(proxy.log.lines)")
        #expect(dns.lines.contains("QUERY naptr.test NAPTR"))
        #expect(dns.lines.contains("QUERY _sip._tcp.naptr.test SRV"))
        #expect(!dns.lines.contains("QUERY _sip._udp.naptr.test SRV"))
        #expect(far.transport.connectionCount(.tcp) >= 1, "reached over TCP")
        // Stateless forward() takes the same path (the answer is cached now).
        let stateless = try TestProxy("""
        listen=udp:127.0.0.1:0
        listen=tcp:127.0.0.1:0
        dns_server="127.0.0.1:\(dnsPort)"
        request_route { forward(); exit; }
        """)
        defer { stateless.stop() }
        let r2 = optionsTo("sip:carol@naptr.test", proxy: stateless)
        #expect(r2.out.contains("RESPONSE SIP/2.0 200 Reached by SRV"), "\(r2.out)\n\(stateless.log.lines)")
    }

    @Test("DNS messages: a query's wire form, an answer with compressed names, RFC 2782 ordering")
    func messages() throws {
        let q = DNSMessage.query(id: 0x1234, name: "_sip._udp.a.b", type: .srv)
        #expect(Array(q.prefix(4)) == [0x12, 0x34, 0x01, 0x00])
        #expect(Array(q[12...]) == [4] + Array("_sip".utf8) + [4] + Array("_udp".utf8) + [1, 0x61, 1, 0x62, 0, 0, 33, 0, 1])
        // Answer: the question, then one SRV whose target is "x" + pointer to "a.b".
        var a: [UInt8] = [0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0] + Array(q[12...])
        a += [0xC0, 12, 0, 33, 0, 1, 0, 0, 0, 60, 0, 10, 0, 5, 0, 7, 0x13, 0xC4, 1, 0x78, 0xC0, 22]
        let answer = try DNSMessage.parse(a)
        #expect(answer.id == 0x1234 && answer.responseCode == 0 && answer.ttl == 60)
        #expect(answer.srv == [SRVRecord(priority: 5, weight: 7, port: 5060, target: "x.a.b", ttl: 60)])
        let records = [SRVRecord(priority: 20, weight: 0, port: 1, target: "c", ttl: 1),
                       SRVRecord(priority: 10, weight: 1, port: 2, target: "a", ttl: 1),
                       SRVRecord(priority: 10, weight: 9, port: 3, target: "b", ttl: 1)]
        #expect(DNSMessage.order(records, random: { $0 }).map(\.target) == ["b", "a", "c"])
        #expect(DNSMessage.order(records, random: { _ in 0 }).map(\.target) == ["a", "b", "c"])
        #expect(throws: DNSMessage.Malformed.self) { try DNSMessage.parse([0x12, 0x34, 0x81]) }
        // NAPTR: order 10, preference 20, "s", "SIP+D2T", "", replacement "_t.a.b" (label + pointer).
        let nq = DNSMessage.query(id: 7, name: "a.b", type: .naptr)
        var n: [UInt8] = [0, 7, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0] + Array(nq[12...])
        let rdata: [UInt8] = [0, 10, 0, 20, 1, 0x73, 7] + Array("SIP+D2T".utf8) + [0, 2] + Array("_t".utf8) + [0xC0, 12]
        n += [0xC0, 12, 0, 35, 0, 1, 0, 0, 1, 0, 0, UInt8(rdata.count)] + rdata
        let na = try DNSMessage.parse(n)
        #expect(na.naptr == [NAPTRRecord(order: 10, preference: 20, flags: "s", services: "SIP+D2T", regexp: "", replacement: "_t.a.b")])
    }

    @Test("dns_server must be an IP address with an optional port")
    func configCheck() throws {
        #expect(DNSServerAddress("127.0.0.1:5353") == DNSServerAddress("127.0.0.1:5353") && DNSServerAddress("127.0.0.1:5353")?.port == 5353)
        #expect(DNSServerAddress("[::1]:53")?.host == "::1")
        #expect(DNSServerAddress("::1")?.port == 53)
        #expect(DNSServerAddress("ns.example.com") == nil && DNSServerAddress("1.2.3.4:0") == nil)
        let dir = makeTempDir("dnscfg")
        try "listen=udp:127.0.0.1:0\ndns_server=\"resolver.example\"\nrequest_route { drop; }\n".write(toFile: dir + "/x.cfg", atomically: true, encoding: .utf8)
        #expect(throws: (any Error).self) { try ConfigLoader.load(file: dir + "/x.cfg", functions: ScriptFunctions.catalogue) }
    }
}
