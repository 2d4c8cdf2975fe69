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
    static let script = """
    loadmodule "tm.so"
    loadmodule "sl.so"
    loadmodule "registrar.so"
    loadmodule "usrloc.so"
    loadmodule "textops.so"
    modparam("usrloc", "db_mode", 0)
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
}
