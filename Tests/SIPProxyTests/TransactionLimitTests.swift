import Foundation
import NIOCore
import SIPConfig
import SIPTransport
import Testing
@testable import SIPProxy

/// `max_transactions` and `max_transactions_per_ip`: the decision, the
/// per-source counter, and an INVITE storm towards a black hole.
@Suite("Transaction caps (issue 15)", .serialized)
struct TransactionLimitTests {
    @Test("the decision: in all first, then per source; below both admitted")
    func decision() {
        var l = TransactionLimits()
        l.total = 10
        l.perSource = 3
        #expect(l.admit(total: 0, fromSource: 0) == nil)
        #expect(l.admit(total: 9, fromSource: 2) == nil)
        #expect(l.admit(total: 10, fromSource: 0) == .total)
        #expect(l.admit(total: 10, fromSource: 3) == .total)
        #expect(l.admit(total: 5, fromSource: 3) == .perSource)
        #expect(l.admit(total: 5, fromSource: 99) == .perSource)
    }

    @Test("the config: defaults, values, refusal of values out of range")
    func config() throws {
        let route = "request_route { exit; }"
        let d = try ConfigLoader.load(text: route)
        #expect(d.transactions.maxTransactions == 400_000)
        #expect(d.transactions.maxTransactionsPerIP == 150_000)
        let c = try ConfigLoader.load(text: """
        modparam("tm", "max_transactions", 500)
        modparam("tm", "max_transactions_per_ip", 20)
        \(route)
        """)
        #expect(TransactionLimits(c.transactions) == { var l = TransactionLimits(); l.total = 500; l.perSource = 20; return l }())
        #expect(throws: ConfigErrors.self) { _ = try ConfigLoader.load(text: "modparam(\"tm\", \"max_transactions\", 0)\n" + route) }
        #expect(throws: ConfigErrors.self) { _ = try ConfigLoader.load(text: "modparam(\"tm\", \"max_transactions_per_ip\", -1)\n" + route) }
    }

    @Test("the per-source counter: never below the true count; back to zero when all end")
    func sourceCounter() {
        let c = SourceCounter()
        let a = SourceCounter.Cells(a: 1, b: 2)
        let b = SourceCounter.Cells(a: 1, b: 3)   // shares one counter with a
        let x = SourceCounter.Cells(a: 5, b: 2)   // shares a's other counter
        for i in 0..<7 { #expect(c.increment(a) == i) }
        for _ in 0..<4 { _ = c.increment(b) }
        for _ in 0..<2 { _ = c.increment(x) }
        // a's two counters hold 11 and 9: its estimate is 9, never below 7.
        #expect(c.estimate(a) == 9)
        #expect(c.estimate(b) == 4)
        #expect(c.estimate(x) == 2)
        // A source that shares neither counter starts at zero.
        #expect(c.estimate(SourceCounter.Cells(a: 7, b: 8)) == 0)
        for _ in 0..<7 { c.decrement(a) }
        #expect(c.estimate(b) == 4)
        for _ in 0..<4 { c.decrement(b) }
        for _ in 0..<2 { c.decrement(x) }
        #expect(c.estimate(a) == 0 && c.estimate(b) == 0 && c.estimate(x) == 0)
        // Cells are within the rows for any hash.
        for h in [0, -1, Int.min, Int.max, 12345] {
            let cells = SourceCounter.cells(hash: h)
            #expect((0..<SourceCounter.width).contains(cells.a) && (0..<SourceCounter.width).contains(cells.b))
        }
    }

    @Test("a source is counted by its address: IPv4 port ignored, IPv6 by its /64, IPv4-mapped as IPv4")
    func sourceKey() throws {
        let a1 = try SocketAddress(ipAddress: "192.0.2.7", port: 5060)
        let a2 = try SocketAddress(ipAddress: "192.0.2.7", port: 40000)
        let b = try SocketAddress(ipAddress: "192.0.2.8", port: 5060)
        #expect(a1.limitKeyHash == a2.limitKeyHash)
        #expect(a1.limitKeyHash != b.limitKeyHash)
        let v6a = try SocketAddress(ipAddress: "2001:db8:1:2::1", port: 5060)
        let v6b = try SocketAddress(ipAddress: "2001:db8:1:2:ffff::9", port: 5070)
        let v6c = try SocketAddress(ipAddress: "2001:db8:1:3::1", port: 5060)
        #expect(v6a.limitKeyHash == v6b.limitKeyHash)
        #expect(v6a.limitKeyHash != v6c.limitKeyHash)
        let mapped = try SocketAddress(ipAddress: "::ffff:192.0.2.7", port: 5060)
        #expect(mapped.limitKeyHash == a1.limitKeyHash)
    }

    /// A UDP socket on loopback that is never read: requests sent to it
    /// are never answered (a black hole).
    final class BlackHole {
        let fd: Int32
        let port: UInt16
        init() throws {
            let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
            self.fd = fd
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            addr.sin_port = 0
            var len = socklen_t(MemoryLayout<sockaddr_in>.size)
            let ok = withUnsafeMutablePointer(to: &addr) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
            }
            guard ok else { close(fd); throw POSIXError(.EADDRNOTAVAIL) }
            port = UInt16(bigEndian: addr.sin_port)
        }
        deinit { close(fd) }
    }

    static func storm(port: UInt16, count: Int, source: String) -> [String: Int] {
        let r = Subprocess.run("python3", [Paths.peers + "/invitestorm.py", "--port", String(port), "--count", String(count), "--source", source, "--wait", "3"], timeout: 90)
        var out: [String: Int] = [:]
        for line in r.out.split(separator: "\n") {
            let w = line.split(separator: " ")
            if w.count == 3, w[0] == "STATUS", let n = Int(w[2]) { out[String(w[1])] = n }
            if w.count == 2, w[0] == "RETRY-AFTER", let n = Int(w[1]) { out["retry-after"] = n }
        }
        return out
    }

    static func metric(_ proxy: TestProxy, _ sample: String) -> Int? {
        let text = String(decoding: proxy.core.metrics.render(core: proxy.core), as: UTF8.self)
        for line in text.split(separator: "\n") where line.hasPrefix(sample + " ") {
            return Int(line.dropFirst(sample.count + 1).trimmingCharacters(in: .whitespaces))
        }
        return nil
    }

    @Test("t_newtran at the cap returns -1 with last error 503: sl_reply_error answers 503 with Retry-After, once")
    func newtranAtCap() throws {
        // Transactions the script makes and never answers are held (until
        // their timers end them): the first request takes the only place.
        let proxy = try TestProxy("""
        listen=tcp:127.0.0.1:0
        loadmodule "tm.so"
        loadmodule "sl.so"
        modparam("tm", "max_transactions", 1)
        request_route { if (!t_newtran()) { sl_reply_error(); exit; } exit; }
        """)
        defer { proxy.stop() }
        let r = Self.storm(port: proxy.port(.tcp), count: 3, source: "127.0.0.1")
        #expect(r["503"] == 2 && r["retry-after"] == 2, "\(r)")
        #expect(proxy.core.activeTransactions == 1)
        #expect(Self.metric(proxy, "swiftser_tm_refused_transactions_total{limit=\"max_transactions\"}") == 2)
    }

    @Test("an INVITE storm towards a black hole stops at the caps with 503 and Retry-After; the state stays bounded and is given back")
    func inviteStorm() throws {
        let hole = try BlackHole()
        // Short timers so the held transactions end within the test: Timer
        // B after 5 s, then the 408 waits 64×T1 = 12.8 s for an ACK.
        let proxy = try TestProxy("""
        listen=udp:127.0.0.1:0
        listen=tcp:127.0.0.1:0
        loadmodule "tm.so"
        loadmodule "sl.so"
        modparam("tm", "max_transactions", 300)
        modparam("tm", "max_transactions_per_ip", 200)
        modparam("tm", "fr_timer", 5000)
        modparam("tm", "t1", 200)
        modparam("tm", "t2", 800)
        request_route { $du = "sip:127.0.0.1:\(hole.port)"; if (!t_relay()) { sl_reply_error(); } exit; }
        """)
        defer { proxy.stop() }
        // The storm comes over TCP (nothing lost on the way: exact counts);
        // the branches go over UDP to the black hole.
        let port = proxy.port(.tcp)
        let perIP = "swiftser_tm_refused_transactions_total{limit=\"max_transactions_per_ip\"}"
        let total = "swiftser_tm_refused_transactions_total{limit=\"max_transactions\"}"

        // One source: 400 INVITEs, 200 held, 200 refused by the per-source cap.
        let first = Self.storm(port: port, count: 400, source: "127.0.0.1")
        #expect(eventually { proxy.core.activeTransactions == 200 && Self.metric(proxy, perIP) == 200 },
                "\(proxy.core.activeTransactions) \(String(describing: Self.metric(proxy, perIP))) \(first)")
        #expect(Self.metric(proxy, total) == 0)
        // What reached the client: 100 Trying for the held ones, 503 with
        // Retry-After for the refused ones.
        #expect((first["503"] ?? 0) >= 1 && first["503"] == first["retry-after"], "\(first)")
        #expect((first["100"] ?? 0) <= 200 && (first["503"] ?? 0) <= 200, "\(first)")

        // A second source gets its share until the cap in all: 100 more held, 50 refused.
        let second = Self.storm(port: port, count: 150, source: "127.0.0.2")
        #expect(eventually { proxy.core.activeTransactions == 300 && Self.metric(proxy, total) == 50 },
                "\(proxy.core.activeTransactions) \(String(describing: Self.metric(proxy, total))) \(second)")
        #expect(Self.metric(proxy, perIP) == 200)
        #expect((second["503"] ?? 0) >= 1 && second["503"] == second["retry-after"], "\(second)")

        // More of the storm changes nothing held (the cap in all is met first).
        _ = Self.storm(port: port, count: 100, source: "127.0.0.1")
        #expect(eventually { Self.metric(proxy, total) == 150 }, "\(String(describing: Self.metric(proxy, total)))")
        #expect(proxy.core.activeTransactions == 300)
        #expect(Self.metric(proxy, perIP) == 200)

        // Every transaction ends (408 after Timer B, then Timer H), giving
        // its place back: the first source is admitted again.
        #expect(eventually(60) { proxy.core.activeTransactions == 0 }, "\(proxy.core.activeTransactions) still held")
        let again = Self.storm(port: port, count: 1, source: "127.0.0.1")
        #expect(again["100"] == 1 && again["503"] == nil, "\(again)")
        #expect(eventually { proxy.core.activeTransactions == 1 })
    }
}
