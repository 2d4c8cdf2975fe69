import CSQLite
import Foundation
import SIPConfig
import SIPCore
@testable import SIPProxy
import SIPTransport
import Testing

/// Issue 15 item 7: the route script cannot hang or trap on what a message
/// brings, network text is escaped before logs and `ctl` tables, and the
/// local files and sockets are made safely.
@Suite("Script and local safety (issue 15 item 7)", .serialized)
struct ScriptSafetyTests {
    /// Runs the main request route of `proxy` on one INVITE with `headers`.
    static func run(_ proxy: TestProxy, headers: String = "") throws -> (Flow, MessageContext) {
        let ctx = try RoutingRuleTests.context(proxy, RoutingRuleTests.request("sip:bob@example.com", headers: headers))
        let block = try #require(proxy.core.script.mainRequest)
        return (proxy.core.run(block: block, ctx), ctx)
    }

    static func faults(_ proxy: TestProxy, _ reason: String) -> Double {
        RoutingRuleTests.sample(proxy, "swiftser_script_faults_total", label: "reason=\"\(reason)\"")
    }

    // MARK: while loops

    @Test("a while loop with an empty body stops at max_while_loops and the script goes on after it; a busy one too; counted")
    func whileLoopLimit() throws {
        let proxy = try TestProxy("""
        listen=udp:127.0.0.1:0
        max_while_loops=7
        request_route {
            while (1) { }
            $var(after) = 1;
            $var(n) = 0;
            while ($var(n) < 1000) { $var(n) = $var(n) + 1; }
            $var(k) = 0;
            while ($var(k) < 7) { $var(k) = $var(k) + 1; }
            exit;
        }
        """)
        defer { proxy.stop() }
        let (flow, ctx) = try Self.run(proxy)
        #expect(flow == .exit)
        #expect(ctx.vars["after"] == .int(1))
        #expect(ctx.vars["n"] == .int(7))
        // A loop that ends by itself within the cap is not a fault.
        #expect(ctx.vars["k"] == .int(7))
        #expect(Self.faults(proxy, "max_while_loops") == 2)
        let (_, again) = try Self.run(proxy)
        #expect(again.vars["n"] == .int(7))
        #expect(Self.faults(proxy, "max_while_loops") == 4)
    }

    @Test("loops with a high max_while_loops still stop the message at the step limit: every round counts, empty bodies included")
    func stepLimitCountsRounds() throws {
        let proxy = try TestProxy("""
        listen=udp:127.0.0.1:0
        max_while_loops=1000000
        request_route {
            $var(i) = 0;
            while ($var(i) < 1000) { $var(i) = $var(i) + 1; while (1) { } }
            $var(after) = 1;
        }
        """)
        defer { proxy.stop() }
        let (flow, ctx) = try Self.run(proxy)
        #expect(flow == .exit)
        #expect(ctx.vars["after"] == nil)
        #expect(Self.faults(proxy, "max_steps") == 1)
        #expect(ctx.steps <= ProxyCore.maxSteps + 1)
    }

    // MARK: arithmetic

    @Test("arithmetic cannot trap: Int.min / -1 and % -1, / 0 and % 0, + overflow, a 30-digit header as a number")
    func arithmetic() throws {
        let proxy = try TestProxy("""
        listen=udp:127.0.0.1:0
        request_route {
            $var(min) = 0 - 9223372036854775807 - 1;
            $var(q) = $var(min) / -1;
            $var(r) = $var(min) % -1;
            $var(z) = 5 / 0;
            $var(zm) = 5 % $var(unset);
            $var(o) = 9223372036854775807 + 1;
            $var(p) = $var(min) * -1;
            $var(big) = $hdr(X-Big) * 1;
            if ($hdr(X-Big) > 5) { $var(gt) = 1; } else { $var(gt) = 0; }
            $var(after) = 1;
        }
        """)
        defer { proxy.stop() }
        let (_, ctx) = try Self.run(proxy, headers: "X-Big: 123456789012345678901234567890\r\n")
        #expect(ctx.vars["min"] == .int(Int.min))
        #expect(ctx.vars["q"] == .int(Int.min))
        #expect(ctx.vars["r"] == .int(0))
        #expect(ctx.vars["z"] == .int(0))
        #expect(ctx.vars["zm"] == .int(0))
        #expect(ctx.vars["o"] == .int(Int.min))
        #expect(ctx.vars["p"] == .int(Int.min))
        #expect(ctx.vars["big"] == .int(0))
        #expect(ctx.vars["gt"] == .int(0))
        #expect(ctx.vars["after"] == .int(1))
        #expect(Self.faults(proxy, "division_by_zero") == 2)
        #expect(Self.faults(proxy, "overflow") == 2)
        // The function itself, at the edges.
        #expect(proxy.core.arithmetic("/", Int.min, -1) == Int.min)
        #expect(proxy.core.arithmetic("%", Int.min, -1) == 0)
        #expect(proxy.core.arithmetic("/", 7, 0) == 0)
        #expect(proxy.core.arithmetic("-", Int.min, 1) == Int.max)
        #expect(proxy.core.arithmetic("*", Int.max, 2) == -2)
        #expect(Value.str("99999999999999999999999999999").int == 0)
        #expect(Value.str("-9223372036854775809").int == 0)
    }

    // MARK: regular expressions

    @Test("a regex made at run time that does not compile: =~ and !~ are both false, the script goes on, counted, logged once")
    func runtimeRegex() throws {
        let proxy = try TestProxy("""
        listen=udp:127.0.0.1:0
        request_route {
            $var(re) = $hdr(X-Re);
            if ($ua =~ $var(re)) { $var(m) = 1; } else { $var(m) = 2; }
            if ($ua !~ $var(re)) { $var(n) = 1; } else { $var(n) = 2; }
            if ($ua =~ $hdr(X-Good)) { $var(g) = 1; } else { $var(g) = 2; }
            $var(after) = 1;
        }
        """)
        defer { proxy.stop() }
        let headers = "User-Agent: friendly-scanner\r\nX-Re: (unclosed\u{1B}[31m\r\nX-Good: ^friendly\r\n"
        let (_, ctx) = try Self.run(proxy, headers: headers)
        _ = try Self.run(proxy, headers: headers)
        #expect(ctx.vars["m"] == .int(2))
        #expect(ctx.vars["n"] == .int(2))
        #expect(ctx.vars["g"] == .int(1))
        #expect(ctx.vars["after"] == .int(1))
        #expect(Self.faults(proxy, "invalid_regex") == 4)
        let logged = proxy.log.lines.filter { $0.contains("(unclosed") }
        #expect(logged.count == 1, "\(logged)")
        #expect(!proxy.log.lines.contains { $0.contains("\u{1B}") })
    }

    // MARK: escaping

    @Test("xlog escapes the values it prints (ESC, DEL from a header) and keeps the script's own text")
    func xlogEscapes() throws {
        let proxy = try TestProxy("""
        listen=udp:127.0.0.1:0
        loadmodule "xlog.so"
        request_route { xlog("L_ERR", "evil=[$hdr(X-Evil)] ua=[$ua]\\n"); $var(v) = $hdr(X-Evil); xlog("L_ERR", $var(v)); }
        """)
        defer { proxy.stop() }
        _ = try Self.run(proxy, headers: "X-Evil: a\u{1B}[2Jb\u{7F}c\r\nUser-Agent: ua\u{1B}]0;title\u{07}\r\n")
        #expect(proxy.log.contains("evil=[a\\x1B[2Jb\\x7Fc] ua=[ua\\x1B]0;title\\x07]"), "\(proxy.log.lines)")
        #expect(proxy.log.lines.filter { $0.contains("a\\x1B[2Jb\\x7Fc") }.count == 2, "\(proxy.log.lines)")
        #expect(!proxy.log.lines.contains { $0.unicodeScalars.contains { $0.value == 0x1B || $0.value == 0x7F || $0.value == 0x07 } })
    }

    @Test("ctl output: the table form writes CR, LF, ESC in keys and values as \\xHH, one row per line; JSON escapes them")
    func controlText() throws {
        let rows: [[String: Any]] = [
            ["contact": "sip:a@192.0.2.1\r\nX-Forged: 1", "user_agent": "ua\u{1B}[31m", "expires": 60],
            ["contact": "sip:b@192.0.2.2", "user_agent": NSNull(), "expires": 30],
        ]
        let table = ControlText.table(rows)
        #expect(table.split(separator: "\n", omittingEmptySubsequences: false).count == 3, "\(table)")
        #expect(!table.unicodeScalars.contains { ($0.value < 0x20 && $0 != "\n") || $0.value == 0x7F })
        #expect(table.contains("sip:a@192.0.2.1\\x0D\\x0AX-Forged: 1") && table.contains("ua\\x1B[31m"), "\(table)")
        let object = ControlText.table(["key\u{1B}": ["sni": "evil\r\n.example"]])
        #expect(object == "key\\x1B:\n  sni: evil\\x0D\\x0A.example", "\(object)")
        #expect(ControlText.json("a\u{1B}\r\n\"\\") == "\"a\\u001B\\r\\n\\\"\\\\\"")
        let json = ControlText.json(rows)
        #expect(!json.unicodeScalars.contains { $0.value < 0x20 && $0 != "\n" })
    }

    @Test("a parse error's log text escapes what it quotes from the message; the 400's status line drops control characters")
    func parseErrorText() throws {
        let e = SIPParseError(.malformedHeader, header: "Via", offset: 40, "parameter 'a\u{1B}[2J' has '=' but no value")
        #expect(e.description == "Via: parameter 'a\\x1B[2J' has '=' but no value (offset 40)")
        let request = try #require(try? SIPMessage.parse(Array(RoutingRuleTests.request("sip:bob@example.com").utf8)))
        let reply = SIPResponseBuilder.response(to: request, code: e.statusCode, reason: e.reasonPhrase, toTag: nil)
        let statusLine = reply.prefix { $0 != 0x0D }
        #expect(!statusLine.contains(0x1B) && statusLine.count > 20, "\(String(decoding: statusLine, as: UTF8.self))")
        #expect((try? SIPMessage.parse(reply)) != nil)
    }

    // MARK: control socket

    @Test("the control socket appears at its path with mode 0600, bound in a private directory that is then removed; a stale socket is replaced")
    func controlSocket() throws {
        let dir = makeTempDir("ctlsock")
        // A stale socket from an earlier run.
        let stale = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(stale) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array((dir + "/ctl.sock").utf8CString)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in bytes.withUnsafeBytes { raw.copyMemory(from: $0) } }
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(stale, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        #expect(rc == 0)
        let proxy = try TestProxy("listen=udp:127.0.0.1:0\nrequest_route { drop; }\n", dir: dir)
        defer { proxy.stop() }
        var st = stat()
        #expect(lstat(dir + "/ctl.sock", &st) == 0)
        #expect((st.st_mode & S_IFMT) == S_IFSOCK)
        #expect(st.st_mode & 0o777 == 0o600, "mode \(String(st.st_mode & 0o777, radix: 8))")
        let left = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix(".ctl.") }
        #expect(left.isEmpty, "\(left)")
        #expect(ControlSocket.call(dir + "/ctl.sock", "core.version")["result"] is String)
    }

    @Test("a control socket path too long once bound in the private directory is refused with a typed error")
    func controlSocketPathTooLong() throws {
        let dir = makeTempDir("ctllong")
        let name = String(repeating: "d", count: max(1, 100 - dir.utf8.count))
        try FileManager.default.createDirectory(atPath: dir + "/" + name, withIntermediateDirectories: true)
        #expect(throws: ControlServer.StartError.self) {
            let proxy = try TestProxy("listen=udp:127.0.0.1:0\ncontrol_socket=\"\(dir)/\(name)/c\"\nrequest_route { drop; }\n", dir: dir)
            proxy.stop()
        }
    }

    // MARK: UDP

    @Test("the UDP listener does not share its port: a second bind with SO_REUSEADDR and SO_REUSEPORT fails while the proxy runs")
    func udpPortNotShared() throws {
        let proxy = try TestProxy("listen=udp:127.0.0.1:0\nrequest_route { drop; }\n")
        defer { proxy.stop() }
        let port = proxy.port(.udp)
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        #expect(fd >= 0)
        defer { close(fd) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, socklen_t(MemoryLayout<Int32>.size))
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = port.bigEndian
        sin.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &sin) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        let err = errno
        #expect(rc == -1 && err == EADDRINUSE, "rc \(rc) errno \(err)")
    }

    // MARK: SQLite

    @Test("location and subscriber databases are created mode 0600 (their -wal and -shm too)")
    func databaseModes() throws {
        let dir = makeTempDir("dbmode")
        let location = try LocationService(path: dir + "/location.sqlite")
        let subscribers = try SubscriberStore(path: dir + "/subscriber.sqlite")
        defer { location.close() }
        _ = subscribers
        for name in try FileManager.default.contentsOfDirectory(atPath: dir) {
            var st = stat()
            #expect(stat(dir + "/" + name, &st) == 0)
            #expect(st.st_mode & 0o777 == 0o600, "\(name) mode \(String(st.st_mode & 0o777, radix: 8))")
        }
    }

    @Test("a database file of random bytes is refused at start with its path and a typed reason (location and subscriber stores)")
    func corruptDatabase() throws {
        let dir = makeTempDir("dbcorrupt")
        let path = dir + "/location.sqlite"
        var bytes = [UInt8](repeating: 0, count: 8192)
        var rng = SystemRandomNumberGenerator()
        for i in bytes.indices { bytes[i] = UInt8.random(in: 0...255, using: &rng) }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        do {
            _ = try LocationService(path: path)
            Issue.record("a file of random bytes was opened as a location database")
        } catch LocationService.StoreError.open(let e) {
            #expect(e.path == path)
            #expect(e.problem == .notADatabase)
        }
        do {
            _ = try SubscriberStore(path: path)
            Issue.record("a file of random bytes was opened as a subscriber database")
        } catch SubscriberStore.StoreError.open(let e) {
            #expect(e.path == path)
            #expect(e.problem == .notADatabase)
        }
    }

    @Test("a valid database with one damaged page inside is refused at start as .corrupt (quick_check), not found later by a query")
    func damagedPageInside() throws {
        let dir = makeTempDir("dbpage")
        let path = dir + "/location.sqlite"
        var db: OpaquePointer?
        #expect(sqlite3_open(path, &db) == SQLITE_OK)
        let made = sqlite3_exec(db, """
            CREATE TABLE filler(x BLOB);
            WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 3000)
            INSERT INTO filler SELECT randomblob(200) FROM c;
            """, nil, nil, nil)
        #expect(made == SQLITE_OK)
        sqlite3_close(db)
        // The header and the schema (pages 1-2) stay good; a page of the
        // table's b-tree gets garbage over its header.
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        try handle.seek(toOffset: 4096 * 40)
        try handle.write(contentsOf: Data(repeating: 0xA5, count: 64))
        try handle.close()
        for open in [{ _ = try LocationService(path: path) }, { _ = try SubscriberStore(path: path) }] as [() throws -> Void] {
            do {
                try open()
                Issue.record("a database with a damaged page was opened")
            } catch LocationService.StoreError.open(let e) {
                #expect(e.path == path)
                #expect(e.problem == .corrupt)
            } catch SubscriberStore.StoreError.open(let e) {
                #expect(e.path == path)
                #expect(e.problem == .corrupt)
            }
        }
    }

    @Test("swiftser refuses to start on a location database of random bytes: exit 1, the path named, nothing left running",
          .enabled(if: FileManager.default.fileExists(atPath: swiftserBinary)))
    func startRefusesCorruptDatabase() throws {
        let dir = makeTempDir("dbstart")
        let db = dir + "/location.sqlite"
        try Data((0..<8192).map { _ in UInt8.random(in: 0...255) }).write(to: URL(fileURLWithPath: db))
        try """
        listen=udp:127.0.0.1:\(freePort())
        disable_tls=yes
        control_socket="ctl.sock"
        loadmodule "usrloc.so"
        loadmodule "registrar.so"
        modparam("usrloc", "db_url", "sqlite://location.sqlite")
        modparam("usrloc", "db_mode", 1)
        request_route { drop; }
        """.write(toFile: dir + "/s.cfg", atomically: true, encoding: .utf8)
        let r = Subprocess.run(swiftserBinary, ["-f", dir + "/s.cfg"], timeout: 30)
        #expect(r.status == 1, "\(r.out) \(r.err)")
        #expect((r.out + r.err).contains(db), "\(r.out) \(r.err)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/ctl.sock"))
    }

    @Test("a database another process holds locked is refused at start (after the busy timeout) with its path and .locked")
    func lockedDatabase() throws {
        let dir = makeTempDir("dblocked")
        let path = dir + "/location.sqlite"
        var other: OpaquePointer?
        #expect(sqlite3_open(path, &other) == SQLITE_OK)
        defer { sqlite3_close(other) }
        #expect(sqlite3_exec(other, "CREATE TABLE t (x); BEGIN EXCLUSIVE; INSERT INTO t VALUES (1);", nil, nil, nil) == SQLITE_OK)
        do {
            _ = try LocationService(path: path)
            Issue.record("a locked database was opened")
        } catch LocationService.StoreError.open(let e) {
            #expect(e.path == path)
            #expect(e.problem == .locked)
        }
        sqlite3_exec(other, "ROLLBACK", nil, nil, nil)
    }
}
