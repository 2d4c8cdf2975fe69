import Foundation
@testable import SIPProxy
import Testing

@Suite("pike and address ranges")
struct AbuseTests {
    @Test("pike table: over the density a source is blocked; the block lasts while it floods and then expires")
    func pikeTable() {
        let t = PikeTable(windowMs: 1000, density: 3, removeLatencyMs: 5000, capacity: 100)
        #expect(!t.hit("a", now: 10) && !t.hit("a", now: 20) && !t.hit("a", now: 30))
        #expect(t.hit("a", now: 40))              // 4th in the window
        #expect(!t.hit("b", now: 50))             // another source is served
        #expect(t.hit("a", now: 900))
        #expect(t.hit("a", now: 1100))            // new window, but the last one flooded
        #expect(!t.hit("a", now: 3200))           // a quiet window later: free again
        #expect(!t.hit("a", now: 3300))
    }

    @Test("pike table is bounded: a full table tracks no new source until idle ones are dropped")
    func pikeBounded() {
        let t = PikeTable(windowMs: 1000, density: 1, removeLatencyMs: 2000, capacity: 2)
        _ = t.hit("a", now: 1)
        _ = t.hit("b", now: 1)
        #expect(!t.hit("c", now: 2) && !t.hit("c", now: 3))   // not tracked, so never blocked
        #expect(t.count == 2)
        #expect(!t.hit("c", now: 5000))                         // a and b idle: dropped, c tracked
        #expect(t.hit("c", now: 5001))
        #expect(t.count == 1)
    }

    @Test("address ranges: IPv4 and IPv6 prefixes, plain addresses, mapped IPv4, bad text")
    func networks() throws {
        let v4 = try #require(IPNetwork("10.0.0.0/8"))
        #expect(v4.contains("10.200.3.4") && !v4.contains("11.0.0.1") && v4.contains("::ffff:10.1.2.3") && !v4.contains("::1"))
        let odd = try #require(IPNetwork("192.168.1.128/25"))
        #expect(odd.contains("192.168.1.200") && !odd.contains("192.168.1.127"))
        #expect(IPNetwork("0.0.0.0/0")?.contains("203.0.113.9") == true)
        #expect(IPNetwork("127.0.0.1")?.contains("127.0.0.1") == true)
        #expect(IPNetwork("127.0.0.1")?.contains("127.0.0.2") == false)
        let v6 = try #require(IPNetwork("2001:db8::/32"))
        #expect(v6.contains("2001:db8:1::5") && v6.contains("[2001:0db8::1]") && !v6.contains("2001:db9::1") && !v6.contains("10.0.0.1"))
        #expect(IPNetwork("[::1]")?.contains("::1") == true)
        for bad in ["", "10.0.0.0/33", "::/129", "10.0.0/8", "host.example", "10.0.0.0/-1", "10.0.0.0/x", "1.2.3.4/8/8"] {
            #expect(IPNetwork(bad) == nil, "\(bad)")
        }
    }

    @Test("pike_check_req blocks a flood from 127.0.0.1 while ::1 is served; src_ip == CIDR, quoted and not")
    func pikeAndCIDR() throws {
        let proxy = try TestProxy("""
        listen=udp:127.0.0.1:0
        listen=udp:[::1]:0
        loadmodule "sl.so"
        loadmodule "pike.so"
        modparam("pike", "sampling_time_unit", 60)
        modparam("pike", "reqs_density_per_unit", 5)
        request_route {
            if (!pike_check_req()) { sl_send_reply("503", "Flooding"); exit; }
            if (src_ip == 127.0.0.0/8) { sl_send_reply("200", "v4 loopback"); exit; }
            if (src_ip == "::1/128" && $si != "::2") { sl_send_reply("200", "v6 loopback"); exit; }
            sl_send_reply("403", "elsewhere");
        }
        """)
        defer { proxy.stop() }
        let v4 = proxy.port(.udp)
        let v6 = proxy.port(.udp, ipv6: true)
        let flood = Subprocess.run("python3", [Paths.peers + "/udpflood.py", "--host", "127.0.0.1", "--port", String(v4), "--count", "12"], timeout: 15)
        #expect(flood.lines.filter { $0 == "RESPONSE 200 v4 loopback" }.count == 5, "\(flood.out)")
        #expect(flood.lines.filter { $0 == "RESPONSE 503 Flooding" }.count == 7, "\(flood.out)")
        let other = Subprocess.run("python3", [Paths.peers + "/udpflood.py", "--host", "::1", "--port", String(v6), "--count", "1"], timeout: 15)
        #expect(other.lines == ["RESPONSE 200 v6 loopback"], "\(other.out)")
    }
}
