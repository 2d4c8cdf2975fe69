import Foundation
import Testing
@testable import SIPProxy

@Suite("Registrar limits", .serialized)
struct RegistrarLimitTests {
    @Test("max_contacts (default 10): 10 contacts bind; 11 in one REGISTER, or an 11th in all, get 403")
    func maxContacts() throws {
        let pki = try TestPKI()
        let proxy = try defaultProxy(pki)
        defer { proxy.stop() }
        let port = String(proxy.port(.udp))
        let ten = Subprocess.run("python3", [Paths.peers + "/ua.py", "register", "--port", port, "--user", "carol", "--contacts", "10"])
        #expect(ten.out.contains("RESPONSE SIP/2.0 200"), "\(ten.out)")
        #expect(proxy.location.bindings(for: "carol@localhost").count == 10)
        let eleven = Subprocess.run("python3", [Paths.peers + "/ua.py", "register", "--port", port, "--user", "carol", "--contacts", "11"])
        #expect(eleven.out.contains("RESPONSE SIP/2.0 403"), "\(eleven.out)")
        let phone = try Background.ua(["phone", "--proto", "udp", "--port", port, "--user", "carol", "--duration", "3"])
        defer { phone.stop() }
        #expect(phone.wait(for: "ERROR REGISTER answered SIP/2.0 403"), "\(phone.lines)")
        #expect(proxy.location.bindings(for: "carol@localhost").count == 10)
    }

    @Test("max_bindings caps the bindings of all AORs: a REGISTER that would add one more gets 503 with Retry-After and binds nothing; refreshing is still allowed")
    func maxBindings() throws {
        let pki = try TestPKI()
        let proxy = try defaultProxy(pki, extra: "modparam(\"registrar\", \"max_bindings\", 15)")
        defer { proxy.stop() }
        let port = String(proxy.port(.udp))
        let carol = Subprocess.run("python3", [Paths.peers + "/ua.py", "register", "--port", port, "--user", "carol", "--contacts", "10"])
        #expect(carol.out.contains("RESPONSE SIP/2.0 200"), "\(carol.out)")
        let dave = Subprocess.run("python3", [Paths.peers + "/ua.py", "register", "--port", port, "--user", "dave", "--contacts", "6"])
        #expect(dave.out.contains("RESPONSE SIP/2.0 503"), "\(dave.out)")
        #expect(proxy.location.bindings(for: "dave@localhost").isEmpty)
        let again = Subprocess.run("python3", [Paths.peers + "/ua.py", "register", "--port", port, "--user", "carol", "--contacts", "10"])
        #expect(again.out.contains("RESPONSE SIP/2.0 200"), "\(again.out)")
        #expect(proxy.location.counts().contacts == 10)
    }

    @Test("LocationService.replace with a limit: growth past it throws full and changes nothing; shrinking and expired bindings free room")
    func storeLimit() throws {
        let store = try LocationService(path: nil)
        let now = Int64(Date().timeIntervalSince1970)
        func bindings(_ aor: String, _ n: Int, expires: Int64) -> [LocationService.Binding] {
            (0..<n).map { i in
                LocationService.Binding(aor: aor, contact: "sip:\(i)@192.0.2.1", expires: expires, q: nil, callID: "c", cseq: 1, instance: nil,
                                        regID: nil, path: [], proto: "udp", receivedIP: "192.0.2.1", receivedPort: 5060, connectionID: nil,
                                        userAgent: nil, socket: "udp:127.0.0.1:5060")
            }
        }
        try store.replace(aor: "a", with: bindings("a", 3, expires: now + 600), limit: 5)
        #expect(throws: LocationService.StoreError.self) { try store.replace(aor: "b", with: bindings("b", 3, expires: now + 600), limit: 5) }
        #expect(store.bindings(for: "b").isEmpty)
        try store.replace(aor: "b", with: bindings("b", 2, expires: now + 600), limit: 5)
        try store.replace(aor: "a", with: bindings("a", 1, expires: now + 600), limit: 5)
        try store.replace(aor: "c", with: bindings("c", 2, expires: now - 1), limit: 5)
        // c's bindings have expired: they are purged to make room.
        try store.replace(aor: "d", with: bindings("d", 2, expires: now + 600), limit: 5)
        #expect(store.counts().contacts == 5)
    }

    @Test("1000 contacts in one REGISTER (max_contacts 0): each bound once; the same REGISTER again keeps 1000")
    func manyContacts() throws {
        let pki = try TestPKI()
        let proxy = try defaultProxy(pki, extra: "modparam(\"registrar\", \"max_contacts\", 0)")
        defer { proxy.stop() }
        let args = [Paths.peers + "/ua.py", "register", "--proto", "tcp", "--port", String(proxy.port(.tcp)), "--user", "bob", "--contacts", "1000", "--one-line"]
        let first = Subprocess.run("python3", args, timeout: 30)
        #expect(first.out.contains("RESPONSE SIP/2.0 200"), "\(first.out.prefix(300))")
        #expect(proxy.location.bindings(for: "bob@localhost").count == 1000)
        let again = Subprocess.run("python3", args, timeout: 30)
        #expect(again.out.contains("RESPONSE SIP/2.0 200"), "\(again.out.prefix(300))")
        #expect(proxy.location.bindings(for: "bob@localhost").count == 1000)
    }
}
