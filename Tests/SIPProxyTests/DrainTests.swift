import Foundation
import Logging
import SIPConfig
import SIPProxy
import ServiceLifecycle
import ServiceLifecycleTestKit
import Testing

/// One SIP request over UDP from an ephemeral port: the first response
/// that comes back (nil when none within `timeout` seconds).
func udpRequest(port: UInt16, _ text: String, timeout: Int = 5) -> String? {
    let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var tv = timeval(tv_sec: timeout, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    var local = sockaddr_in()
    local.sin_family = sa_family_t(AF_INET)
    local.sin_addr.s_addr = inet_addr("127.0.0.1")
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafePointer(to: &local) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
    guard bound == 0 else { return nil }
    _ = withUnsafeMutablePointer(to: &local) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    let localPort = UInt16(bigEndian: local.sin_port)
    var to = sockaddr_in()
    to.sin_family = sa_family_t(AF_INET)
    to.sin_port = port.bigEndian
    to.sin_addr.s_addr = inet_addr("127.0.0.1")
    let bytes = Array(text.replacingOccurrences(of: "{LOCAL_PORT}", with: String(localPort)).replacingOccurrences(of: "\n", with: "\r\n").utf8)
    let sent = bytes.withUnsafeBytes { b in
        withUnsafePointer(to: &to) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, b.baseAddress, b.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    }
    guard sent == bytes.count else { return nil }
    var buf = [UInt8](repeating: 0, count: 65_536)
    let n = recv(fd, &buf, buf.count, 0)
    guard n > 0 else { return nil }
    return String(decoding: buf[0..<n], as: UTF8.self)
}

/// An INVITE to `user`@localhost; `toTag` makes it a request within a dialog.
func inviteText(_ user: String, toTag: String? = nil) -> String {
    let id = UUID().uuidString.prefix(12)
    return """
    INVITE sip:\(user)@localhost SIP/2.0
    Via: SIP/2.0/UDP 127.0.0.1:{LOCAL_PORT};branch=z9hG4bK-d\(id);rport
    Max-Forwards: 70
    From: <sip:caller@localhost>;tag=f\(id)
    To: <sip:\(user)@localhost>\(toTag.map { ";tag=\($0)" } ?? "")
    Call-ID: drain-\(id)
    CSeq: 1 INVITE
    Contact: <sip:caller@127.0.0.1:{LOCAL_PORT}>
    Content-Length: 0


    """
}

/// The status code of a response's first line.
func statusCode(_ response: String?) -> Int? {
    guard let line = response?.split(separator: "\r\n").first else { return nil }
    let parts = line.split(separator: " ")
    return parts.count >= 2 ? Int(parts[1]) : nil
}

/// A proxy that registers and relays statefully, with no authentication.
let drainScript = """
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "registrar.so"
loadmodule "usrloc.so"
loadmodule "textops.so"
loadmodule "siputils.so"
modparam("usrloc", "db_mode", 0)
request_route {
    if (is_method("REGISTER")) { save("location"); exit; }
    if (is_method("OPTIONS")) { sl_send_reply("403", "First"); exit; }
    if (has_totag()) { sl_send_reply("481", "No Dialog Here"); exit; }
    if (!lookup("location")) { sl_send_reply("404", "Not Found"); exit; }
    t_relay();
}
"""

@Suite("Graceful drain and script reload", .serialized)
struct DrainTests {
    @Test("draining (in process): a new INVITE gets 503 with Retry-After; a request within a dialog still runs the script")
    func drainInProcess() throws {
        let proxy = try TestProxy("listen=udp:127.0.0.1:0\nalias=\"localhost\"\nshutdown_timeout=7\n" + drainScript)
        defer { proxy.stop() }
        let port = proxy.port(.udp)
        #expect(statusCode(udpRequest(port: port, inviteText("nobody"))) == 404)
        #expect(!proxy.core.isDraining)
        proxy.core.beginDrain()
        #expect(proxy.core.isDraining)
        let refused = udpRequest(port: port, inviteText("nobody"))
        #expect(statusCode(refused) == 503, "\(refused ?? "no answer")")
        #expect(refused?.lowercased().contains("\r\nretry-after: 7\r\n") == true, "\(refused ?? "")")
        let inDialog = udpRequest(port: port, inviteText("nobody", toTag: "t1"))
        #expect(statusCode(inDialog) == 481, "\(inDialog ?? "no answer")")
    }

    /// True when a TCP connection to 127.0.0.1:`port` is accepted.
    static func acceptsTCP(_ port: UInt16) -> Bool {
        Subprocess.run("python3", ["-c", "import socket; socket.create_connection(('127.0.0.1', \(port)), timeout=3)"], timeout: 10).status == 0
    }

    @Test("ProxyService (in process): runs the script until graceful shutdown, then drains (readiness false) and closes its listeners")
    func proxyServiceGracefulShutdown() async throws {
        let proxy = try TestProxy("listen=udp:127.0.0.1:0\nlisten=tcp:127.0.0.1:0\nalias=\"localhost\"\nshutdown_timeout=7\n" + drainScript)
        defer { proxy.stop() }
        let udp = proxy.port(.udp), tcp = proxy.port(.tcp)
        let service = ProxyService(core: proxy.core, logger: Logger(label: "drain-test"), stopAtOnceSignals: [])
        try await testGracefulShutdown { trigger in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await service.run() }
                #expect(statusCode(udpRequest(port: udp, inviteText("nobody"))) == 404)
                #expect(!proxy.core.isDraining && !proxy.core.metrics.isDraining)
                #expect(Self.acceptsTCP(tcp))
                trigger.triggerGracefulShutdown()
                // No transaction in progress: the drain ends and run() returns.
                try await group.waitForAll()
            }
        }
        #expect(proxy.core.isDraining)
        #expect(proxy.core.metrics.isDraining, "/ready must answer 503 once the drain has begun")
        #expect(!Self.acceptsTCP(tcp))
    }

    @Test("ProxyService (in process): cancelled, it stops at once without a drain")
    func proxyServiceCancelled() async throws {
        let proxy = try TestProxy("listen=udp:127.0.0.1:0\nlisten=tcp:127.0.0.1:0\nalias=\"localhost\"\n" + drainScript)
        defer { proxy.stop() }
        let udp = proxy.port(.udp), tcp = proxy.port(.tcp)
        let service = ProxyService(core: proxy.core, logger: Logger(label: "drain-test"), stopAtOnceSignals: [])
        let running = Task { try await service.run() }
        #expect(statusCode(udpRequest(port: udp, inviteText("nobody"))) == 404)
        running.cancel()
        try await running.value
        #expect(!proxy.core.isDraining)
        #expect(!Self.acceptsTCP(tcp))
    }

    @Test("cfg.reload swaps in a good script; a bad one returns its errors and the running script stays")
    func reloadInProcess() throws {
        let proxy = try TestProxy("listen=udp:127.0.0.1:0\nalias=\"localhost\"\n" + drainScript)
        defer { proxy.stop() }
        let port = proxy.port(.udp)
        let file = proxy.dir + "/proxy.cfg"
        let original = try String(contentsOfFile: file, encoding: .utf8)
        let options = { statusCode(udpRequest(port: port, inviteText("x").replacingOccurrences(of: "INVITE", with: "OPTIONS"))) }
        #expect(options() == 403)

        try original.replacingOccurrences(of: "sl_send_reply(\"403\", \"First\")", with: "sl_send_reply(\"405\", \"Second\")")
            .write(toFile: file, atomically: true, encoding: .utf8)
        let good = ControlSocket.call(proxy.dir + "/ctl.sock", "cfg.reload")
        #expect((good["result"] as? [String: Any])?["reloaded"] as? Bool == true, "\(good)")
        #expect(options() == 405)

        try original.replacingOccurrences(of: "sl_send_reply(\"403\", \"First\")", with: "no_such_function(\"1\")")
            .write(toFile: file, atomically: true, encoding: .utf8)
        let bad = ControlSocket.call(proxy.dir + "/ctl.sock", "cfg.reload")
        let error = bad["error"] as? [String: Any]
        #expect(error?["code"] as? Int == 500, "\(bad)")
        let lines = error?["data"] as? [String] ?? []
        #expect(lines.contains { $0.contains("proxy.cfg:") && $0.contains("no_such_function") }, "\(bad)")
        #expect(options() == 405)
    }

    @Test("a transaction armed with a failure_route before a reload runs the old script's block; new messages run the new script")
    func reloadKeepsArmedTransactions() throws {
        let modules = TestModules.registrar + "\nmodparam(\"tm\", \"fr_timer\", 3000)"
        let main = """
        request_route {
            if (is_method("REGISTER")) { save("location"); exit; }
            if (is_method("OPTIONS")) { sl_send_reply("403", "First"); exit; }
            if (!lookup("location")) { sl_send_reply("404", "Not Found"); exit; }
            t_on_failure("LATE");
            t_relay();
        }
        """
        let proxy = try TestProxy("listen=udp:127.0.0.1:0\nalias=\"localhost\"\n" + modules + "\n" + main + """

        failure_route[LATE] { t_reply("480", "Old Script"); }
        """)
        defer { proxy.stop() }
        let port = proxy.port(.udp)
        let phone = try Background.ua(["phone", "--proto", "udp", "--port", String(port), "--user", "alice", "--answer", "silent", "--duration", "15"])
        defer { phone.stop() }
        #expect(phone.wait(for: "REGISTERED"), "\(phone.lines)")
        let caller = try Background.ua(["call", "--proto", "udp", "--port", String(port), "--to", "alice", "--expect", "480", "--timeout", "15"])
        defer { caller.stop() }
        #expect(phone.wait(for: "INVITE-RECEIVED"), "\(phone.lines)")

        // The new script has another failure_route first: block numbers differ.
        try ("listen=udp:127.0.0.1:0\nalias=\"localhost\"\ncontrol_socket=\"ctl.sock\"\n" + modules + "\n"
             + main.replacingOccurrences(of: "sl_send_reply(\"403\", \"First\")", with: "sl_send_reply(\"405\", \"Second\")") + """

        failure_route[EARLY] { t_reply("486", "Wrong Block"); }
        failure_route[LATE] { t_reply("480", "New Script"); }
        """).write(toFile: proxy.dir + "/proxy.cfg", atomically: true, encoding: .utf8)
        let reloaded = ControlSocket.call(proxy.dir + "/ctl.sock", "cfg.reload")
        #expect((reloaded["result"] as? [String: Any])?["reloaded"] as? Bool == true, "\(reloaded)")
        #expect(statusCode(udpRequest(port: port, inviteText("x").replacingOccurrences(of: "INVITE", with: "OPTIONS"))) == 405)

        #expect(caller.finish(timeout: 20) == 0, "\(caller.lines)")
        #expect(caller.lines.contains("RESPONSE 480 Old Script"), "\(caller.lines) \(proxy.log.lines)")
    }

    static func binaryConfig(_ dir: String, udp: UInt16, tcp: UInt16, http: UInt16? = nil) throws -> String {
        let file = dir + "/drain.cfg"
        try """
        listen=udp:127.0.0.1:\(udp)
        listen=tcp:127.0.0.1:\(tcp)
        alias="localhost"
        disable_tls=1
        control_socket="ctl.sock"
        shutdown_timeout=60
        \(http.map { "http_listen=\"127.0.0.1:\($0)\"" } ?? "")
        \(drainScript)
        """.write(toFile: file, atomically: true, encoding: .utf8)
        return file
    }

    @Test("SIGTERM during a ringing call (real binary): the call gets its CANCEL/487/ACK, a new INVITE gets 503, no new TCP connection, /ready 503 and ctl still answer, exit 0",
          .enabled(if: FileManager.default.fileExists(atPath: swiftserBinary)))
    func sigtermDuringRingingCall() throws {
        let dir = makeTempDir("drain")
        let udp = freePort(), tcp = freePort(), http = freePort()
        let file = try Self.binaryConfig(dir, udp: udp, tcp: tcp, http: http)
        let proxy = try Background(swiftserBinary, ["-f", file])
        defer { proxy.stop() }
        #expect(eventually { Subprocess.run(swiftserBinary, ["ctl", "-s", dir + "/ctl.sock", "core.version"]).status == 0 }, "\(proxy.lines)")
        #expect(try Scrape(port: Int(http), path: "/ready").status == 200)

        let phone = try Background.ua(["phone", "--proto", "tcp", "--port", String(tcp), "--user", "alice", "--answer", "ring", "--duration", "40"])
        defer { phone.stop() }
        #expect(phone.wait(for: "REGISTERED"), "\(phone.lines) \(proxy.lines)")
        let go = dir + "/cancel-now"
        let caller = try Background.ua(["call", "--proto", "tcp", "--port", String(tcp), "--to", "alice", "--cancel", "--cancel-when", go,
                                        "--expect", "487", "--timeout", "40"])
        defer { caller.stop() }
        #expect(caller.wait(for: "RESPONSE 180"), "\(caller.lines) \(proxy.lines)")

        kill(proxy.process.processIdentifier, SIGTERM)
        // Once the drain has begun, a new INVITE is refused with 503 and Retry-After.
        var refused: String?
        #expect(eventually {
            refused = udpRequest(port: udp, inviteText("nobody"), timeout: 2)
            return statusCode(refused) == 503
        }, "\(refused ?? "no answer") \(proxy.lines)")
        #expect(refused?.lowercased().contains("\r\nretry-after: 60\r\n") == true, "\(refused ?? "")")
        // The TCP listener accepts no new connection; the phone's stays.
        let connect = Subprocess.run("python3", ["-c", "import socket; socket.create_connection(('127.0.0.1', \(tcp)), timeout=3)"], timeout: 10)
        #expect(connect.status != 0, "a new TCP connection was accepted while draining")
        #expect(proxy.process.isRunning, "the proxy left before the ringing call ended")
        // While the call drains, the status listener and the control socket still answer: not ready.
        #expect(try Scrape(port: Int(http), path: "/ready").status == 503)
        #expect(Subprocess.run(swiftserBinary, ["ctl", "-s", dir + "/ctl.sock", "core.version"]).status == 0)

        // The call in progress goes on: CANCEL reaches the phone, 487 comes back, the caller ACKs.
        _ = FileManager.default.createFile(atPath: go, contents: Data())
        #expect(caller.finish(timeout: 30) == 0, "\(caller.lines) \(proxy.lines)")
        #expect(caller.lines.contains { $0.hasPrefix("RESPONSE 487") }, "\(caller.lines)")
        #expect(phone.wait(for: "CANCEL-RECEIVED"), "\(phone.lines)")
        // No transaction left: the proxy exits 0 without waiting out shutdown_timeout (60 s).
        let deadline = Date().addingTimeInterval(30)
        while proxy.process.isRunning && Date() < deadline { usleep(50_000) }
        #expect(!proxy.process.isRunning, "the proxy did not exit after its last transaction: \(proxy.lines)")
        if !proxy.process.isRunning {
            #expect(proxy.process.terminationReason == .exit && proxy.process.terminationStatus == 0, "\(proxy.lines)")
        }
    }

    @Test("a second stop signal (SIGTERM, then SIGINT) stops at once (real binary): a ringing call no longer holds the exit; status 0",
          .enabled(if: FileManager.default.fileExists(atPath: swiftserBinary)))
    func secondSigterm() throws {
        let dir = makeTempDir("drain2")
        let udp = freePort(), tcp = freePort()
        let file = try Self.binaryConfig(dir, udp: udp, tcp: tcp)
        let proxy = try Background(swiftserBinary, ["-f", file])
        defer { proxy.stop() }
        #expect(eventually { Subprocess.run(swiftserBinary, ["ctl", "-s", dir + "/ctl.sock", "core.version"]).status == 0 }, "\(proxy.lines)")
        let phone = try Background.ua(["phone", "--proto", "tcp", "--port", String(tcp), "--user", "alice", "--answer", "ring", "--duration", "40"])
        defer { phone.stop() }
        #expect(phone.wait(for: "REGISTERED"), "\(phone.lines) \(proxy.lines)")
        let caller = try Background.ua(["call", "--proto", "tcp", "--port", String(tcp), "--to", "alice", "--timeout", "40"])
        defer { caller.stop() }
        #expect(caller.wait(for: "RESPONSE 180"), "\(caller.lines) \(proxy.lines)")
        kill(proxy.process.processIdentifier, SIGTERM)
        #expect(eventually { statusCode(udpRequest(port: udp, inviteText("nobody"), timeout: 2)) == 503 }, "\(proxy.lines)")
        #expect(proxy.process.isRunning, "the proxy left with a call ringing (shutdown_timeout is 60 s)")
        // SIGINT counts as SIGTERM does.
        kill(proxy.process.processIdentifier, SIGINT)
        let deadline = Date().addingTimeInterval(20)
        while proxy.process.isRunning && Date() < deadline { usleep(50_000) }
        #expect(!proxy.process.isRunning && proxy.process.terminationStatus == 0, "\(proxy.lines)")
    }

    @Test("at the end of the drain an open TLS connection is closed with close_notify (Python ssl sees a clean end), exit 0",
          .enabled(if: FileManager.default.fileExists(atPath: swiftserBinary)))
    func tlsCloseNotify() throws {
        let pki = try TestPKI()
        try pki.issue("server", cn: "localhost", dns: ["localhost"])
        let dir = makeTempDir("drain-tls")
        let port = freePort()
        let file = dir + "/tls.cfg"
        try """
        listen=tls:127.0.0.1:\(port)
        control_socket="ctl.sock"
        modparam("usrloc", "db_mode", 0)
        tls_certificate="\(pki.dir)/server.pem"
        tls_private_key="\(pki.dir)/server.key"
        request_route { sl_send_reply("200", "OK"); }
        """.write(toFile: file, atomically: true, encoding: .utf8)
        let proxy = try Background(swiftserBinary, ["-f", file])
        defer { proxy.stop() }
        #expect(eventually { Subprocess.run(swiftserBinary, ["ctl", "-s", dir + "/ctl.sock", "core.version"]).status == 0 }, "\(proxy.lines)")
        // A TLS client that waits for the server to end the connection and
        // says how it ended: CLEAN (close_notify) or EOF (no close_notify).
        let client = try Background("python3", ["-c", """
        import socket, ssl, sys
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations("\(pki.caFile)")
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", \(port)), timeout=30), server_hostname="localhost", suppress_ragged_eofs=False)
        print("CONNECTED", flush=True)
        try:
            data = s.recv(100)
            print("CLEAN" if data == b"" else "DATA", flush=True)
        except ssl.SSLEOFError:
            print("EOF", flush=True)
        except Exception as e:
            print("ERROR", type(e).__name__, flush=True)
        """])
        defer { client.stop() }
        #expect(client.wait(for: "CONNECTED"), "\(client.lines)")
        kill(proxy.process.processIdentifier, SIGTERM)
        #expect(client.finish(timeout: 20) == 0, "\(client.lines)")
        #expect(client.lines.contains("CLEAN"), "\(client.lines) \(proxy.lines)")
        let deadline = Date().addingTimeInterval(20)
        while proxy.process.isRunning && Date() < deadline { usleep(50_000) }
        #expect(!proxy.process.isRunning && proxy.process.terminationStatus == 0, "\(proxy.lines)")
    }

    @Test("a SIGTERM sent while the proxy is still starting (making its development certificates) is neither lost nor fatal: it drains and exits 0 (real binary)",
          .enabled(if: FileManager.default.fileExists(atPath: swiftserBinary)))
    func sigtermDuringStartUp() throws {
        let dir = makeTempDir("drain-start")
        let file = dir + "/start.cfg"
        try """
        listen=tls:127.0.0.1:\(freePort())
        control_socket="ctl.sock"
        tls_auto_dev_certificates=yes
        tls_certificate="certs/server.pem"
        tls_private_key="certs/server.key"
        tls_ca_list="certs/dev-ca.pem"
        modparam("usrloc", "db_mode", 0)
        request_route { sl_send_reply("200", "OK"); }
        """.write(toFile: file, atomically: true, encoding: .utf8)
        // Started with no signal blocked, as a service manager starts it (a
        // test's thread may have them blocked, and a child inherits that).
        let unblocked = "import os, signal, sys; signal.pthread_sigmask(signal.SIG_SETMASK, []); os.execv(sys.argv[1], sys.argv[1:])"
        let proxy = try Background("python3", ["-c", unblocked, swiftserBinary, "-f", file])
        defer { proxy.stop() }
        // The signal goes as soon as the development CA is written: the
        // server certificate, the listeners and the services are still to come.
        let made = Date().addingTimeInterval(20)
        while !FileManager.default.fileExists(atPath: dir + "/certs/dev-ca.key") && proxy.process.isRunning && Date() < made { usleep(500) }
        kill(proxy.process.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(20)
        while proxy.process.isRunning && Date() < deadline { usleep(20_000) }
        #expect(!proxy.process.isRunning, "the SIGTERM was lost: \(proxy.lines)")
        if !proxy.process.isRunning {
            #expect(proxy.process.terminationReason == .exit && proxy.process.terminationStatus == 0, "\(proxy.lines)")
        }
    }

    @Test("SIGUSR1 and ctl cfg.reload (real binary): a good script takes over, a bad one is refused with its errors",
          .enabled(if: FileManager.default.fileExists(atPath: swiftserBinary)))
    func reloadRealBinary() throws {
        let dir = makeTempDir("reload")
        let udp = freePort(), tcp = freePort()
        let file = try Self.binaryConfig(dir, udp: udp, tcp: tcp)
        let original = try String(contentsOfFile: file, encoding: .utf8)
        let proxy = try Background(swiftserBinary, ["-f", file])
        defer { proxy.stop() }
        let sock = dir + "/ctl.sock"
        #expect(eventually { Subprocess.run(swiftserBinary, ["ctl", "-s", sock, "core.version"]).status == 0 }, "\(proxy.lines)")
        let options = { statusCode(udpRequest(port: udp, inviteText("x").replacingOccurrences(of: "INVITE", with: "OPTIONS"))) }
        #expect(options() == 403)

        try original.replacingOccurrences(of: "sl_send_reply(\"403\", \"First\")", with: "sl_send_reply(\"405\", \"Second\")")
            .write(toFile: file, atomically: true, encoding: .utf8)
        kill(proxy.process.processIdentifier, SIGUSR1)
        #expect(eventually { options() == 405 }, "\(proxy.lines)")

        try original.replacingOccurrences(of: "sl_send_reply(\"403\", \"First\")", with: "if (")
            .write(toFile: file, atomically: true, encoding: .utf8)
        let bad = Subprocess.run(swiftserBinary, ["ctl", "-s", sock, "cfg.reload"])
        #expect(bad.status == 1 && bad.err.contains("drain.cfg:"), "\(bad.out) \(bad.err)")
        kill(proxy.process.processIdentifier, SIGUSR1)
        #expect(options() == 405)

        try original.write(toFile: file, atomically: true, encoding: .utf8)
        let good = Subprocess.run(swiftserBinary, ["ctl", "-s", sock, "cfg.reload"])
        #expect(good.status == 0, "\(good.out) \(good.err)")
        #expect(options() == 403)

        // Nothing in progress: SIGTERM ends it at once with status 0.
        kill(proxy.process.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(20)
        while proxy.process.isRunning && Date() < deadline { usleep(50_000) }
        #expect(!proxy.process.isRunning && proxy.process.terminationStatus == 0, "\(proxy.lines)")
    }
}
