import Foundation
import Logging
import SIPConfig
import SIPProxy
import Testing

/// A client of the control socket: writes `text`, reads until the proxy closes.
enum ControlSocket {
    static func send(_ path: String, _ text: String, halfClose: Bool = false) -> String {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return "" }
        defer { close(fd) }
        var tv = timeval(tv_sec: 15, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8CString)
        guard bytes.count <= MemoryLayout.size(ofValue: addr.sun_path) else { return "" }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in bytes.withUnsafeBytes { raw.copyMemory(from: $0) } }
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard ok == 0 else { return "" }
        let out = Array(text.utf8)
        var sent = 0
        while sent < out.count {
            let n = out[sent...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            sent += n
        }
        if halfClose { shutdown(fd, Int32(SHUT_WR)) }
        var answer = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = read(fd, &buf, buf.count)
            if n <= 0 { break }
            answer.append(contentsOf: buf[0..<n])
        }
        return String(decoding: answer, as: UTF8.self)
    }

    /// One call; the decoded response object (empty when none came).
    static func call(_ path: String, _ method: String, _ params: [Any] = [], id: Int = 7) -> [String: Any] {
        let req: [String: Any] = ["jsonrpc": "2.0", "method": method, "params": params, "id": id]
        let data = (try? JSONSerialization.data(withJSONObject: req)) ?? Data()
        let answer = send(path, String(decoding: data, as: UTF8.self) + "\n")
        return ((try? JSONSerialization.jsonObject(with: Data(answer.utf8))) as? [String: Any]) ?? [:]
    }

    static func errorCode(_ r: [String: Any]) -> Int? { (r["error"] as? [String: Any])?["code"] as? Int }
}

@Suite("JSON-RPC control socket", .serialized)
struct ControlTests {
    @Test("the socket is created with mode 0600")
    func socketMode() throws {
        let proxy = try TestProxy("listen=udp:127.0.0.1:0\nrequest_route { drop; }\n")
        defer { proxy.stop() }
        var st = stat()
        #expect(lstat(proxy.config.core.controlSocket, &st) == 0)
        #expect((st.st_mode & S_IFMT) == S_IFSOCK)
        #expect(st.st_mode & 0o777 == 0o600, "mode \(String(st.st_mode & 0o777, radix: 8))")
    }

    @Test("a control_socket path that is a regular file is not replaced")
    func notASocket() throws {
        let dir = makeTempDir("ctlfile")
        try "keep me".write(toFile: dir + "/ctl.sock", atomically: true, encoding: .utf8)
        #expect(throws: (any Error).self) { try TestProxy("listen=udp:127.0.0.1:0\nrequest_route { drop; }\n", dir: dir) }
        #expect((try? String(contentsOfFile: dir + "/ctl.sock", encoding: .utf8)) == "keep me")
        // A server that did not start leaves the file alone when stopped.
        let proxy = try TestProxy("listen=udp:127.0.0.1:0\nrequest_route { drop; }\n")
        defer { proxy.stop() }
        var config = proxy.config
        config.core.controlSocket = dir + "/ctl.sock"
        let second = ControlServer(core: proxy.core, config: config, logger: Logger(label: "second"))
        #expect(throws: ControlServer.StartError.self) { try second.start(group: proxy.group) }
        second.stop()
        #expect((try? String(contentsOfFile: dir + "/ctl.sock", encoding: .utf8)) == "keep me")
    }

    @Test("core.version, core.uptime, core.psx, core.info, system.listMethods")
    func core() throws {
        let proxy = try TestProxy("listen=udp:127.0.0.1:0\nrequest_route { drop; }\n")
        defer { proxy.stop() }
        let path = proxy.config.core.controlSocket
        let version = ControlSocket.call(path, "core.version")
        #expect(version["jsonrpc"] as? String == "2.0" && version["id"] as? Int == 7)
        #expect((version["result"] as? String)?.hasPrefix("swiftser \(SwiftSERVersion.number)") == true, "\(version)")
        let up = ControlSocket.call(path, "core.uptime")["result"] as? [String: Any]
        #expect((up?["uptime"] as? Int).map { $0 >= 0 } == true && up?["up_since"] is String && up?["now"] is String, "\(String(describing: up))")
        let psx = ControlSocket.call(path, "core.psx")["result"] as? [[String: Any]]
        #expect(psx?.first?["PID"] as? Int == Int(getpid()), "\(String(describing: psx))")
        let info = ControlSocket.call(path, "core.info")["result"] as? [String: Any]
        #expect(info?["version"] as? String == SwiftSERVersion.full)
        let methods = ControlSocket.call(path, "system.listMethods")["result"] as? [String]
        #expect(methods?.contains("ul.dump") == true && methods?.contains("tls.list") == true)
    }

    @Test("JSON-RPC errors: parse error, invalid request, unknown method, bad params; notifications get no answer; batches")
    func errors() throws {
        let proxy = try TestProxy("listen=udp:127.0.0.1:0\nrequest_route { drop; }\n")
        defer { proxy.stop() }
        let path = proxy.config.core.controlSocket
        func decode(_ s: String) -> Any? { try? JSONSerialization.jsonObject(with: Data(s.utf8)) }
        let parse = decode(ControlSocket.send(path, "{\"jsonrpc\": \"2.0\", \"method\": \n")) as? [String: Any]
        #expect(ControlSocket.errorCode(parse ?? [:]) == -32700, "\(String(describing: parse))")
        #expect(parse?["id"] is NSNull)
        let noVersion = decode(ControlSocket.send(path, "{\"method\": \"core.version\", \"id\": 1}\n")) as? [String: Any]
        #expect(ControlSocket.errorCode(noVersion ?? [:]) == -32600)
        let unknown = ControlSocket.call(path, "core.nosuch", id: 9)
        #expect(ControlSocket.errorCode(unknown) == -32601 && unknown["id"] as? Int == 9, "\(unknown)")
        #expect(ControlSocket.errorCode(ControlSocket.call(path, "core.version", ["extra"])) == -32602)
        #expect(ControlSocket.errorCode(ControlSocket.call(path, "ul.lookup", ["location"])) == -32602)
        #expect(ControlSocket.errorCode(ControlSocket.call(path, "cfg.get", ["core", "nosuch"])) == -32602)
        let named = decode(ControlSocket.send(path, "{\"jsonrpc\":\"2.0\",\"method\":\"ul.lookup\",\"params\":{\"table\":\"location\"},\"id\":2}\n")) as? [String: Any]
        #expect(ControlSocket.errorCode(named ?? [:]) == -32602)
        // A notification (no id) is carried out and not answered.
        #expect(ControlSocket.send(path, "{\"jsonrpc\":\"2.0\",\"method\":\"cfg.set\",\"params\":[\"core\",\"debug\",2]}\n").isEmpty)
        #expect(proxy.control.logLevel.debug == 2)
        // A batch: one answer per call with an id, in order.
        let batch = decode(ControlSocket.send(path, """
        [{"jsonrpc":"2.0","method":"core.version","id":1},{"jsonrpc":"2.0","method":"nope","id":2},{"jsonrpc":"2.0","method":"core.uptime"}]\n
        """)) as? [[String: Any]]
        #expect(batch?.count == 2 && batch?[0]["result"] is String && ControlSocket.errorCode(batch?[1] ?? [:]) == -32601, "\(String(describing: batch))")
        // Without a newline, the request is read when the client stops writing.
        let halfClosed = decode(ControlSocket.send(path, "{\"jsonrpc\":\"2.0\",\"method\":\"core.version\",\"id\":3}", halfClose: true)) as? [String: Any]
        #expect(halfClosed?["result"] is String, "\(String(describing: halfClosed))")
        // An oversized request is refused.
        let big = decode(ControlSocket.send(path, String(repeating: " ", count: ControlServer.maxRequestSize + 10))) as? [String: Any]
        #expect(ControlSocket.errorCode(big ?? [:]) == -32600)
        // The server still answers.
        #expect(ControlSocket.call(path, "core.version")["result"] is String)
    }

    @Test("cfg.get / cfg.set core debug change the log level at run time")
    func logLevel() throws {
        let proxy = try TestProxy("debug=1\nlisten=udp:127.0.0.1:0\nrequest_route { drop; }\n")
        defer { proxy.stop() }
        let path = proxy.config.core.controlSocket
        #expect(ControlSocket.call(path, "cfg.get", ["core", "debug"])["result"] as? Int == 1)
        #expect(ControlSocket.call(path, "cfg.set", ["core", "debug", 3])["result"] as? Int == 0)
        #expect(ControlSocket.call(path, "cfg.get", ["core", "debug"])["result"] as? Int == 3)
        #expect(proxy.control.logLevel.level == .debug)
        #expect(ControlSocket.call(path, "cfg.set", ["core", "debug", "-1"])["result"] as? Int == 0)
        #expect(proxy.control.logLevel.level == .error)
        #expect(ControlSocket.errorCode(ControlSocket.call(path, "cfg.set", ["core", "debug", 9])) == -32602)
        #expect(ControlSocket.errorCode(ControlSocket.call(path, "cfg.set", ["core", "debug", "loud"])) == -32602)
        #expect(ControlSocket.call(path, "cfg.get", ["core", "debug"])["result"] as? Int == -1)
    }

    @Test("ul.dump, ul.lookup, ul.rm and stats.get_statistics over a registration; tls.list shows the phone's TLS connection")
    func usrlocAndTLS() throws {
        let pki = try TestPKI()
        let (cert, key) = try pki.issue("phone", cn: "phone1")
        let proxy = try defaultProxy(pki, extra: "tls_verify=1\ntls_require_certificate=0")
        defer { proxy.stop() }
        let path = proxy.config.core.controlSocket
        let phone = try Background.ua(["phone", "--proto", "tls", "--port", String(proxy.port(.tls)), "--user", "alice",
                                       "--ca", pki.caFile, "--cert", cert, "--key", key, "--duration", "20"])
        defer { phone.stop() }
        #expect(phone.wait(for: "REGISTERED"), "\(phone.lines)")

        let dump = ControlSocket.call(path, "ul.dump")["result"] as? [String: Any]
        let domain = ((dump?["Domains"] as? [[String: Any]])?.first?["Domain"] as? [String: Any])
        let aors = domain?["AoRs"] as? [[String: Any]]
        let info = aors?.first?["Info"] as? [String: Any]
        #expect(domain?["Domain"] as? String == "location")
        #expect(info?["AoR"] as? String == "alice@localhost", "\(String(describing: dump))")
        let contact = ((info?["Contacts"] as? [[String: Any]])?.first?["Contact"] as? [String: Any])
        #expect((contact?["Address"] as? String)?.hasPrefix("sip:alice@") == true && (contact?["Expires"] as? Int).map { $0 > 0 } == true, "\(String(describing: contact))")

        let lookup = ControlSocket.call(path, "ul.lookup", ["location", "alice@localhost"])["result"] as? [String: Any]
        #expect(lookup?["AoR"] as? String == "alice@localhost" && (lookup?["Contacts"] as? [Any])?.count == 1, "\(String(describing: lookup))")
        // A SIP URI names the same AOR.
        #expect(ControlSocket.call(path, "ul.lookup", ["location", "sip:alice@LOCALHOST"])["result"] != nil)
        #expect(ControlSocket.errorCode(ControlSocket.call(path, "ul.lookup", ["location", "bob@localhost"])) == 404)
        #expect(ControlSocket.errorCode(ControlSocket.call(path, "ul.lookup", ["aliases", "alice@localhost"])) == 404)

        let stats = ControlSocket.call(path, "stats.get_statistics", ["all"])["result"] as? [String]
        #expect(stats?.contains("usrloc:registered_users = 1") == true, "\(String(describing: stats))")
        #expect(stats?.contains("tls:current_opened_connections = 1") == true, "\(String(describing: stats))")
        let tlsInfo = ControlSocket.call(path, "tls.info")["result"] as? [String: Any]
        #expect(tlsInfo?["opened_connections"] as? Int == 1 && tlsInfo?["max_connections"] as? Int == 2048, "\(String(describing: tlsInfo))")
        let group = ControlSocket.call(path, "stats.get_statistics", ["usrloc:"])["result"] as? [String]
        #expect(group?.isEmpty == false && group?.allSatisfy { $0.hasPrefix("usrloc:") } == true)

        // tls.list: the phone's connection, with its version, cipher, certificate subject and age.
        let list = ControlSocket.call(path, "tls.list")["result"] as? [[String: Any]]
        #expect(list?.count == 1, "\(String(describing: list))")
        let c = list?.first
        #expect((c?["peer"] as? String)?.hasPrefix("127.0.0.1:") == true)
        #expect((c?["version"] as? String)?.hasPrefix("TLSv1.") == true && (c?["cipher"] as? String)?.isEmpty == false, "\(String(describing: c))")
        #expect((c?["subject"] as? String)?.contains("phone1") == true && c?["verified"] as? Bool == true, "\(String(describing: c))")
        #expect((c?["age"] as? Int).map { $0 >= 0 } == true && c?["direction"] as? String == "in")

        #expect(ControlSocket.call(path, "ul.rm", ["location", "alice@localhost"])["result"] as? String == "ok")
        #expect(proxy.location.bindings(for: "alice@localhost").isEmpty)
        #expect(ControlSocket.errorCode(ControlSocket.call(path, "ul.rm", ["location", "alice@localhost"])) == 404)
        let after = ControlSocket.call(path, "stats.get_statistics", ["registered_users"])["result"] as? [String]
        #expect(after == ["usrloc:registered_users = 0"], "\(String(describing: after))")
    }

    @Test("tls.list gives the SNI a client sent; tls.options lists the domains; tls.reload answers Kamailio's way and keeps the running files on failure")
    func tlsMethods() throws {
        let pki = try TestPKI()
        let proxy = try defaultProxy(pki)
        defer { proxy.stop() }
        let path = proxy.config.core.controlSocket
        let client = try Background("openssl", ["s_client", "-connect", "127.0.0.1:\(proxy.port(.tls))", "-servername", "sni.example.test", "-ign_eof", "-CAfile", pki.caFile])
        defer { client.stop() }
        #expect(client.wait(for: "Verify return code: 0") || client.wait(for: "Verification: OK"), "\(client.lines)")
        var list: [[String: Any]] = []
        for _ in 0..<100 {
            list = ControlSocket.call(path, "tls.list")["result"] as? [[String: Any]] ?? []
            if list.first?["state"] as? String == "established" { break }
            usleep(50_000)
        }
        #expect(list.first?["sni"] as? String == "sni.example.test", "\(list)")
        #expect(list.first?["domain"] as? String == "server:default", "\(list)")

        let options = ControlSocket.call(path, "tls.options")["result"] as? [[String: Any]]
        let server = options?.first { $0["name"] as? String == "server:default" }
        #expect((server?["subject"] as? String)?.contains("localhost") == true && server?["certificate"] as? String == pki.dir + "/server.pem", "\(String(describing: options))")
        #expect(options?.contains { $0["name"] as? String == "client:default" } == true)

        #expect(ControlSocket.call(path, "tls.reload")["result"] as? String == "Ok. TLS configuration reloaded.")
        try "not a certificate".write(toFile: pki.dir + "/server.pem", atomically: true, encoding: .utf8)
        let failed = ControlSocket.call(path, "tls.reload")
        #expect(ControlSocket.errorCode(failed) == 500, "\(failed)")
        #expect(OpenSSLClientTests.negotiated(OpenSSLClientTests.sClient(proxy.port(.tls), [])))
    }
}
