import CSQLite
import Foundation
import SIPConfig
import NIOCore
import SIPCore
@testable import SIPProxy
import SIPTransport
import Testing

/// Registrar rules of RFC 3261 §10.3 and RFC 5626 that the transaction-core
/// issue named, through real sockets.
@Suite("Registrar: §10.3 ordering and RFC 5626 flows", .serialized)
struct RegistrarRuleTests {
    static let script = TestModules.registrar + """

    request_route {
        if (is_method("REGISTER")) { save("location"); exit; }
        if (!lookup("location")) { sl_reply_error(); exit; }
        t_relay();
    }
    """

    static func register(_ proxy: TestProxy, contact: String, cseq: Int, expires: Int? = nil, callID: String = "reg-1") throws -> String {
        let port = proxy.port(.udp)
        let file = try TransactionFlowTests.messageFile("""
        REGISTER sip:localhost SIP/2.0
        Via: SIP/2.0/UDP 127.0.0.1:{LOCAL_PORT};branch=z9hG4bK-r\(cseq)-\(UUID().uuidString.prefix(8));rport
        Max-Forwards: 70
        From: <sip:alice@localhost>;tag=r1
        To: <sip:alice@localhost>
        Call-ID: \(callID)
        CSeq: \(cseq) REGISTER
        Contact: \(contact)
        \(expires.map { "Expires: \($0)\n" } ?? "")Content-Length: 0


        """)
        return Subprocess.sipclient(["--proto", "udp", "--port", String(port), "--file", file, "--wait", "5"]).out
    }

    @Test("Contact: * with a CSeq not above the binding's fails with 500 and removes nothing (§10.3 step 6)")
    func wildcardOldCSeq() throws {
        let proxy = try TestProxy("listen=udp:127.0.0.1:0\nalias=\"localhost\"\n" + Self.script)
        defer { proxy.stop() }
        #expect(try Self.register(proxy, contact: "<sip:alice@127.0.0.1:5999>", cseq: 5).contains("RESPONSE SIP/2.0 200"))
        let old = try Self.register(proxy, contact: "*", cseq: 4, expires: 0)
        #expect(old.contains("RESPONSE SIP/2.0 500"), "\(old)")
        #expect(proxy.location.bindings(for: "alice@localhost").count == 1)
        let newer = try Self.register(proxy, contact: "*", cseq: 6, expires: 0)
        #expect(newer.contains("RESPONSE SIP/2.0 200"), "\(newer)")
        #expect(proxy.location.bindings(for: "alice@localhost").isEmpty)
    }

    @Test("RFC 5626: one flow of an instance is rung, the most recent live one; only dead flows left gives 430")
    func flows() throws {
        let proxy = try TestProxy("listen=udp:127.0.0.1:0\nlisten=tcp:127.0.0.1:0\nalias=\"localhost\"\n" + Self.script)
        defer { proxy.stop() }
        let now = Int64(Date().timeIntervalSince1970)
        func flow(_ regID: UInt32, proto: String, expires: Int64) -> LocationService.Binding {
            LocationService.Binding(aor: "alice@localhost", contact: "sip:alice@127.0.0.1:\(5900 + Int(regID));transport=\(proto)", expires: now + expires, q: nil,
                                    callID: "c", cseq: 1, instance: "<urn:uuid:00000000-0000-0000-0000-000000000001>", regID: regID, path: [],
                                    proto: proto, receivedIP: "127.0.0.1", receivedPort: 5900 + Int(regID), connectionID: nil, userAgent: nil,
                                    socket: "\(proto):127.0.0.1:5060")
        }
        // Two TCP flows whose connections are gone: 430.
        try proxy.location.replace(aor: "alice@localhost", with: [flow(1, proto: "tcp", expires: 100), flow(2, proto: "tcp", expires: 200)])
        let port = proxy.port(.udp)
        let invite = try TransactionFlowTests.messageFile("""
        MESSAGE sip:alice@localhost SIP/2.0
        Via: SIP/2.0/UDP 127.0.0.1:{LOCAL_PORT};branch=z9hG4bK-flow1;rport
        Max-Forwards: 70
        From: <sip:bob@localhost>;tag=b1
        To: <sip:alice@localhost>
        Call-ID: flow-1
        CSeq: 1 MESSAGE
        Content-Length: 0


        """)
        let dead = Subprocess.sipclient(["--proto", "udp", "--port", String(port), "--file", invite, "--wait", "5"])
        #expect(dead.out.contains("RESPONSE SIP/2.0 430"), "\(dead.out)")
    }

    @Test("RFC 5626: of two live flows of one instance only the most recently refreshed is a target")
    func mostRecentFlow() throws {
        let proxy = try TestProxy("listen=udp:127.0.0.1:0\nalias=\"localhost\"\n" + Self.script)
        defer { proxy.stop() }
        let now = Int64(Date().timeIntervalSince1970)
        func flow(_ regID: UInt32, expires: Int64) -> LocationService.Binding {
            LocationService.Binding(aor: "alice@localhost", contact: "sip:alice@127.0.0.1:\(5900 + Int(regID))", expires: now + expires, q: nil,
                                    callID: "c", cseq: 1, instance: "<urn:uuid:00000000-0000-0000-0000-000000000002>", regID: regID, path: [],
                                    proto: "udp", receivedIP: "127.0.0.1", receivedPort: 5900 + Int(regID), connectionID: nil, userAgent: nil,
                                    socket: "udp:127.0.0.1:5060")
        }
        var other = flow(9, expires: 50)
        other.instance = nil
        other.regID = nil
        try proxy.location.replace(aor: "alice@localhost", with: [flow(1, expires: 100), flow(2, expires: 200), other])
        let m = try SIPMessage.parse("MESSAGE sip:alice@localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5000;branch=z9hG4bK1\r\nFrom: <sip:b@localhost>;tag=1\r\nTo: <sip:alice@localhost>\r\nCall-ID: x\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
        let r = ReceivedMessage(message: m, source: try SocketAddress(ipAddress: "127.0.0.1", port: 5000), listener: proxy.transport.listeners[0], proto: .udp, connection: nil)
        let ctx = MessageContext(received: r)
        #expect(proxy.core.registrarLookup(ctx, table: "location") == 1)
        #expect(Set(ctx.targets.map(\.uri)) == ["sip:alice@127.0.0.1:5902", "sip:alice@127.0.0.1:5909"])
    }

    @Test("RFC 5626: when the most recent flow's connection is gone, the instance's other live flow is rung (fail-over)")
    func flowFailover() throws {
        let proxy = try TestProxy("listen=udp:127.0.0.1:0\nlisten=tcp:127.0.0.1:0\nalias=\"localhost\"\n" + Self.script)
        defer { proxy.stop() }
        let now = Int64(Date().timeIntervalSince1970)
        func flow(_ regID: UInt32, proto: String, expires: Int64) -> LocationService.Binding {
            LocationService.Binding(aor: "alice@localhost", contact: "sip:alice@127.0.0.1:\(5900 + Int(regID));transport=\(proto)", expires: now + expires, q: nil,
                                    callID: "c", cseq: 1, instance: "<urn:uuid:00000000-0000-0000-0000-000000000003>", regID: regID, path: [],
                                    proto: proto, receivedIP: "127.0.0.1", receivedPort: 5900 + Int(regID), connectionID: nil, userAgent: nil,
                                    socket: "\(proto):127.0.0.1:5060")
        }
        // The newer flow is over TCP with no connection left; the older is UDP.
        try proxy.location.replace(aor: "alice@localhost", with: [flow(1, proto: "udp", expires: 100), flow(2, proto: "tcp", expires: 200)])
        let m = try SIPMessage.parse("MESSAGE sip:alice@localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5000;branch=z9hG4bK1\r\nFrom: <sip:b@localhost>;tag=1\r\nTo: <sip:alice@localhost>\r\nCall-ID: x\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
        let r = ReceivedMessage(message: m, source: try SocketAddress(ipAddress: "127.0.0.1", port: 5000), listener: proxy.transport.listeners[0], proto: .udp, connection: nil)
        let ctx = MessageContext(received: r)
        #expect(proxy.core.registrarLookup(ctx, table: "location") == 1)
        #expect(ctx.targets.map(\.uri) == ["sip:alice@127.0.0.1:5901;transport=udp"])
    }

    @Test("REGISTERs for one AOR from 8 threads at once lose no binding (§10.3: one AOR's REGISTERs are serialised)")
    func concurrentRegisters() throws {
        let file = makeTempDir("loc") + "/location.db"
        let script = Self.script.replacingOccurrences(of: "modparam(\"usrloc\", \"db_mode\", 0)", with: "modparam(\"registrar\", \"max_contacts\", 1000)")
        let proxy = try TestProxy("listen=udp:127.0.0.1:0\nalias=\"localhost\"\n" + script, locationFile: file)
        defer { proxy.stop() }
        let listener = try #require(proxy.transport.listeners.first { $0.proto == .udp })
        let threads = 8, each = 50
        // Replies go to the discard port; what counts is the store.
        let source = try SocketAddress(ipAddress: "127.0.0.1", port: 9)
        DispatchQueue.concurrentPerform(iterations: threads) { t in
            for i in 0..<each {
                let text = "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-c\(t)-\(i)\r\nMax-Forwards: 70\r\n"
                    + "From: <sip:alice@localhost>;tag=t\(t)\r\nTo: <sip:alice@localhost>\r\nCall-ID: concurrent-\(t)\r\nCSeq: \(i + 1) REGISTER\r\n"
                    + "Contact: <sip:alice-\(t)-\(i)@127.0.0.1:5999>\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n"
                guard let m = try? SIPMessage.parse(Array(text.utf8)) else { continue }
                // handleRequest, not transport(_:received:): with a database
                // the core runs REGISTERs one at a time on its registrar
                // queue; here they race on purpose, to test the AOR lock.
                proxy.core.handleRequest(ReceivedMessage(message: m, source: source, listener: listener, proto: .udp, connection: nil))
            }
        }
        let bindings = proxy.location.bindings(for: "alice@localhost")
        #expect(bindings.count == threads * each)
        #expect(Set(bindings.map(\.contact)).count == threads * each)
        // The database holds the same bindings (what a restart reads back).
        let reread = try LocationService(path: file)
        defer { reread.close() }
        #expect(reread.bindings(for: "alice@localhost").count == threads * each)
    }

    @Test("Memory changes only after the database commit: a write the database refuses answers 500 and changes nothing")
    func databaseFailure() throws {
        let file = makeTempDir("loc") + "/location.db"
        let proxy = try TestProxy("listen=udp:127.0.0.1:0\nalias=\"localhost\"\n" + Self.script, locationFile: file)
        defer { proxy.stop() }
        #expect(try Self.register(proxy, contact: "<sip:alice@127.0.0.1:5901>", cseq: 1).contains("RESPONSE SIP/2.0 200"))
        let before = proxy.location.bindings(for: "alice@localhost")
        #expect(before.count == 1)
        // A second connection to the same database makes every write fail.
        var db: OpaquePointer?
        #expect(sqlite3_open(file, &db) == SQLITE_OK)
        defer { sqlite3_close(db) }
        let refuse = """
            CREATE TRIGGER refuse_insert BEFORE INSERT ON location BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;
            CREATE TRIGGER refuse_delete BEFORE DELETE ON location BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;
            """
        #expect(sqlite3_exec(db, refuse, nil, nil, nil) == SQLITE_OK)
        // An added contact, a refresh and a removal: each 500, none in memory.
        let added = try Self.register(proxy, contact: "<sip:alice@127.0.0.1:5902>", cseq: 2)
        #expect(added.contains("RESPONSE SIP/2.0 500"), "\(added)")
        let refreshed = try Self.register(proxy, contact: "<sip:alice@127.0.0.1:5901>", cseq: 3, expires: 60)
        #expect(refreshed.contains("RESPONSE SIP/2.0 500"), "\(refreshed)")
        let removed = try Self.register(proxy, contact: "*", cseq: 4, expires: 0)
        #expect(removed.contains("RESPONSE SIP/2.0 500"), "\(removed)")
        #expect(proxy.location.bindings(for: "alice@localhost") == before)
        // The database works again: the next REGISTER is stored.
        #expect(sqlite3_exec(db, "DROP TRIGGER refuse_insert; DROP TRIGGER refuse_delete;", nil, nil, nil) == SQLITE_OK)
        let again = try Self.register(proxy, contact: "<sip:alice@127.0.0.1:5902>", cseq: 5)
        #expect(again.contains("RESPONSE SIP/2.0 200"), "\(again)")
        #expect(proxy.location.bindings(for: "alice@localhost").count == 2)
    }
}
