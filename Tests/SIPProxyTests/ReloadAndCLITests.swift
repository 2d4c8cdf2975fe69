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
        // Development certificates: valid 90 days, not years.
        for file in ["ca.pem", "sip.example.com.pem"] {
            // openssl x509 -checkend N: status 0 when still valid N seconds from now.
            let in89 = Subprocess.run("openssl", ["x509", "-in", dir + "/" + file, "-noout", "-checkend", String(89 * 86_400)])
            let in91 = Subprocess.run("openssl", ["x509", "-in", dir + "/" + file, "-noout", "-checkend", String(91 * 86_400)])
            #expect(in89.status == 0 && in91.status != 0, "\(file): \(in89.out) \(in91.out)")
        }
        // Never written over: the same name again fails and the files stay as they were.
        let before = try Data(contentsOf: URL(fileURLWithPath: dir + "/sip.example.com.pem"))
        let keyBefore = try Data(contentsOf: URL(fileURLWithPath: dir + "/sip.example.com.key"))
        let again = Subprocess.run(swiftserBinary, ["certs", "server", "--name", "sip.example.com", "--ca-dir", dir])
        #expect(again.status != 0, "\(again.out)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/sip.example.com.pem")) == before)
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/sip.example.com.key")) == keyBefore)
        let caAgain = Subprocess.run(swiftserBinary, ["certs", "ca", "--dir", dir])
        #expect(caAgain.status != 0)
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
        let ctl = Subprocess.run(swiftserBinary, ["ctl", "-s", dir + "/ctl.sock", "tls.options"])
        #expect(ctl.status == 0 && ctl.out.contains("server:default") && ctl.out.contains("two.test"), "\(ctl.out) \(ctl.err)")
    }

    @Test("relative paths in the config (socket, database, certificates, the development CA) land in its folder, whatever the current directory")
    func relativePaths() throws {
        let base = makeTempDir("paths")
        let conf = base + "/conf"
        let elsewhere = base + "/elsewhere"
        try FileManager.default.createDirectory(atPath: conf, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: elsewhere, withIntermediateDirectories: true)
        let port = freePort()
        try """
        debug=1
        listen=tls:127.0.0.1:\(port)
        control_socket="run/ctl.sock"
        pid_file="run/swiftser.pid"
        tls_auto_dev_certificates=yes
        tls_certificate="certs/server.pem"
        tls_private_key="certs/server.key"
        tls_ca_list="certs/dev-ca.pem"
        modparam("usrloc", "db_url", "sqlite://db/location.sqlite")
        request_route { sl_send_reply("200", "OK"); }
        """.write(toFile: conf + "/proxy.cfg", atomically: true, encoding: .utf8)
        // Started from a sibling folder with a relative config name.
        let proxy = try Background(swiftserBinary, ["-f", "../conf/proxy.cfg"], cwd: elsewhere)
        defer { proxy.stop() }
        #expect(proxy.wait(for: "SwiftSER running"), "\(proxy.lines)")
        for file in ["run/ctl.sock", "run/swiftser.pid", "db/location.sqlite", "certs/server.pem", "certs/server.key", "certs/dev-ca.pem"] {
            #expect(FileManager.default.fileExists(atPath: conf + "/" + file), "\(file) not in the config's folder")
        }
        #expect((try? FileManager.default.contentsOfDirectory(atPath: elsewhere)) == [], "files created in the current directory")
        // The certificate made there is the one served, signed by the CA next to it.
        let s = OpenSSLClientTests.sClient(port, ["-CAfile", conf + "/certs/dev-ca.pem", "-verify_return_error"])
        #expect(OpenSSLClientTests.negotiated(s), "\(s.out) \(s.err)")
        // ctl finds the socket through the config, from yet another directory.
        let ctl = Subprocess.run(swiftserBinary, ["ctl", "-f", "conf/proxy.cfg", "core.version"], cwd: base)
        #expect(ctl.status == 0 && ctl.out.contains("swiftser"), "\(ctl.out) \(ctl.err)")
    }

    /// A config that runs the proxy on a free TLS port with a control socket, from `dir`.
    func runnableConfig(_ pki: TestPKI, _ dir: String, port: UInt16, debug: Int = 2) throws -> String {
        try pki.issue("server", cn: "localhost", dns: ["localhost"])
        let file = dir + "/r.cfg"
        try """
        debug=\(debug)
        listen=tls:127.0.0.1:\(port)
        control_socket="ctl.sock"
        modparam("usrloc", "db_mode", 0)
        tls_certificate="\(pki.dir)/server.pem"
        tls_private_key="\(pki.dir)/server.key"
        request_route { sl_send_reply("200", "OK"); }
        """.write(toFile: file, atomically: true, encoding: .utf8)
        return file
    }

    @Test("ctl speaks JSON-RPC: results as JSON, --table, error answers exit 1, an unreachable proxy exits 2")
    func ctl() throws {
        let pki = try TestPKI()
        let dir = makeTempDir("ctl")
        let file = try runnableConfig(pki, dir, port: freePort())
        let proxy = try Background(swiftserBinary, ["-f", file])
        defer { proxy.stop() }
        #expect(proxy.wait(for: "SwiftSER running"), "\(proxy.lines)")
        let sock = dir + "/ctl.sock"
        let version = Subprocess.run(swiftserBinary, ["ctl", "-s", sock, "core.version"])
        #expect(version.status == 0 && version.out.hasPrefix("\"swiftser "), "\(version.out) \(version.err)")
        let uptime = Subprocess.run(swiftserBinary, ["ctl", "-s", sock, "core.uptime"])
        let object = try? JSONSerialization.jsonObject(with: Data(uptime.out.utf8)) as? [String: Any]
        #expect(object?["uptime"] is Int, "\(uptime.out)")
        let set = Subprocess.run(swiftserBinary, ["ctl", "-s", sock, "cfg.set", "core", "debug", "-1"])
        #expect(set.status == 0, "\(set.out) \(set.err)")
        #expect(Subprocess.run(swiftserBinary, ["ctl", "-s", sock, "cfg.get", "core", "debug"]).out.trimmingCharacters(in: .whitespacesAndNewlines) == "-1")
        let table = Subprocess.run(swiftserBinary, ["ctl", "-s", sock, "--table", "tls.options"])
        #expect(table.status == 0 && table.out.contains("server:default") && !table.out.contains("{"), "\(table.out)")
        let unknown = Subprocess.run(swiftserBinary, ["ctl", "-s", sock, "no.such"])
        #expect(unknown.status == 1 && unknown.err.contains("-32601"), "\(unknown.err)")
        let missing = Subprocess.run(swiftserBinary, ["ctl", "-s", dir + "/nope.sock", "core.version"])
        #expect(missing.status == 2, "\(missing.err)")
    }

    @Test("cfg.set core debug changes what the running proxy logs")
    func runtimeLogLevel() throws {
        let pki = try TestPKI()
        let dir = makeTempDir("level")
        let file = try runnableConfig(pki, dir, port: freePort())
        let proxy = try Background(swiftserBinary, ["-f", file])
        defer { proxy.stop() }
        #expect(proxy.wait(for: "SwiftSER running"), "\(proxy.lines)")
        let sock = dir + "/ctl.sock"
        // At -1 (errors only) a reload logs nothing; back at 2 it does.
        #expect(Subprocess.run(swiftserBinary, ["ctl", "-s", sock, "cfg.set", "core", "debug", "-1"]).status == 0)
        #expect(Subprocess.run(swiftserBinary, ["ctl", "-s", sock, "tls.reload"]).status == 0)
        #expect(Subprocess.run(swiftserBinary, ["ctl", "-s", sock, "cfg.set", "core", "debug", "2"]).status == 0)
        #expect(Subprocess.run(swiftserBinary, ["ctl", "-s", sock, "tls.reload"]).status == 0)
        #expect(proxy.wait(for: "TLS reloaded"), "\(proxy.lines)")
        #expect(proxy.lines.filter { $0.contains("TLS reloaded") }.count == 1, "\(proxy.lines)")
    }

    @Test("Kamailio's command line: --version and -V, -c, -A, -E, -DD, -P; -DDD refused")
    func kamailioFlags() throws {
        for flag in ["--version", "-V"] {
            let v = Subprocess.run(swiftserBinary, [flag])
            #expect(v.status == 0 && v.out.hasPrefix("swiftser \(SwiftSERVersion.number)"), "\(flag): \(v.out) \(v.err)")
        }
        let dir = makeTempDir("flags")
        try """
        debug=1
        listen=udp:127.0.0.1:\(freePort())
        control_socket="ctl.sock"
        modparam("usrloc", "db_mode", 0)
        #!ifdef WITH_OK
        request_route { sl_send_reply("200", "OK"); }
        #!else
        request_route { nosuchfunction(); }
        #!endif
        """.write(toFile: dir + "/a.cfg", atomically: true, encoding: .utf8)
        let bad = Subprocess.run(swiftserBinary, ["-c", "-f", dir + "/a.cfg"], timeout: 10)
        #expect(bad.status == 1 && bad.err.contains("nosuchfunction"), "\(bad.out) \(bad.err)")
        let good = Subprocess.run(swiftserBinary, ["-c", "-A", "WITH_OK", "-f", dir + "/a.cfg"], timeout: 10)
        #expect(good.status == 0 && good.out.contains("OK"), "\(good.out) \(good.err)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/ctl.sock"), "-c started the proxy")
        let named = Subprocess.run(swiftserBinary, ["-c", "-A", "WITH_OK=1", "-f", dir + "/a.cfg"], timeout: 10)
        #expect(named.status == 0, "\(named.err)")

        let pid = dir + "/run.pid"
        let proxy = try Background(swiftserBinary, ["-E", "-DD", "-A", "WITH_OK", "-P", pid, "-f", dir + "/a.cfg"])
        #expect(proxy.wait(for: "SwiftSER running"), "\(proxy.lines)")
        var written = ""
        for _ in 0..<100 where written.isEmpty {
            written = (try? String(contentsOfFile: pid, encoding: .utf8)) ?? ""
            if written.isEmpty { usleep(50_000) }
        }
        #expect(written == "\(proxy.process.processIdentifier)\n", "\(written)")
        #expect(Subprocess.run(swiftserBinary, ["ctl", "-s", dir + "/ctl.sock", "core.version"]).status == 0)
        kill(proxy.process.processIdentifier, SIGTERM)
        #expect(proxy.finish(timeout: 10) == 0)
        #expect(!FileManager.default.fileExists(atPath: pid), "the pid file stays after exit")

        let daemon = Subprocess.run(swiftserBinary, ["-DDD", "-f", dir + "/a.cfg"], timeout: 10)
        #expect(daemon.status != 0 && daemon.err.contains("-DDD"), "\(daemon.err)")
    }

    @Test("-u/-g: unknown names refused before anything starts; as root the proxy binds, then runs as the user; a user that cannot switch is refused")
    func dropPrivileges() throws {
        let dir = makeTempDir("drop")
        chmod(dir, 0o777)
        let tcpPort = freePort()
        try """
        debug=1
        listen=udp:127.0.0.1:\(freePort())
        listen=tcp:127.0.0.1:\(tcpPort)
        control_socket="ctl.sock"
        modparam("usrloc", "db_url", "sqlite://location.sqlite")
        request_route { sl_send_reply("200", "OK"); }
        """.write(toFile: dir + "/a.cfg", atomically: true, encoding: .utf8)
        chmod(dir + "/a.cfg", 0o644)
        let unknownUser = Subprocess.run(swiftserBinary, ["-u", "no-such-user-swiftser", "-f", dir + "/a.cfg"], timeout: 10)
        #expect(unknownUser.status == 64 && unknownUser.err.contains("-u no-such-user-swiftser"), "\(unknownUser.err)")
        let unknownGroup = Subprocess.run(swiftserBinary, ["-g", "no-such-group-swiftser", "-f", dir + "/a.cfg"], timeout: 10)
        #expect(unknownGroup.status == 64 && unknownGroup.err.contains("-g no-such-group-swiftser"), "\(unknownGroup.err)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/ctl.sock"))
        guard getuid() == 0, let nobody = getpwnam("nobody"), FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv") else { return }
        let uid = nobody.pointee.pw_uid
        let gid = nobody.pointee.pw_gid
        // Root binds, then becomes nobody: the files made after that are nobody's.
        let proxy = try Background(swiftserBinary, ["-u", "nobody", "-f", dir + "/a.cfg"])
        #expect(proxy.wait(for: "SwiftSER running"), "\(proxy.lines)")
        for file in ["ctl.sock", "location.sqlite"] {
            let attrs = try? FileManager.default.attributesOfItem(atPath: dir + "/" + file)
            #expect((attrs?[.ownerAccountID] as? NSNumber)?.uint32Value == uid, "\(file): \(String(describing: attrs))")
        }
        let status = try String(contentsOfFile: "/proc/\(proxy.process.processIdentifier)/status", encoding: .utf8)
        let uids = status.split(separator: "\n").first { $0.hasPrefix("Uid:") }.map(String.init) ?? ""
        #expect(uids.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().allSatisfy { $0 == "\(uid)" }, "\(uids)")
        // An unprivileged process accepts TCP connections (no socket option that needs root).
        let tcp = Subprocess.sipclient(["--proto", "tcp", "--port", String(tcpPort), "--options", "--wait", "3"])
        #expect(tcp.out.contains("RESPONSE SIP/2.0 200"), "\(tcp.out) \(tcp.err)")
        kill(proxy.process.processIdentifier, SIGTERM)
        #expect(proxy.finish(timeout: 10) == 0)
        // Not root: asking for root (or anyone else) fails, and the proxy
        // stops. (Only where nobody may run the binary: a checkout inside a
        // private folder is out of its reach.)
        let reachable = Subprocess.run("/usr/bin/setpriv", ["--reuid=\(uid)", "--regid=\(gid)", "--clear-groups", swiftserBinary, "--version"], timeout: 10)
        guard reachable.status == 0 else { return }
        let refused = Subprocess.run("/usr/bin/setpriv", ["--reuid=\(uid)", "--regid=\(gid)", "--clear-groups", swiftserBinary, "-u", "0", "-f", dir + "/a.cfg"], timeout: 10)
        #expect(refused.status == 1 && refused.err.contains("cannot drop privileges"), "\(refused.out) \(refused.err)")
    }

    @Test("log_stderror=no: lines go to the syslog socket with log_facility and log_name; a message's lines carry its Call-ID, CSeq, source and transport; log_format=json writes JSON lines")
    func syslogAndJSON() throws {
        let dir = makeTempDir("syslog")
        let sockPath = dir + "/log.sock"
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        #expect(fd >= 0)
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { p in for (i, b) in sockPath.utf8.enumerated() { p[i] = b } }
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        #expect(bound == 0)
        var tv = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let port = freePort()
        let script = """
        debug=2
        listen=udp:127.0.0.1:\(port)
        control_socket="ctl.sock"
        modparam("usrloc", "db_mode", 0)
        loadmodule "sl.so"
        loadmodule "xlog.so"
        request_route { xlog("L_INFO", "xlog-mark $rm\\n"); sl_send_reply("200", "OK"); }
        """
        try ("log_stderror=no\nlog_facility=LOG_LOCAL3\nlog_name=\"sertest\"\nsyslog_socket=\"log.sock\"\n" + script)
            .write(toFile: dir + "/s.cfg", atomically: true, encoding: .utf8)
        let proxy = try Background(swiftserBinary, ["-f", dir + "/s.cfg"])
        defer { proxy.stop() }
        var received: [String] = []
        func drain(until: (String) -> Bool) {
            let deadline = Date().addingTimeInterval(10)
            var buf = [UInt8](repeating: 0, count: 9000)
            while Date() < deadline {
                let n = recv(fd, &buf, buf.count, 0)
                if n > 0 {
                    let line = String(decoding: buf[0..<n], as: UTF8.self)
                    received.append(line)
                    if until(line) { return }
                }
            }
        }
        drain { $0.contains("SwiftSER running") }
        // local3 (19) × 8 + notice (5) = 157
        #expect(received.contains { $0.hasPrefix("<157>") && $0.contains(" sertest[\(proxy.process.processIdentifier)]: ") && $0.contains("SwiftSER running") }, "\(received)")
        #expect(!proxy.lines.contains { $0.contains("SwiftSER running") }, "logged to standard error too: \(proxy.lines)")
        let sent = Subprocess.sipclient(["--proto", "udp", "--port", String(port), "--options", "--wait", "2"])
        #expect(sent.out.contains("200"), "\(sent.out) \(sent.err)")
        drain { $0.contains("xlog-mark") }
        let mark = received.first { $0.contains("xlog-mark OPTIONS") } ?? ""
        #expect(mark.hasPrefix("<158>"), "\(received)")
        for key in ["call-id=", "cseq=", "src=127.0.0.1:", "proto=udp"] {
            #expect(mark.contains(key), "\(key) missing: \(mark)")
        }
        kill(proxy.process.processIdentifier, SIGTERM)
        #expect(proxy.finish(timeout: 10) == 0)

        // JSON lines on standard error.
        try ("log_format=json\n" + script).write(toFile: dir + "/j.cfg", atomically: true, encoding: .utf8)
        let json = try Background(swiftserBinary, ["-f", dir + "/j.cfg"])
        defer { json.stop() }
        #expect(json.wait(for: "SwiftSER running"), "\(json.lines)")
        _ = Subprocess.sipclient(["--proto", "udp", "--port", String(port), "--options", "--wait", "2"])
        #expect(json.wait(for: "xlog-mark"), "\(json.lines)")
        let objects = json.lines.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(objects.count == json.lines.count, "not every line is a JSON object: \(json.lines)")
        let xlog = objects.first { ($0["msg"] as? String)?.hasPrefix("xlog-mark") == true }
        #expect(xlog?["level"] as? String == "info" && xlog?["proto"] as? String == "udp" && xlog?["call-id"] is String && xlog?["time"] is String,
                "\(String(describing: xlog))")
    }
}
