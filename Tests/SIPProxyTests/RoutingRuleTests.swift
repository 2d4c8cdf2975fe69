import Foundation
import NIOCore
import SIPConfig
import SIPCore
@testable import SIPProxy
import SIPTransport
import Testing

/// RFC 3261 §16 routing rules, decided by the core's own functions
/// (`prepare`, `processRoutes`, `handleResponse`, `splitBreadth`) on
/// messages made here: nothing is sent to a peer, nothing waits.
@Suite("Routing rules: Record-Route, strict routers, loops, Max-Breadth, stray responses", .serialized)
struct RoutingRuleTests {
    static let script = """
    loadmodule "tm.so"
    loadmodule "sl.so"
    request_route { t_relay(); }
    """

    static func request(_ ruri: String, method: String = "INVITE", headers: String = "", callID: String = "rr-1") -> String {
        """
        \(method) \(ruri) SIP/2.0\r
        Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK-c1\r
        Max-Forwards: 70\r
        From: <sip:alice@example.com>;tag=a1\r
        To: <sip:bob@example.com>\r
        Call-ID: \(callID)\r
        CSeq: 1 \(method)\r
        \(headers)Content-Length: 0\r
        \r

        """
    }

    static func received(_ proxy: TestProxy, _ text: String, proto: TransportProtocol = .udp) throws -> ReceivedMessage {
        let m = try SIPMessage.parse(Array(text.utf8))
        let l = try #require(proxy.transport.listeners.first { $0.proto == proto })
        return ReceivedMessage(message: m, source: try SocketAddress(ipAddress: "192.0.2.7", port: 5060), listener: l, proto: proto, connection: nil)
    }

    static func context(_ proxy: TestProxy, _ text: String, proto: TransportProtocol = .udp) throws -> MessageContext {
        let r = try received(proxy, text, proto: proto)
        return MessageContext(received: r, checked: try r.message.validate())
    }

    static func prepare(_ proxy: TestProxy, _ ctx: MessageContext) throws -> OutgoingRequest {
        try proxy.core.prepare(ctx, target: Target(uri: ctx.message.requestURIString ?? "", destination: nil), forced: nil, branchIndex: 0)
    }

    static func routes(_ m: SIPMessage) throws -> [String] { try m.routes().map { $0.uri.description } }

    /// A counter of the proxy's /metrics, read in-process.
    static func sample(_ proxy: TestProxy, _ name: String, label: String? = nil) -> Double {
        let text = String(decoding: proxy.core.metrics.render(core: proxy.core), as: UTF8.self)
        var total = 0.0
        for line in text.split(separator: "\n") where line.hasPrefix(name) && !line.hasPrefix("#") {
            if let label, !line.contains(label) { continue }
            total += Double(line.split(separator: " ").last ?? "") ?? 0
        }
        return total
    }

    // MARK: Record-Route (RFC 5630)

    @Test("Record-Route is sips: when the Request-URI or the top Route is sips:; sip: with transport=tls otherwise (RFC 5630)")
    func sipsRecordRoute() throws {
        let pki = try TestPKI()
        let proxy = try tlsProxy(pki, "", script: Self.script)
        defer { proxy.stop() }
        func recordRoute(_ ruri: String, route: String? = nil) throws -> String {
            let ctx = try Self.context(proxy, Self.request(ruri, headers: route.map { "Route: \($0)\r\n" } ?? ""), proto: .tls)
            ctx.recordRoute = true
            let out = try Self.prepare(proxy, ctx)
            #expect(out.destination.proto == .tls)
            return out.message.headerValue(.recordRoute).map { String(decoding: $0, as: UTF8.self) } ?? ""
        }
        let byURI = try recordRoute("sips:bob@127.0.0.1:5099")
        #expect(byURI.hasPrefix("<sips:127.0.0.1:") && !byURI.contains("transport="), "\(byURI)")
        let byRoute = try recordRoute("sip:bob@example.com", route: "<sips:127.0.0.1:5098;lr>")
        #expect(byRoute.hasPrefix("<sips:127.0.0.1:"), "\(byRoute)")
        let plain = try recordRoute("sip:bob@127.0.0.1:5099;transport=tls")
        #expect(plain.hasPrefix("<sip:127.0.0.1:") && plain.contains(";transport=tls"), "\(plain)")
    }

    // MARK: Strict routers (§16.6 step 6, §16.4)

    @Test("A strict-router next hop: its URI becomes the Request-URI, the old Request-URI the last Route (§16.6 step 6)")
    func strictNextHop() throws {
        let proxy = try TestProxy("listen=udp:127.0.0.1:0\n" + Self.script)
        defer { proxy.stop() }
        let ctx = try Self.context(proxy, Self.request("sip:bob@example.com", headers: "Route: <sip:127.0.0.1:5097>, <sip:10.0.0.1;lr>\r\n"))
        let out = try Self.prepare(proxy, ctx)
        #expect(out.message.requestURIString == "sip:127.0.0.1:5097")
        #expect(try Self.routes(out.message) == ["sip:10.0.0.1;lr", "sip:bob@example.com"])
        #expect(out.destination.host == "127.0.0.1" && out.destination.port == 5097 && out.destination.proto == .udp)
        // A loose router next hop leaves both alone.
        let loose = try Self.context(proxy, Self.request("sip:bob@example.com", headers: "Route: <sip:127.0.0.1:5097;lr>\r\n"))
        let lout = try Self.prepare(proxy, loose)
        #expect(lout.message.requestURIString == "sip:bob@example.com")
        #expect(try Self.routes(lout.message) == ["sip:127.0.0.1:5097;lr"])
        #expect(lout.destination.port == 5097)
    }

    @Test("Strict-router repair: a Request-URI that is our Record-Route gives way to the last Route (§16.4); our top Route is removed")
    func strictRepair() throws {
        let proxy = try TestProxy("listen=udp:127.0.0.1:0\n" + Self.script)
        defer { proxy.stop() }
        let port = proxy.port(.udp)
        let repaired = try Self.context(proxy, Self.request("sip:127.0.0.1:\(port);lr", headers: "Route: <sip:10.0.0.1;lr>, <sip:bob@example.com>\r\n"))
        proxy.core.processRoutes(repaired)
        #expect(repaired.message.requestURIString == "sip:bob@example.com")
        #expect(try Self.routes(repaired.message) == ["sip:10.0.0.1;lr"])
        #expect(repaired.routesRemain)
        // Loose routing: only our own value comes off the top.
        let loose = try Self.context(proxy, Self.request("sip:bob@example.com", headers: "Route: <sip:127.0.0.1:\(port);lr>, <sip:10.0.0.1;lr>\r\n"))
        proxy.core.processRoutes(loose)
        #expect(loose.message.requestURIString == "sip:bob@example.com")
        #expect(try Self.routes(loose.message) == ["sip:10.0.0.1;lr"])
        // Our only Route off: routed by the Request-URI.
        let only = try Self.context(proxy, Self.request("sip:bob@example.com", headers: "Route: <sip:127.0.0.1:\(port);lr>\r\n"))
        proxy.core.processRoutes(only)
        #expect(try Self.routes(only.message).isEmpty)
        #expect(!only.routesRemain)
    }

    @Test("Double Record-Route (r2=on): both of our values come off the top; what follows is counted, not lost (§16.4)")
    func doubleRouteOff() throws {
        let proxy = try TestProxy("listen=udp:127.0.0.1:0\nlisten=tcp:127.0.0.1:0\n" + Self.script)
        defer { proxy.stop() }
        let udp = proxy.port(.udp), tcp = proxy.port(.tcp)
        let ours = "<sip:127.0.0.1:\(udp);lr;r2=on>, <sip:127.0.0.1:\(tcp);transport=tcp;lr;r2=on>"
        let three = try Self.context(proxy, Self.request("sip:bob@example.com", method: "BYE", headers: "Route: \(ours), <sip:10.0.0.1;lr>\r\n"))
        proxy.core.processRoutes(three)
        #expect(try Self.routes(three.message) == ["sip:10.0.0.1;lr"])
        #expect(three.hadRouteSet && three.routesRemain)
        // Four values over two lines: the count spans header lines.
        let four = try Self.context(proxy, Self.request("sip:bob@example.com", method: "BYE",
                                                        headers: "Route: \(ours)\r\nRoute: <sip:10.0.0.1;lr>, <sip:10.0.0.2;lr>\r\n"))
        proxy.core.processRoutes(four)
        #expect(try Self.routes(four.message) == ["sip:10.0.0.1;lr", "sip:10.0.0.2;lr"])
        #expect(four.routesRemain)
        // Only ours: nothing remains, routed by the Request-URI.
        let two = try Self.context(proxy, Self.request("sip:bob@example.com", method: "BYE", headers: "Route: \(ours)\r\n"))
        proxy.core.processRoutes(two)
        #expect(try Self.routes(two.message).isEmpty)
        #expect(two.hadRouteSet && !two.routesRemain)
        // Strict-router repair that cannot read every value (validate()
        // refuses such a request first; the core holds even without it):
        // nothing is changed and the request does not count as loose-routed.
        let badText = Self.request("sip:127.0.0.1:\(udp);lr", method: "BYE", headers: "Route: <sip:10.0.0.1;lr>, <sip:10.0.0.2;lr>, <sip:\r\n")
        let bad = MessageContext(received: try Self.received(proxy, badText), checked: nil)
        proxy.core.processRoutes(bad)
        #expect(!bad.hadRouteSet)
        #expect(bad.message.requestURIString == "sip:127.0.0.1:\(udp);lr")
    }

    @Test("A branch prepared after a DNS look-up uses the request as it was at t_relay(), whatever the script does to its context meanwhile")
    func snapshotForLateBranch() throws {
        let proxy = try TestProxy("listen=udp:127.0.0.1:0\n" + Self.script)
        defer { proxy.stop() }
        let ctx = try Self.context(proxy, Self.request("sip:bob@127.0.0.1:5093"))
        ctx.recordRoute = true
        ctx.maxBreadthPerBranch = 7
        let snapshot = ctx.snapshotForBranch()
        // The request's thread goes on with its script.
        ctx.message.setRequestURI("sip:carol@127.0.0.1:5092")
        ctx.destinationURI = "sip:127.0.0.1:5091"
        ctx.recordRoute = false
        ctx.maxBreadthPerBranch = nil
        let out = try Self.prepare(proxy, snapshot)
        #expect(out.message.requestURIString == "sip:bob@127.0.0.1:5093")
        #expect(out.destination.port == 5093)
        #expect(out.message.headerValue(.recordRoute) != nil)
        #expect(out.message.headerValue("Max-Breadth") == "7")
        #expect(snapshot !== ctx)
    }

    // MARK: Loops (§16.3 step 4)

    @Test("A request that comes back unchanged is a loop (482); one whose Request-URI changed is a spiral and goes on")
    func loopVersusSpiral() throws {
        let proxy = try TestProxy("listen=udp:127.0.0.1:0\n" + Self.script)
        defer { proxy.stop() }
        let first = try Self.context(proxy, Self.request("sip:someone@127.0.0.1:5096"))
        let out = try Self.prepare(proxy, first)
        // It comes back through another proxy (whose Via is on top), unchanged.
        let text = String(decoding: out.bytes, as: UTF8.self)
        let back = text.replacingOccurrences(of: "Via: ", with: "Via: SIP/2.0/UDP 192.0.2.50:5060;branch=z9hG4bK-p2\r\nVia: ", options: [], range: text.range(of: "Via: "))
        let looped = try Self.context(proxy, back)
        #expect(throws: ProxyCore.ForwardError.loop) { try Self.prepare(proxy, looped) }
        #expect(ProxyCore.ForwardError.loop.status.0 == 482)
        // A spiral: the Request-URI was changed on the way (a forward, a lookup).
        let spiral = try Self.context(proxy, back.replacingOccurrences(of: "sip:someone@127.0.0.1:5096 SIP/2.0", with: "sip:other@127.0.0.1:5096 SIP/2.0"))
        let sout = try Self.prepare(proxy, spiral)
        #expect(sout.message.requestURIString == "sip:other@127.0.0.1:5096")
        // A changed Route set is a spiral too.
        let rerouted = try Self.context(proxy, back.replacingOccurrences(of: "Max-Forwards:", with: "Route: <sip:127.0.0.1:5095;lr>\r\nMax-Forwards:"))
        #expect(throws: Never.self) { try Self.prepare(proxy, rerouted) }
    }

    // MARK: Max-Breadth (RFC 5393)

    @Test("Max-Breadth: parallel branches share it (60 when absent); more branches than it allows is 440")
    func maxBreadth() {
        #expect(TransactionLayer.splitBreadth(nil, branches: 2) == .perBranch(30))
        #expect(TransactionLayer.splitBreadth(nil, branches: 60) == .perBranch(1))
        #expect(TransactionLayer.splitBreadth(nil, branches: 61) == .exceeded)
        #expect(TransactionLayer.splitBreadth("10", branches: 3) == .perBranch(3))
        #expect(TransactionLayer.splitBreadth(" 4 ", branches: 4) == .perBranch(1))
        #expect(TransactionLayer.splitBreadth("4", branches: 5) == .exceeded)
        #expect(TransactionLayer.splitBreadth("0", branches: 2) == .exceeded)
        #expect(TransactionLayer.splitBreadth("1", branches: 2) == .exceeded)
    }

    @Test("Max-Breadth goes out on each parallel branch as its share")
    func maxBreadthOnTheWire() throws {
        let proxy = try TestProxy("listen=udp:127.0.0.1:0\n" + Self.script)
        defer { proxy.stop() }
        let ctx = try Self.context(proxy, Self.request("sip:bob@127.0.0.1:5094", headers: "Max-Breadth: 10\r\n"))
        ctx.maxBreadthPerBranch = 5
        let out = try Self.prepare(proxy, ctx)
        #expect(out.message.headerValue("Max-Breadth") == "5")
        #expect(String(decoding: out.bytes, as: UTF8.self).components(separatedBy: "\r\nMax-Breadth:").count == 2)
    }

    // MARK: Responses

    @Test("A response with our top Via that matches no transaction is dropped, not forwarded by its next Via")
    func unmatchedResponseDropped() throws {
        let proxy = try TestProxy("listen=udp:127.0.0.1:0\n" + Self.script)
        defer { proxy.stop() }
        let port = proxy.port(.udp)
        let r = try Self.received(proxy, """
        SIP/2.0 200 OK\r
        Via: SIP/2.0/UDP 127.0.0.1:\(port);branch=z9hG4bKs0aaaaaaaaaaaaabbbb\r
        Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-victim\r
        From: <sip:a@localhost>;tag=1\r
        To: <sip:b@localhost>;tag=2\r
        Call-ID: forged-1\r
        CSeq: 1 INVITE\r
        Content-Length: 0\r
        \r

        """)
        proxy.core.handleResponse(r)
        #expect(Self.sample(proxy, "swiftser_drop_replies_total", label: "no_transaction") == 1)
        #expect(Self.sample(proxy, "swiftser_fwd_replies_total") == 0)
    }

    @Test("A response to a stateless forward is never sent to one of our own addresses")
    func neverToOurselves() throws {
        let proxy = try TestProxy("listen=udp:127.0.0.1:0\n" + Self.script)
        defer { proxy.stop() }
        let port = proxy.port(.udp)
        let r = try Self.received(proxy, """
        SIP/2.0 200 OK\r
        Via: SIP/2.0/UDP 127.0.0.1:\(port);branch=z9hG4bKf0aaaaaaaaaaaaacccc\r
        Via: SIP/2.0/UDP 127.0.0.1:\(port);branch=z9hG4bK-again\r
        From: <sip:a@localhost>;tag=1\r
        To: <sip:b@localhost>;tag=2\r
        Call-ID: self-1\r
        CSeq: 1 OPTIONS\r
        Content-Length: 0\r
        \r

        """)
        proxy.core.handleResponse(r)
        #expect(Self.sample(proxy, "swiftser_drop_replies_total", label: "\"loop\"") == 1)
        #expect(Self.sample(proxy, "swiftser_fwd_replies_total") == 0)
    }

    @Test("A response with more Via values than the limit is refused")
    func tooManyVias() throws {
        let proxy = try TestProxy("listen=udp:127.0.0.1:0\n" + Self.script)
        defer { proxy.stop() }
        let port = proxy.port(.udp)
        func response(vias: Int) -> String {
            var vs = "Via: SIP/2.0/UDP 127.0.0.1:\(port);branch=z9hG4bKs0aaaaaaaaaaaaabbbb\r\n"
            for i in 1..<vias { vs += "Via: SIP/2.0/UDP 127.0.0.1:\(10_000 + i);branch=z9hG4bK-\(i)\r\n" }
            return "SIP/2.0 200 OK\r\n\(vs)From: <sip:a@localhost>;tag=1\r\nTo: <sip:b@localhost>;tag=2\r\nCall-ID: many-vias\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        }
        proxy.core.handleResponse(try Self.received(proxy, response(vias: ProxyCore.maxResponseVias + 1)))
        #expect(Self.sample(proxy, "swiftser_drop_replies_total", label: "too_many_vias") == 1)
        #expect(Self.sample(proxy, "swiftser_fwd_replies_total") == 0)
        // At the limit it is not refused for its Vias (it goes on to matching, and matches nothing).
        proxy.core.handleResponse(try Self.received(proxy, response(vias: ProxyCore.maxResponseVias)))
        #expect(Self.sample(proxy, "swiftser_drop_replies_total", label: "too_many_vias") == 1)
        #expect(Self.sample(proxy, "swiftser_drop_replies_total", label: "no_transaction") == 1)
    }
}
