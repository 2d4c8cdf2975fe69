import Foundation
import NIOConcurrencyHelpers
@testable import SIPProxy
import Testing

/// A proxy on UDP that authenticates REGISTER (auth_check, qop auth and
/// auth-int offered) and MESSAGE (proxy_authorize + identity check), with
/// users alice/secret and bob/hunter2 in localhost.
func authProxy(extra: String = "", challengeArgs: String = "\"$td\", \"3\"") throws -> TestProxy {
    let proxy = try TestProxy("""
    listen=udp:127.0.0.1:0
    alias="localhost"
    loadmodule "sl.so"
    loadmodule "registrar.so"
    loadmodule "usrloc.so"
    loadmodule "textops.so"
    loadmodule "auth.so"
    loadmodule "auth_db.so"
    modparam("usrloc", "db_mode", 0)
    \(extra)
    request_route {
        if (is_method("REGISTER")) {
            if (!auth_check("$td", "subscriber", "1")) {
                www_challenge(\(challengeArgs));
                exit;
            }
            consume_credentials();
            if (is_present_hf("Authorization")) { sl_send_reply("500", "credentials not consumed"); exit; }
            save("location");
            exit;
        }
        if (is_method("MESSAGE")) {
            $var(rc) = auth_check("$fd", "subscriber", "1");
            if ($var(rc) == 0) { exit; }
            if ($var(rc) == -8) { sl_send_reply("403", "Forbidden auth ID"); exit; }
            if ($var(rc) < 0) { proxy_challenge("$fd", "1"); exit; }
            sl_send_reply("200", "user $au realm $ar alg $aa uri $adu");
            exit;
        }
        sl_send_reply("404", "Not here");
    }
    """)
    try proxy.core.subscribers.put(.make(username: "alice", domain: "localhost", password: "secret", keepPassword: false))
    try proxy.core.subscribers.put(.make(username: "bob", domain: "localhost", password: "hunter2", keepPassword: false))
    return proxy
}

func digest(_ proxy: TestProxy, _ args: [String]) -> Subprocess.Result {
    Subprocess.run("python3", [Paths.peers + "/digestclient.py", "--port", String(proxy.port(.udp))] + args, timeout: 15)
}

@Suite("Digest authentication end to end", .serialized)
struct AuthFlowTests {
    @Test("REGISTER with SHA-256 and qop=auth: challenged (SHA-256 first, then MD5), then 200 and bound")
    func sha256Register() throws {
        let proxy = try authProxy()
        defer { proxy.stop() }
        let r = digest(proxy, ["--algorithm", "SHA-256"])
        let challenges = r.lines.filter { $0.hasPrefix("CHALLENGE 401") }
        #expect(challenges.count == 2, "\(r.out)")
        #expect(challenges.first?.contains("algorithm=SHA-256") == true)
        #expect(challenges.last?.contains("algorithm=MD5") == true)
        #expect(challenges.allSatisfy { $0.contains("qop=\"auth,auth-int\"") && $0.contains("realm=\"localhost\"") })
        #expect(r.lines.contains("RESPONSE 200"), "\(r.out) \(proxy.log.lines)")
        #expect(proxy.location.bindings(for: "alice@localhost").count == 1)
    }

    @Test("MD5 with qop=auth-int over a body; RFC 2069 (no qop) refused when qop was offered")
    func md5AuthInt() throws {
        let proxy = try authProxy()
        defer { proxy.stop() }
        let r = digest(proxy, ["--algorithm", "MD5", "--qop", "auth-int", "--body", "hello body"])
        #expect(r.lines.contains("RESPONSE 200"), "\(r.out) \(proxy.log.lines)")
        let noQop = digest(proxy, ["--algorithm", "MD5", "--qop", "none"])
        #expect(noQop.lines.contains("RESPONSE 401"), "\(noQop.out)")
        #expect(proxy.location.bindings(for: "alice@localhost").count == 1)
    }

    @Test("wrong password, unknown user and wrong realm get a new challenge, not stale; nothing is bound")
    func refused() throws {
        let proxy = try authProxy()
        defer { proxy.stop() }
        let wrong = digest(proxy, ["--password", "nope"])
        #expect(wrong.lines.contains("RESPONSE 401"), "\(wrong.out)")
        let unknown = digest(proxy, ["--user", "mallory"])
        #expect(unknown.lines.contains("RESPONSE 401"), "\(unknown.out)")
        let realm = digest(proxy, ["--realm", "elsewhere.example"])
        #expect(realm.lines.contains("RESPONSE 401"), "\(realm.out)")
        // Bob's password for alice's AOR: bob authenticates but is not alice (auth_check flag 1).
        let other = digest(proxy, ["--user", "bob", "--password", "hunter2", "--to-user", "alice", "--from-user", "alice"])
        #expect(other.lines.contains("RESPONSE 401"), "\(other.out)")
        #expect(proxy.location.all().isEmpty)
    }

    @Test("an expired nonce with the right password gets 401 with stale=true")
    func staleNonce() throws {
        let proxy = try authProxy()
        defer { proxy.stop() }
        // The challenge is made 400 s in the past (nonce_expire is 300 s).
        let calls = NIOLockedValueBox(0)
        proxy.core.auth.clock = {
            let now = UInt32(Date().timeIntervalSince1970)
            return calls.withLockedValue { n in n += 1; return n == 1 ? now - 400 : now }
        }
        let r = digest(proxy, [])
        #expect(r.lines.contains("RESPONSE 401 stale"), "\(r.out) \(proxy.log.lines)")
        // A wrong password with an expired nonce is not stale.
        calls.withLockedValue { $0 = 0 }
        let w = digest(proxy, ["--password", "nope"])
        #expect(w.lines.contains("RESPONSE 401"), "\(w.out)")
        #expect(proxy.location.all().isEmpty)
    }

    @Test("a replayed nonce-count is refused; the next count is accepted")
    func replay() throws {
        let proxy = try authProxy()
        defer { proxy.stop() }
        let r = digest(proxy, ["--replay", "--next-nc"])
        #expect(r.lines.contains("RESPONSE 200"), "\(r.out)")
        #expect(r.lines.contains("REPLAY 401"), "\(r.out)")
        #expect(r.lines.contains("NEXT 200"), "\(r.out)")
    }

    @Test("malformed credentials for the realm get 400; unreadable ones a new challenge")
    func malformed() throws {
        let proxy = try authProxy()
        defer { proxy.stop() }
        let bad = digest(proxy, ["--raw-authorization", #"Digest realm="localhost", username="alice", nonce="x""#])
        #expect(bad.lines.contains("RESPONSE 400"), "\(bad.out)")
        let badNC = digest(proxy, ["--raw-authorization", #"Digest realm="localhost", username="alice", nonce="x", uri="sip:localhost", response="00000000000000000000000000000000", qop=auth, nc=zz, cnonce="c""#])
        #expect(badNC.lines.contains("RESPONSE 400"), "\(badNC.out)")
        let garbage = digest(proxy, ["--raw-authorization", "Digest \u{7f}\"\"\",,,=="])
        #expect(garbage.lines.contains("RESPONSE 401"), "\(garbage.out)")
        let basic = digest(proxy, ["--raw-authorization", "Basic YWxpY2U6c2VjcmV0"])
        #expect(basic.lines.contains("RESPONSE 401"), "\(basic.out)")
        #expect(proxy.location.all().isEmpty)
        // Still serving.
        #expect(digest(proxy, []).lines.contains("RESPONSE 200"))
    }

    @Test("MESSAGE: 407 then 200 with $au $ar $aa $adu; a From that is not the authenticated user gets 403")
    func proxyAuthAndIdentity() throws {
        let proxy = try authProxy()
        defer { proxy.stop() }
        let r = digest(proxy, ["--method", "MESSAGE", "--algorithm", "MD5"])
        #expect(r.lines.contains { $0.hasPrefix("CHALLENGE 407") }, "\(r.out)")
        #expect(r.lines.contains("REASON 200 user alice realm localhost alg MD5 uri sip:bob@localhost"), "\(r.out)")
        let spoof = digest(proxy, ["--method", "MESSAGE", "--from-user", "bob"])
        #expect(spoof.lines.contains("RESPONSE 403"), "\(spoof.out)")
    }

    @Test("sipsak registers with an MD5 password (-a/-u) through a config that authenticates")
    func sipsakRegister() throws {
        let proxy = try authProxy(challengeArgs: "\"$td\", \"1\", \"MD5\"")
        defer { proxy.stop() }
        let port = String(proxy.port(.udp))
        let bad = Subprocess.run("sipsak", ["-U", "-C", "sip:alice@127.0.0.1:5998", "-x", "300", "-s", "sip:alice@localhost:\(port)", "-H", "127.0.0.1", "-a", "wrong", "-u", "alice"], timeout: 15)
        #expect(bad.status != 0)
        #expect(proxy.location.all().isEmpty)
        let r = Subprocess.run("sipsak", ["-U", "-C", "sip:alice@127.0.0.1:5998", "-x", "300", "-s", "sip:alice@localhost:\(port)", "-H", "127.0.0.1", "-a", "secret", "-u", "alice"], timeout: 15)
        #expect(r.status == 0, "\(r.out) \(r.err) \(proxy.log.lines)")
        #expect(proxy.location.bindings(for: "alice@localhost").first?.contact == "sip:alice@127.0.0.1:5998")
    }

    @Test("SIPp registers with its [authentication] scenario (MD5, qop=auth) over UDP and TCP; a wrong password binds nothing",
          arguments: ["u1", "t1"])
    func sippRegister(transport: String) throws {
        let proxy = try authProxy(extra: "listen=tcp:127.0.0.1:0", challengeArgs: "\"$td\", \"1\", \"MD5\"")
        defer { proxy.stop() }
        let port = proxy.port(transport == "u1" ? .udp : .tcp)
        func sipp(_ password: String) -> Subprocess.Result {
            Subprocess.run("sipp", ["-sf", Paths.peers + "/sipp-register-auth.xml", "-t", transport, "-i", "127.0.0.1",
                                    "-s", "alice", "-au", "alice", "-ap", password, "-m", "1", "-nostdin",
                                    "-timeout", "10s", "-timeout_error", "-max_socket", "10", "127.0.0.1:\(port)"], timeout: 20)
        }
        let bad = sipp("wrong")
        #expect(bad.status != 0)
        #expect(proxy.location.all().isEmpty)
        let good = sipp("secret")
        #expect(good.status == 0, "\(good.out) \(good.err)")
        let bound = proxy.location.bindings(for: "alice@localhost")
        #expect(bound.count == 1)
        #expect(bound.first?.contact.hasPrefix("sip:alice@127.0.0.1:") == true)
    }

    @Test("www_authenticate(realm, table, method): the digest is checked with the given method")
    func methodOverride() throws {
        for (method, expected) in [("MESSAGE", "RESPONSE 200"), ("REGISTER", "RESPONSE 401")] {
            let proxy = try TestProxy("""
            listen=udp:127.0.0.1:0
            alias="localhost"
            loadmodule "sl.so"
            loadmodule "auth.so"
            loadmodule "auth_db.so"
            modparam("usrloc", "db_mode", 0)
            request_route {
                if (!www_authenticate("$fd", "subscriber", "\(method)")) { www_challenge("$fd", "1"); exit; }
                sl_send_reply("200", "OK");
            }
            """)
            defer { proxy.stop() }
            try proxy.core.subscribers.put(.make(username: "alice", domain: "localhost", password: "secret", keepPassword: false))
            let r = digest(proxy, ["--method", "MESSAGE"])
            #expect(r.lines.contains(expected), "\(method): \(r.out)")
        }
    }
}
