import Foundation
import Testing

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
