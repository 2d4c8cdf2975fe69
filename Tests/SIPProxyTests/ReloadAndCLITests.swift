import Foundation
import SIPConfig
import SIPProxy
import SIPTLS
import Testing

@Suite("TLS reload without restart", .serialized)
struct ReloadTests {
    @Test("reload serves the new certificate to new connections; open ones keep theirs; a failed reload keeps the running one")
    func reload() throws {
        let pki = try TestPKI()
        try pki.issue("server", cn: "first.test", dns: ["first.test"])
        let proxy = try defaultProxy(pki, extra: "", script: nil)
        defer { proxy.stop() }
        // defaultProxy issued its own "server" (localhost); make it "first".
        try pki.issue("server", cn: "first.test", dns: ["first.test"])
        #expect(proxy.control.reloadTLS().hasPrefix("TLS reloaded"))
        let phone = try Background.ua(["phone", "--proto", "tls", "--port", String(proxy.port(.tls)), "--user", "alice", "--duration", "10"])
        defer { phone.stop() }
        #expect(phone.wait(for: "REGISTERED"))
        let before = OpenSSLClientTests.sClient(proxy.port(.tls), [])
        #expect((before.out + before.err).contains("first.test"), "\(before.err)")

        try pki.issue("server", cn: "second.test", dns: ["second.test"])
        #expect(proxy.control.reloadTLS().hasPrefix("TLS reloaded"))
        let after = OpenSSLClientTests.sClient(proxy.port(.tls), [])
        #expect((after.out + after.err).contains("second.test"), "\(after.err)")
        // The phone's connection, opened before the reload, still carries calls.
        let call = Subprocess.run("python3", [Paths.peers + "/ua.py", "call", "--proto", "udp", "--port", String(proxy.port(.udp)), "--to", "alice"], timeout: 20)
        #expect(call.out.contains("BYE-OK"), "\(call.out)")

        try "not a certificate".write(toFile: pki.dir + "/server.pem", atomically: true, encoding: .utf8)
        let failed = proxy.control.reloadTLS()
        #expect(failed.contains("reload failed") && failed.contains("not a PEM certificate"), "\(failed)")
        let still = OpenSSLClientTests.sClient(proxy.port(.tls), [])
        #expect((still.out + still.err).contains("second.test"))
    }
}

/// The swiftser executable, built by `swift build` before the tests.
let swiftserBinary = Paths.repo + "/.build/debug/swiftser"

@Suite("The swiftser command", .serialized, .enabled(if: FileManager.default.fileExists(atPath: swiftserBinary)))
struct CommandTests {
    @Test("certs: a CA and server/client certificates, keys mode 0600, SANs")
    func certs() throws {
        let dir = makeTempDir("certs")
        let ca = Subprocess.run(swiftserBinary, ["certs", "ca", "--dir", dir, "--name", "Example CA"])
        #expect(ca.status == 0, "\(ca.err)")
        let server = Subprocess.run(swiftserBinary, ["certs", "server", "--name", "sip.example.com", "--ip", "192.0.2.1", "--sip-uri", "sip:example.com", "--ca-dir", dir])
        #expect(server.status == 0, "\(server.err)")
        let client = Subprocess.run(swiftserBinary, ["certs", "client", "--name", "phone1", "--key", "rsa2048", "--ca-dir", dir])
        #expect(client.status == 0, "\(client.err)")
        for key in ["ca.key", "sip.example.com.key", "phone1.key"] {
            let mode = (try FileManager.default.attributesOfItem(atPath: dir + "/" + key)[.posixPermissions] as? NSNumber)?.intValue
            #expect(mode == 0o600, "\(key) mode \(String(mode ?? 0, radix: 8))")
        }
        let text = Subprocess.run("openssl", ["x509", "-in", dir + "/sip.example.com.pem", "-noout", "-text"])
        #expect(text.out.contains("DNS:sip.example.com") && text.out.contains("IP Address:192.0.2.1") && text.out.contains("URI:sip:example.com"), "\(text.out)")
        let verify = Subprocess.run("openssl", ["verify", "-CAfile", dir + "/ca.pem", dir + "/sip.example.com.pem", dir + "/phone1.pem"])
        #expect(verify.status == 0, "\(verify.out) \(verify.err)")
        #expect(Subprocess.run("openssl", ["x509", "-in", dir + "/phone1.pem", "-noout", "-text"]).out.contains("rsaEncryption"))
        let noCA = Subprocess.run(swiftserBinary, ["certs", "server", "--name", "x", "--ca-dir", dir + "/missing"])
        #expect(noCA.status != 0 && noCA.err.contains("swiftser certs ca"), "\(noCA.err)")
    }

    @Test("check prints the listen sockets and the TLS domain table")
    func checkOK() throws {
        let pki = try TestPKI()
        try pki.issue("server", cn: "localhost", dns: ["localhost"])
        let dir = makeTempDir("check")
        try """
        listen=udp:127.0.0.1:5060
        listen=tls:127.0.0.1:5061
        tls_certificate="\(pki.dir)/server.pem"
        tls_private_key="\(pki.dir)/server.key"
        tls_ca_list="\(pki.caFile)"
        tls_verify=1
        request_route { sl_send_reply("200", "OK"); }
        """.write(toFile: dir + "/a.cfg", atomically: true, encoding: .utf8)
        let r = Subprocess.run(swiftserBinary, ["check", "-f", dir + "/a.cfg"])
        #expect(r.status == 0, "\(r.out) \(r.err)")
        #expect(r.out.contains("udp:127.0.0.1:5060") && r.out.contains("tls:127.0.0.1:5061"))
        #expect(r.out.contains("server:default") && r.out.contains("client:default"))
        #expect(r.out.contains("CN=localhost") && r.out.contains("key ECDSA P-256") && r.out.contains("CN=Test CA"))
        #expect(r.out.contains("client certificate requested, verified if given"))
    }

    @Test("check and run refuse a config with errors, naming file, line and column")
    func checkErrors() throws {
        let dir = makeTempDir("check")
        try "listen=udp:127.0.0.1:5060\ntls_method=sslv3\nrequest_route {\n  foo();\n}\n".write(toFile: dir + "/b.cfg", atomically: true, encoding: .utf8)
        for cmd in [["check", "-f", dir + "/b.cfg"], ["-f", dir + "/b.cfg"]] {
            let r = Subprocess.run(swiftserBinary, cmd, timeout: 10)
            #expect(r.status == 1)
            #expect(r.err.contains("\(dir)/b.cfg:2:12: error: sslv3 is refused"), "\(r.err)")
            #expect(r.err.contains("\(dir)/b.cfg:4:3: error: unknown function 'foo'"), "\(r.err)")
        }
    }

    @Test("check names a missing, bad or mismatched certificate file and the reason")
    func checkFiles() throws {
        let pki = try TestPKI()
        try pki.issue("a", cn: "a")
        try pki.issue("b", cn: "b")
        let dir = makeTempDir("check")
        func check(_ cert: String, _ key: String) -> Subprocess.Result {
            try? "listen=tls:127.0.0.1:5061\ntls_certificate=\"\(cert)\"\ntls_private_key=\"\(key)\"\nrequest_route { drop; }\n".write(toFile: dir + "/c.cfg", atomically: true, encoding: .utf8)
            return Subprocess.run(swiftserBinary, ["check", "-f", dir + "/c.cfg"])
        }
        let missing = check(dir + "/nope.pem", pki.dir + "/a.key")
        #expect(missing.status == 1 && missing.out.contains("tls_certificate '\(dir)/nope.pem'") && missing.out.contains("no such file"), "\(missing.out)")
        try "hello".write(toFile: dir + "/junk.pem", atomically: true, encoding: .utf8)
        let junk = check(dir + "/junk.pem", pki.dir + "/a.key")
        #expect(junk.out.contains("not a PEM certificate file"), "\(junk.out)")
        let mismatch = check(pki.dir + "/a.pem", pki.dir + "/b.key")
        #expect(mismatch.out.contains("the key does not match the certificate"), "\(mismatch.out)")
        try pki.issue("old", cn: "old", expired: true)
        let expired = check(pki.dir + "/old.pem", pki.dir + "/old.key")
        #expect(expired.out.contains("certificate expired on"), "\(expired.out)")
        chmod(pki.dir + "/a.key", 0o644)
        let readable = check(pki.dir + "/a.pem", pki.dir + "/a.key")
        #expect(readable.status == 0 && readable.out.contains("readable by every user"), "\(readable.out)")
    }

    @Test("the proxy reloads its TLS files on SIGHUP and answers `swiftser ctl`")
    func sighup() throws {
        let pki = try TestPKI()
        try pki.issue("server", cn: "one.test", dns: ["one.test"])
        let dir = makeTempDir("run")
        let port = freePort()
        try """
        debug=2
        listen=tls:127.0.0.1:\(port)
        control_socket="ctl.sock"
        modparam("usrloc", "db_mode", 0)
        tls_certificate="\(pki.dir)/server.pem"
        tls_private_key="\(pki.dir)/server.key"
        request_route { sl_send_reply("200", "OK"); }
        """.write(toFile: dir + "/r.cfg", atomically: true, encoding: .utf8)
        let proxy = try Background(swiftserBinary, ["-f", dir + "/r.cfg"])
        defer { proxy.stop() }
        #expect(proxy.wait(for: "SwiftSER running"), "\(proxy.lines)")
        try pki.issue("server", cn: "two.test", dns: ["two.test"])
        kill(proxy.process.processIdentifier, SIGHUP)
        #expect(proxy.wait(for: "TLS reloaded"), "\(proxy.lines)")
        let s = OpenSSLClientTests.sClient(port, [])
        #expect((s.out + s.err).contains("two.test"))
        let ctl = Subprocess.run(swiftserBinary, ["ctl", "-s", dir + "/ctl.sock", "tls.list"])
        #expect(ctl.out.contains("server:default") && ctl.out.contains("two.test"), "\(ctl.out) \(ctl.err)")
    }
}
