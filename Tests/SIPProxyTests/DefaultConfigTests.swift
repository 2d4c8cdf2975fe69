import Foundation
import Testing

@Suite("The default config is closed", .serialized)
struct DefaultConfigAuthTests {
    @Test("an unauthenticated REGISTER gets 401 and binds nothing; with the password it binds")
    func register() throws {
        let pki = try TestPKI()
        let proxy = try defaultProxy(pki)
        defer { proxy.stop() }
        let none = Subprocess.run("python3", [Paths.peers + "/ua.py", "register", "--proto", "udp", "--port", String(proxy.port(.udp)), "--user", "alice", "--password", ""], timeout: 15)
        #expect(none.out.contains("RESPONSE SIP/2.0 401"), "\(none.out)")
        #expect(proxy.location.all().isEmpty)
        let wrong = digest(proxy, ["--user", "alice", "--password", "guess"])
        #expect(wrong.lines.contains("RESPONSE 401"), "\(wrong.out)")
        #expect(proxy.location.all().isEmpty)
        let ok = digest(proxy, ["--user", "alice", "--password", testPassword])
        #expect(ok.lines.contains("RESPONSE 200"), "\(ok.out)")
        #expect(proxy.location.bindings(for: "alice@localhost").count == 1)
    }

    @Test("INVITE from our domain without credentials gets 407; from elsewhere to elsewhere 403 Not relaying")
    func noRelay() throws {
        let pki = try TestPKI()
        let proxy = try defaultProxy(pki)
        defer { proxy.stop() }
        let call = Subprocess.run("python3", [Paths.peers + "/ua.py", "call", "--proto", "udp", "--port", String(proxy.port(.udp)), "--to", "alice", "--password", "", "--expect", "407"], timeout: 15)
        #expect(call.out.contains("RESPONSE 407"), "\(call.out)")
        #expect(call.status == 0)
        let relay = digest(proxy, ["--method", "MESSAGE", "--from-domain", "elsewhere.example", "--ruri", "sip:bob@other.example", "--to-user", "bob"])
        #expect(relay.lines.contains("RESPONSE 403"), "\(relay.out)")
        #expect(relay.lines.contains("REASON 403 Not relaying"), "\(relay.out)")
        // From elsewhere to one of ours is not refused here (it goes to lookup: 404).
        let inbound = digest(proxy, ["--method", "MESSAGE", "--from-domain", "elsewhere.example", "--to-user", "nobody"])
        #expect(inbound.lines.contains("RESPONSE 404"), "\(inbound.out)")
    }
}
