import Foundation
import NIOConcurrencyHelpers
import SIPConfig
@testable import SIPProxy
import Testing

/// A clock the test moves.
final class TestClock: Sendable {
    let ms = NIOLockedValueBox<UInt64>(1_000)
    func advance(seconds: UInt64) { ms.withLockedValue { $0 += seconds * 1000 } }
    var now: @Sendable () -> UInt64 { { [ms] in ms.withLockedValue { $0 } } }
}

@Suite("htable: $sht tables with expiry and a cap")
struct HTableTests {
    func spec(_ text: String) throws -> HTableSpec {
        let c = try ConfigLoader.load(text: "modparam(\"htable\", \"htable\", \"\(text)\")\nrequest_route { drop; }\n",
                                      functions: ScriptFunctions.catalogue)
        return try #require(c.htables.first)
    }

    @Test("Kamailio's declaration syntax; bad attributes are refused")
    func declaration() throws {
        let s = try spec("ipban=>size=8;autoexpire=300;")
        #expect(s.name == "ipban" && s.size == 8 && s.autoexpire == 300 && s.initval == nil && s.updateExpire)
        #expect(s.capacity == 256 * HTableSpec.entriesPerSlot)
        let t = try spec("cnt=>initval=0;updateexpire=0")
        #expect(t.size == 4 && t.initval == 0 && !t.updateExpire)
        for bad in ["nosize", "x=>size=40;", "x=>colour=red;", "x=>autoexpire=-1;"] {
            #expect(throws: ConfigErrors.self) { _ = try spec(bad) }
        }
    }

    @Test("the checker knows the declared tables")
    func checker() {
        #expect(throws: ConfigErrors.self) {
            _ = try ConfigLoader.load(text: "request_route { $sht(nowhere=>a) = 1; }\n", functions: ScriptFunctions.catalogue)
        }
        #expect(throws: ConfigErrors.self) {
            _ = try ConfigLoader.load(text: "modparam(\"htable\", \"htable\", \"a=>size=2;\")\nrequest_route { $sht(a) = 1; }\n",
                                      functions: ScriptFunctions.catalogue)
        }
    }

    @Test("get, set, delete, expiry (restarted by an update unless updateexpire=0), initval")
    func values() {
        let clock = TestClock()
        var s = HTableSpec(name: "t")
        s.autoexpire = 10
        let t = HTable(s, now: clock.now)
        #expect(t.get("a") == nil)
        #expect(t.set("a", .int(1)) && t.set("b", .str("x")))
        #expect(t.get("a") == .int(1) && t.get("b") == .str("x"))
        clock.advance(seconds: 6)
        t.set("a", .int(2))                       // restarts a's 10 s
        clock.advance(seconds: 6)
        #expect(t.get("a") == .int(2))
        #expect(t.get("b") == nil)                // set 12 s ago: expired
        #expect(t.remove("a") && t.get("a") == nil && !t.remove("a"))

        var fixed = HTableSpec(name: "f")
        fixed.autoexpire = 10
        fixed.updateExpire = false
        fixed.initval = 0
        let f = HTable(fixed, now: clock.now)
        f.set("k", .int(1))
        clock.advance(seconds: 6)
        f.set("k", .int(2))
        clock.advance(seconds: 6)
        #expect(f.get("k") == .int(0))            // expired at 10 s: initval
        #expect(f.get("other") == .int(0))
    }

    @Test("bounded: a full table drops expired entries first, then refuses new keys but updates old ones")
    func bounded() {
        let clock = TestClock()
        var s = HTableSpec(name: "small")
        s.size = 1                                 // 2 slots: 2 shards
        s.autoexpire = 5
        let t = HTable(s, now: clock.now)
        #expect(t.capacity == 2 * HTableSpec.entriesPerSlot)
        var stored = 0
        for i in 0..<(t.capacity * 2) where t.set("k\(i)", .int(i)) { stored += 1 }
        #expect(stored <= t.capacity && stored >= t.capacity / 2)
        #expect(t.count == stored)
        let old = t.entries().first!.key
        #expect(t.set(old, .int(-1)) && t.get(old) == .int(-1))
        clock.advance(seconds: 6)                  // all expired: room again
        var again = 0
        for i in 0..<(t.capacity * 2) where t.set("n\(i)", .int(i)) { again += 1 }
        #expect(again == stored)
        #expect(t.count <= t.capacity)
    }

    @Test("threads setting and reading different keys together lose nothing")
    func concurrent() async {
        var s = HTableSpec(name: "c")
        s.size = 8
        let t = HTable(s)
        await withTaskGroup(of: Void.self) { g in
            for w in 0..<8 {
                g.addTask {
                    for i in 0..<500 {
                        t.set("w\(w)-\(i)", .int(i))
                        _ = t.get("w\((w + 1) % 8)-\(i)")
                    }
                }
            }
        }
        #expect(t.count == 4000)
        #expect(t.get("w3-499") == .int(499))
    }

    @Test("a ban list in the script: $sht set, read, deleted with $null and sht_rm; htable.dump and htable.delete")
    func script() throws {
        let proxy = try TestProxy("""
        listen=udp:127.0.0.1:0
        loadmodule "sl.so"
        loadmodule "htable.so"
        loadmodule "textops.so"
        modparam("htable", "htable", "ipban=>size=8;autoexpire=300;")
        modparam("htable", "htable", "seen=>size=4;initval=0;")
        request_route {
            $sht(seen=>$si) = $sht(seen=>$si) + 1;
            if ($sht(ipban=>$si) != $null) { sl_send_reply("403", "Banned $sht(ipban=>$si)"); exit; }
            if (is_present_hf("X-Ban")) { $sht(ipban=>$si) = "by header"; sl_send_reply("200", "Now banned"); exit; }
            sl_send_reply("200", "Seen $sht(seen=>$si)");
        }
        """)
        defer { proxy.stop() }
        let dir = makeTempDir("htable")
        func send(ban: Bool) throws -> [String] {
            let f = dir + "/\(UUID().uuidString).sip"
            try SanityTests.request(headers: ban ? ["X-Ban: yes"] : []).write(toFile: f, atomically: true, encoding: .utf8)
            return Subprocess.sipclient(["--proto", "udp", "--port", String(proxy.port(.udp)), "--file", f, "--wait", "3"]).lines
        }
        #expect(try send(ban: false) == ["RESPONSE SIP/2.0 200 Seen 1"])
        #expect(try send(ban: false) == ["RESPONSE SIP/2.0 200 Seen 2"])
        #expect(try send(ban: true) == ["RESPONSE SIP/2.0 200 Now banned"])
        #expect(try send(ban: false) == ["RESPONSE SIP/2.0 403 Banned by header"])

        let path = proxy.config.core.controlSocket
        let dump = ControlSocket.call(path, "htable.dump", ["ipban"])["result"] as? [[String: Any]]
        #expect(dump?.count == 1 && dump?.first?["name"] as? String == "127.0.0.1" && dump?.first?["value"] as? String == "by header",
                "\(String(describing: dump))")
        #expect((dump?.first?["expires"] as? Int).map { $0 > 0 && $0 <= 300 } == true)
        #expect(ControlSocket.call(path, "htable.delete", ["ipban", "127.0.0.1"])["result"] as? String == "ok")
        #expect(try send(ban: false) == ["RESPONSE SIP/2.0 200 Seen 5"])
        #expect(ControlSocket.errorCode(ControlSocket.call(path, "htable.dump", ["nowhere"])) == 404)
    }

    @Test("$sht(t=>k) = $null and sht_rm delete; sht_reset empties")
    func deleting() throws {
        let proxy = try TestProxy("""
        listen=udp:127.0.0.1:0
        modparam("htable", "htable", "t=>size=2;")
        request_route {
            $sht(t=>a) = 1; $sht(t=>b) = 2; $sht(t=>c) = 3;
            $sht(t=>a) = $null;
            sht_rm("t", "b");
            if ($sht(t=>a) == $null && $sht(t=>b) == $null && $sht(t=>c) == 3) {
                sht_reset("t");
                if ($sht(t=>c) == $null) { sl_send_reply("200", "Deleted"); exit; }
            }
            sl_send_reply("500", "Still there");
        }
        """)
        defer { proxy.stop() }
        let r = Subprocess.sipclient(["--proto", "udp", "--port", String(proxy.port(.udp)), "--options", "--wait", "3"])
        #expect(r.lines == ["RESPONSE SIP/2.0 200 Deleted"], "\(r.out)")
    }
}
