import Foundation
import SIPConfig
import SIPProxy
import SIPTransport
import Testing

/// Kamailio 5.6 with its TLS module, run from the Debian packages, as a
/// peer on either side of SwiftSER.
final class KamailioPeer: @unchecked Sendable {
    let dir: String
    let udpPort: UInt16
    let tlsPort: UInt16
    var logLines: [String] { ((try? String(contentsOfFile: dir + "/kamailio.log", encoding: .utf8)) ?? "").split(separator: "\n").map(String.init) }

    static var available: Bool {
        FileManager.default.fileExists(atPath: "/usr/sbin/kamailio") && FileManager.default.fileExists(atPath: "/usr/lib/x86_64-linux-gnu/kamailio/modules/tls.so")
    }

    /// `route` is Kamailio's request_route body; `tls` its tls.cfg.
    init(route: String, tls: String) throws {
        dir = makeTempDir("kamailio")
        udpPort = freePort()
        tlsPort = freePort()
        let cfg = """
        #!KAMAILIO
        debug=2
        log_stderror=yes
        children=1
        tcp_children=1
        listen=udp:127.0.0.1:\(udpPort)
        listen=tls:127.0.0.1:\(tlsPort)
        enable_tls=yes
        auto_aliases=no
        mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
        loadmodule "tls.so"
        loadmodule "sl.so"
        loadmodule "tm.so"
        loadmodule "pv.so"
        loadmodule "xlog.so"
        loadmodule "textops.so"
        loadmodule "rr.so"
        loadmodule "siputils.so"
        modparam("tls", "config", "\(dir)/tls.cfg")
        request_route {
        \(route)
        }
        """
        try cfg.write(toFile: dir + "/kamailio.cfg", atomically: true, encoding: .utf8)
        try tls.write(toFile: dir + "/tls.cfg", atomically: true, encoding: .utf8)
        // Kamailio daemonizes itself (stderr to a file) and is stopped through
        // its pid file. It is started through Python with every other file
        // descriptor closed: Foundation's Process notices a child's end by a
        // descriptor the child inherits, which a daemon would keep open.
        let launcher = """
        import subprocess, sys
        log = open(sys.argv[1] + "/kamailio.log", "w")
        p = subprocess.Popen(["/usr/sbin/kamailio", "-f", sys.argv[1] + "/kamailio.cfg", "-E", "-w", sys.argv[1], "-P", sys.argv[1] + "/kamailio.pid"],
                             stdin=subprocess.DEVNULL, stdout=log, stderr=log, close_fds=True, start_new_session=True)
        sys.exit(p.wait())
        """
        let start = Subprocess.run("python3", ["-c", launcher, dir], timeout: 15)
        if start.status != 0 { throw KamailioError.start((try? String(contentsOfFile: dir + "/kamailio.log", encoding: .utf8)) ?? "") }
        // Ready when its TLS port accepts connections.
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            let r = Subprocess.run("python3", ["-c", "import socket; socket.create_connection(('127.0.0.1', \(tlsPort)), timeout=1).close()"], timeout: 3)
            if r.status == 0 { break }
            usleep(100_000)
        }
    }

    enum KamailioError: Error { case start(String) }

    func stop() {
        if let pid = try? String(contentsOfFile: dir + "/kamailio.pid", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines), let p = Int32(pid) {
            kill(p, SIGTERM)
            let deadline = Date().addingTimeInterval(5)
            while kill(p, 0) == 0 && Date() < deadline { usleep(50_000) }
        }
        // Make sure no process of this instance is left.
        _ = Subprocess.run("pkill", ["-9", "-f", dir + "/kamailio.cfg"], timeout: 5)
    }
}

@Suite("Kamailio with its TLS module as a peer", .serialized, .enabled(if: KamailioPeer.available))
struct KamailioTests {
    @Test("Kamailio forwards to SwiftSER over TLS and presents its client certificate")
    func kamailioToUs() throws {
        let pki = try TestPKI()
        let (kc, kk) = try pki.issue("kamailio", cn: "kamailio.test", dns: ["kamailio.test"])
        let proxy = try tlsProxy(pki, "listen=udp:127.0.0.1:0\ntls_verify=1\ntls_require_certificate=1")
        defer { proxy.stop() }
        let kam = try KamailioPeer(route: """
            $du = "sip:127.0.0.1:\(proxy.port(.tls));transport=tls";
            t_relay();
        """, tls: """
        [server:default]
        method = TLSv1.2+
        private_key = \(kk)
        certificate = \(kc)
        ca_list = \(pki.caFile)
        [client:default]
        method = TLSv1.2+
        verify_certificate = yes
        require_certificate = yes
        private_key = \(kk)
        certificate = \(kc)
        ca_list = \(pki.caFile)
        """)
        defer { kam.stop() }
        let r = Subprocess.sipclient(["--proto", "udp", "--port", String(kam.udpPort), "--options", "--wait", "5"])
        #expect(r.out.contains("RESPONSE SIP/2.0 200 Verified kamailio.test"), "\(r.out) \(proxy.log.lines.suffix(5)) \(kam.logLines.suffix(5))")
    }

    @Test("SwiftSER forwards to Kamailio over TLS, with and without verification", arguments: [true, false])
    func usToKamailio(verify: Bool) throws {
        let pki = try TestPKI()
        let (kc, kk) = try pki.issue("kamailio", cn: "kamailio.test", dns: ["kamailio.test"], sip: ["sip:kamailio.test"])
        let kam = try KamailioPeer(route: """
            sl_send_reply("200", "Kamailio over TLS");
            exit;
        """, tls: """
        [server:default]
        method = TLSv1.2+
        verify_certificate = no
        require_certificate = no
        private_key = \(kk)
        certificate = \(kc)
        ca_list = \(pki.caFile)
        """)
        defer { kam.stop() }
        try pki.issue("server", cn: "proxy.test", dns: ["proxy.test"])
        let proxy = try TestProxy("""
        listen=udp:127.0.0.1:0
        listen=tls:127.0.0.1:0
        dns_hosts_file="hosts"
        tls_certificate="\(pki.dir)/server.pem"
        tls_private_key="\(pki.dir)/server.key"
        tls_ca_list="\(pki.caFile)"
        tls_client_domain { tls_verify=\(verify ? 1 : 0) }
        request_route {
            $du = "sip:kamailio.test:\(kam.tlsPort);transport=tls";
            if (!t_relay()) { sl_reply_error(); }
            exit;
        }
        """, files: ["hosts": "127.0.0.1 kamailio.test\n"])
        defer { proxy.stop() }
        let r = Subprocess.sipclient(["--proto", "udp", "--port", String(proxy.port(.udp)), "--options", "--wait", "5"])
        #expect(r.out.contains("RESPONSE SIP/2.0 200 Kamailio over TLS"), "\(r.out) \(proxy.log.lines.suffix(5)) \(kam.logLines.suffix(5))")
        // The connection is kept for reuse, with the verified peer's name.
        #expect(proxy.transport.openConnections.contains { $0.outbound && $0.tls?.peerSubject?.contains("kamailio.test") == true },
                "\(proxy.transport.openConnections.map { String(describing: $0.tls?.peerSubject) })")
    }
}

@Suite("A call through SwiftSER and then Kamailio over TLS", .serialized, .enabled(if: KamailioPeer.available))
struct KamailioCallTests {
    @Test("UDP caller → SwiftSER → TLS → Kamailio → UDP phone: 200, ACK and BYE follow both proxies' Record-Routes")
    func callThroughKamailio() throws {
        let pki = try TestPKI()
        let (kc, kk) = try pki.issue("kamailio", cn: "kamailio.test", dns: ["kamailio.test"], ips: ["127.0.0.1"])
        let kam = try KamailioPeer(route: """
            if (has_totag()) { loose_route(); t_relay(); exit; }
            record_route();
            t_relay();
        """, tls: """
        [server:default]
        method = TLSv1.2+
        verify_certificate = no
        require_certificate = no
        private_key = \(kk)
        certificate = \(kc)
        ca_list = \(pki.caFile)
        [client:default]
        verify_certificate = no
        """)
        defer { kam.stop() }
        let script = """
        request_route {
            if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); exit; }
            if (has_totag()) { if (loose_route()) { t_relay(); exit; } t_relay(); exit; }
            if (is_method("REGISTER")) { save("location"); exit; }
            if (!lookup("location")) { sl_send_reply("404", "Not Found"); exit; }
            record_route();
            $du = "sip:127.0.0.1:\(kam.tlsPort);transport=tls";
            t_relay();
        }
        """
        let proxy = try defaultProxy(pki, script: script)
        defer { proxy.stop() }
        let phone = try Background.ua(["phone", "--proto", "udp", "--port", String(proxy.port(.udp)), "--user", "alice", "--duration", "10"])
        defer { phone.stop() }
        #expect(phone.wait(for: "REGISTERED"))
        let caller = Subprocess.run("python3", [Paths.peers + "/ua.py", "call", "--proto", "udp", "--port", String(proxy.port(.udp)), "--to", "alice"], timeout: 20)
        #expect(caller.out.contains("RESPONSE 200"), "\(caller.out) \(proxy.log.lines.suffix(6)) \(kam.logLines.suffix(6))")
        // Ours twice (UDP and TLS legs), Kamailio's at least once.
        #expect(caller.lines.contains { $0.hasPrefix("CALL-OK routes") && (Int($0.split(separator: " ").last ?? "0") ?? 0) >= 3 }, "\(caller.out)")
        #expect(caller.out.contains("BYE-OK"), "\(caller.out) \(proxy.log.lines.suffix(6))")
        #expect(phone.wait(for: "BYE-RECEIVED"))
    }
}
