import Foundation
import NIOCore
import NIOPosix
import SIPConfig
import SIPTransport
import Testing

/// The c-ares DNS client against a DNS server the test starts on loopback:
/// forged answers are ignored, the cache and the look-ups in progress are bounded.
@Suite("DNS client: off-path spoofing and bounds (issue 15)", .serialized)
struct DNSResolverTests {
    func server(_ zone: [String: [String: [Any]]], _ flags: [String] = []) throws -> (Background, UInt16) {
        let port = freePort()
        let json = String(decoding: try JSONSerialization.data(withJSONObject: zone), as: UTF8.self)
        let s = try Background("python3", [Paths.peers + "/dnsserver.py", "--port", String(port), "--zone", json] + flags)
        #expect(s.wait(for: "READY"))
        return (s, port)
    }

    func client(port: UInt16, _ tweak: (inout DNSSettings) -> Void = { _ in }) -> (DNSClient, MultiThreadedEventLoopGroup) {
        var s = DNSSettings()
        s.server = DNSServerAddress("127.0.0.1:\(port)")
        tweak(&s)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        return (DNSClient(settings: s, group: group), group)
    }

    @Test("forged answers (another ID, another question, another source port) are ignored; the real one is taken")
    func spoofIgnored() throws {
        let (dns, port) = try server([
            "_sip._udp.spoof.test": ["SRV": [[10, 0, 5080, "real.spoof.test"]]],
            "real.spoof.test": ["A": ["127.0.0.1"]],
            "spoof.test": ["NAPTR": [[10, 10, "s", "SIP+D2T", "", "_sip._tcp.spoof.test"]]],
        ], ["--spoof"])
        defer { dns.stop() }
        let (c, group) = client(port: port)
        defer { c.close(); try? group.syncShutdownGracefully() }
        let srv = try c.lookup("_sip._udp.spoof.test", .srv).wait()
        #expect(srv.srv.map(\.port) == [5080] && srv.srv.map(\.target) == ["real.spoof.test"], "\(srv)")
        let a = try c.addresses(of: "real.spoof.test").wait()
        #expect(a == ["127.0.0.1"])
        let naptr = try c.lookup("spoof.test", .naptr).wait()
        #expect(naptr.naptr.map(\.replacement) == ["_sip._tcp.spoof.test"])
        // The server did send the forgeries, before each real answer (its
        // output comes through a pipe read on another thread: wait for it).
        let printed = Date().addingTimeInterval(10)
        while dns.lines.filter({ $0 == "SPOOFED 3" }).count < 3 && Date() < printed { usleep(10_000) }
        #expect(dns.lines.filter { $0 == "SPOOFED 3" }.count == 3, "\(dns.lines)")
        #expect(c.counters.queries == 3 && c.counters.errors == 0 && c.counters.timeouts == 0, "\(c.counters)")
        // Answered again from the cache: no new query.
        _ = try c.lookup("_sip._udp.spoof.test", .srv).wait()
        #expect(c.counters.queries == 3 && c.counters.cacheHits == 1)
    }

    @Test("dns_cache_max_entries bounds the cache; an expired answer is swept")
    func cacheBound() throws {
        let (dns, port) = try server(["a.test": ["A": ["127.0.0.1"]]])
        defer { dns.stop() }
        let (c, group) = client(port: port) { $0.maxCacheEntries = 4 }
        defer { c.close(); try? group.syncShutdownGracefully() }
        for i in 0..<12 {
            let a = try c.lookup("n\(i).a.test", .a).wait()
            #expect(a.responseCode == 3)   // NXDOMAIN, cached as well
            #expect(c.counters.cacheEntries <= 4, "\(c.counters)")
        }
        #expect(c.counters.evictions > 0 && c.counters.queries == 12, "\(c.counters)")
        #expect(try c.addresses(of: "a.test").wait() == ["127.0.0.1"])
        #expect(c.counters.cacheEntries <= 4)
    }

    @Test("dns_max_pending: look-ups beyond it fail at once; one question asked twice is one query; a silent server ends in a timeout")
    func pendingBound() throws {
        let (dns, port) = try server([:], ["--silent"])
        defer { dns.stop() }
        let (c, group) = client(port: port) {
            $0.maxPending = 2
            $0.timeoutMs = 300
            $0.tries = 1
        }
        defer { c.close(); try? group.syncShutdownGracefully() }
        let first = c.lookup("one.silent.test", .srv)
        let again = c.lookup("one.silent.test", .srv)   // shares the first's query
        let second = c.lookup("two.silent.test", .srv)
        let third = c.lookup("three.silent.test", .srv)
        #expect(throws: DNSError.self) { _ = try third.wait() }
        #expect(c.counters.refused == 1 && c.counters.pending == 2 && c.counters.queries == 2, "\(c.counters)")
        // Nobody answers: each ends as an empty SERVFAIL answer (cached for 30 s).
        for f in [first, again, second] { #expect(try f.wait().responseCode == 2) }
        #expect(c.counters.timeouts == 2 && c.counters.pending == 0, "\(c.counters)")
        // A place is free again.
        #expect(try c.lookup("four.silent.test", .srv).wait().responseCode == 2)
    }

    @Test("system resolver (getaddrinfo) look-ups share dns_max_pending and the counters with c-ares queries")
    func systemResolverBounded() throws {
        let (dns, port) = try server([:], ["--silent"])
        defer { dns.stop() }
        let (c, group) = client(port: port) {
            $0.maxPending = 1
            $0.timeoutMs = 300
            $0.tries = 1
        }
        defer { c.close(); try? group.syncShutdownGracefully() }
        let loop = group.next()
        // The one place is held by a query nobody answers: getaddrinfo is refused at once.
        let held = c.lookup("held.silent.test", .srv)
        #expect(throws: DNSError.self) { _ = try c.systemAddress(of: "localhost", port: 5060, on: loop).wait() }
        #expect(c.counters.refused == 1 && c.counters.pending == 1, "\(c.counters)")
        _ = try held.wait()
        // Free again: /etc/hosts answers (nothing leaves the machine), counted as a query.
        let a = try c.systemAddress(of: "localhost", port: 5060, on: loop).wait()
        #expect(a.port == 5060)
        #expect(c.counters.queries == 2 && c.counters.pending == 0, "\(c.counters)")
    }
}
