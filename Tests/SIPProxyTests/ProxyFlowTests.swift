import Foundation
import SIPConfig
import SIPProxy
import Testing

/// The users defaultProxy adds to the subscriber table (domain localhost),
/// all with this password, which Tests/Peers/ua.py answers challenges with.
let testUsers = ["alice", "bob", "carol", "dave", "erin", "frank", "mallory", "tess", "uma", "caller", "sipsak"]
let testPassword = "test-password"

/// A proxy with UDP, TCP and TLS listeners and the default script (which
/// authenticates: the test users are added).
func defaultProxy(_ pki: TestPKI, extra: String = "", script: String? = nil, locationFile: String? = nil, dir: String? = nil) throws -> TestProxy {
    try pki.issue("server", cn: "localhost", dns: ["localhost"], ips: ["127.0.0.1"], sip: ["sip:localhost"])
    let modules = """
    loadmodule "sl.so"
    loadmodule "tm.so"
    loadmodule "rr.so"
    loadmodule "maxfwd.so"
    loadmodule "registrar.so"
    loadmodule "usrloc.so"
    loadmodule "textops.so"
    loadmodule "siputils.so"
    loadmodule "xlog.so"
    loadmodule "tls.so"
    loadmodule "auth.so"
    loadmodule "auth_db.so"
    loadmodule "pike.so"
    loadmodule "sanity.so"
    modparam("usrloc", "db_mode", \(locationFile == nil ? 0 : 1))
    """
    let proxy = try TestProxy("""
    listen=udp:127.0.0.1:0
    listen=tcp:127.0.0.1:0
    listen=tls:127.0.0.1:0
    alias="localhost"
    tls_certificate="\(pki.dir)/server.pem"
    tls_private_key="\(pki.dir)/server.key"
    tls_ca_list="\(pki.caFile)"
    \(extra)
    \(modules)
    \(script ?? defaultScript())
    """, dir: dir, locationFile: locationFile)
    for u in testUsers {
        try proxy.core.subscribers.put(.make(username: u, domain: "localhost", password: testPassword, keepPassword: false))
    }
    return proxy
}

@Suite("Proxy flows across UDP, TCP and TLS", .serialized)
struct ProxyFlowTests {
    @Test("a phone registers over TLS; a UDP caller reaches it over that TLS connection; 180/200/ACK/BYE cross back")
    func tlsPhoneUdpCaller() throws {
        let pki = try TestPKI()
        let proxy = try defaultProxy(pki)
        defer { proxy.stop() }
        let phone = try Background.ua(["phone", "--proto", "tls", "--port", String(proxy.port(.tls)), "--ca", pki.caFile, "--user", "alice", "--duration", "8"])
        defer { phone.stop() }
        #expect(phone.wait(for: "REGISTERED"), "\(phone.lines) \(proxy.log.lines)")
        let caller = Subprocess.run("python3", [Paths.peers + "/ua.py", "call", "--proto", "udp", "--port", String(proxy.port(.udp)), "--to", "alice"], timeout: 20)
        #expect(caller.out.contains("RESPONSE 100"), "\(caller.out)")
        #expect(caller.out.contains("RESPONSE 180"), "\(caller.out)")
        #expect(caller.out.contains("RESPONSE 200"), "\(caller.out)")
        // TLS on one leg, UDP on the other: two Record-Route values (r2=on).
        #expect(caller.out.contains("CALL-OK routes 2"), "\(caller.out)")
        #expect(caller.out.contains("BYE-OK"), "\(caller.out) \(proxy.log.lines)")
        #expect(phone.wait(for: "ACK-RECEIVED"))
        #expect(phone.wait(for: "BYE-RECEIVED"))
        #expect(phone.lines.contains { $0.contains("INVITE-RECEIVED") && $0.contains("rr 2") }, "\(phone.lines)")
    }

    @Test("an unregistered user gets 404; OPTIONS to the proxy gets 200")
    func notFound() throws {
        let pki = try TestPKI()
        let proxy = try defaultProxy(pki)
        defer { proxy.stop() }
        let caller = Subprocess.run("python3", [Paths.peers + "/ua.py", "call", "--proto", "tcp", "--port", String(proxy.port(.tcp)), "--to", "nobody", "--expect", "404"], timeout: 15)
        #expect(caller.out.contains("RESPONSE 404"), "\(caller.out)")
        #expect(caller.status == 0)
        let options = Subprocess.sipclient(["--proto", "udp", "--port", String(proxy.port(.udp)), "--options"])
        #expect(options.out.contains("RESPONSE SIP/2.0 200 OK"), "\(options.out)")
    }

    @Test("CANCEL reaches the ringing phone; the caller gets 487")
    func cancel() throws {
        let pki = try TestPKI()
        let proxy = try defaultProxy(pki)
        defer { proxy.stop() }
        let phone = try Background.ua(["phone", "--proto", "tcp", "--port", String(proxy.port(.tcp)), "--user", "alice", "--answer", "ring", "--duration", "8"])
        defer { phone.stop() }
        #expect(phone.wait(for: "REGISTERED"))
        let caller = Subprocess.run("python3", [Paths.peers + "/ua.py", "call", "--proto", "udp", "--port", String(proxy.port(.udp)), "--to", "alice", "--cancel", "--expect", "487"], timeout: 20)
        #expect(caller.out.contains("RESPONSE 487"), "\(caller.out) \(proxy.log.lines)")
        #expect(phone.wait(for: "CANCEL-RECEIVED"), "\(phone.lines)")
    }

    @Test("a silent destination times out with 408 and failure_route reroutes (serial forking)")
    func failureRoute() throws {
        let pki = try TestPKI()
        let script = """
        modparam("tm", "fr_timer", 1500)
        request_route {
            if (is_method("REGISTER")) { save("location"); exit; }
            if (is_method("ACK") || is_method("BYE")) { if (loose_route()) { t_relay(); exit; } t_relay(); exit; }
            if (!lookup("location")) { sl_send_reply("404", "Not Found"); exit; }
            record_route();
            t_on_failure("NEXT");
            t_relay();
        }
        failure_route[NEXT] {
            if (t_check_status("408")) {
                $ru = "sip:bob@localhost";
                if (lookup("location")) { t_relay(); }
            }
        }
        """
        let proxy = try defaultProxy(pki, script: script)
        defer { proxy.stop() }
        let silent = try Background.ua(["phone", "--proto", "udp", "--port", String(proxy.port(.udp)), "--user", "alice", "--answer", "silent", "--duration", "10"])
        defer { silent.stop() }
        let bob = try Background.ua(["phone", "--proto", "tls", "--port", String(proxy.port(.tls)), "--user", "bob", "--duration", "10"])
        defer { bob.stop() }
        #expect(silent.wait(for: "REGISTERED") && bob.wait(for: "REGISTERED"))
        let caller = Subprocess.run("python3", [Paths.peers + "/ua.py", "call", "--proto", "udp", "--port", String(proxy.port(.udp)), "--to", "alice", "--timeout", "15"], timeout: 25)
        #expect(silent.wait(for: "INVITE-RECEIVED"))
        #expect(bob.wait(for: "INVITE-RECEIVED"), "\(proxy.log.lines)")
        #expect(caller.out.contains("RESPONSE 200"), "\(caller.out)")
    }

    @Test("parallel forking: two contacts ring, the first 200 wins, the other is cancelled")
    func parallelFork() throws {
        let pki = try TestPKI()
        let proxy = try defaultProxy(pki)
        defer { proxy.stop() }
        let a = try Background.ua(["phone", "--proto", "udp", "--port", String(proxy.port(.udp)), "--user", "carol", "--answer", "ring", "--duration", "10"])
        defer { a.stop() }
        #expect(a.wait(for: "REGISTERED"))
        let b = try Background.ua(["phone", "--proto", "tls", "--port", String(proxy.port(.tls)), "--user", "carol", "--answer", "200", "--duration", "10"])
        defer { b.stop() }
        #expect(b.wait(for: "REGISTERED"))
        let caller = Subprocess.run("python3", [Paths.peers + "/ua.py", "call", "--proto", "tcp", "--port", String(proxy.port(.tcp)), "--to", "carol"], timeout: 20)
        #expect(caller.out.contains("RESPONSE 200"), "\(caller.out)")
        #expect(a.wait(for: "INVITE-RECEIVED") && b.wait(for: "INVITE-RECEIVED"))
        #expect(a.wait(for: "CANCEL-RECEIVED"), "\(a.lines)")
    }

    @Test("sips: reaches a TLS contact, and is never downgraded to a UDP one (RFC 5630)")
    func sips() throws {
        let pki = try TestPKI()
        let proxy = try defaultProxy(pki)
        defer { proxy.stop() }
        let udpPhone = try Background.ua(["phone", "--proto", "udp", "--port", String(proxy.port(.udp)), "--user", "uma", "--duration", "8"])
        defer { udpPhone.stop() }
        let tlsPhone = try Background.ua(["phone", "--proto", "tls", "--port", String(proxy.port(.tls)), "--user", "tess", "--duration", "8"])
        defer { tlsPhone.stop() }
        #expect(udpPhone.wait(for: "REGISTERED") && tlsPhone.wait(for: "REGISTERED"))
        let toUDP = Subprocess.run("python3", [Paths.peers + "/ua.py", "call", "--proto", "tls", "--port", String(proxy.port(.tls)), "--to", "uma", "--scheme", "sips", "--expect", "480"], timeout: 15)
        #expect(toUDP.out.contains("RESPONSE 480"), "\(toUDP.out)")
        #expect(!udpPhone.lines.contains { $0.contains("INVITE-RECEIVED") })
        let toTLS = Subprocess.run("python3", [Paths.peers + "/ua.py", "call", "--proto", "tls", "--port", String(proxy.port(.tls)), "--to", "tess", "--scheme", "sips"], timeout: 15)
        #expect(toTLS.out.contains("BYE-OK"), "\(toTLS.out)")
    }

    @Test("registrar: several contacts, 423 below min_expires, removal with Expires 0")
    func registrar() throws {
        let pki = try TestPKI()
        let proxy = try defaultProxy(pki, extra: "")
        defer { proxy.stop() }
        let port = String(proxy.port(.udp))
        let two = Subprocess.run("python3", [Paths.peers + "/ua.py", "register", "--port", port, "--user", "dave", "--contacts", "2"])
        #expect(two.out.contains("RESPONSE SIP/2.0 200 OK"), "\(two.out)")
        #expect(two.lines.filter { $0.hasPrefix("CONTACT") }.count == 2)
        let brief = Subprocess.run("python3", [Paths.peers + "/ua.py", "register", "--port", port, "--user", "dave", "--expires", "10"])
        #expect(brief.out.contains("RESPONSE SIP/2.0 423"), "\(brief.out)")
        #expect(proxy.location.bindings(for: "dave@localhost").count == 2)
    }

    @Test("a restart keeps the registrations (SQLite location store)")
    func restartKeepsBindings() throws {
        let pki = try TestPKI()
        let dir = makeTempDir("restart")
        let db = dir + "/location.sqlite"
        do {
            let proxy = try defaultProxy(pki, locationFile: db, dir: dir)
            let r = Subprocess.run("python3", [Paths.peers + "/ua.py", "register", "--port", String(proxy.port(.udp)), "--user", "erin", "--contacts", "2"])
            #expect(r.out.contains("200 OK"))
            proxy.stop()
        }
        let again = try defaultProxy(pki, locationFile: db, dir: dir)
        defer { again.stop() }
        #expect(again.location.bindings(for: "erin@localhost").count == 2)
    }
}
