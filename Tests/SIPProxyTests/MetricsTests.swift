import Foundation
import Logging
import NIOCore
import SIPConfig
import Testing
@testable import SIPProxy

/// One fetch from the HTTP status listener by Tests/Peers/scrape.py, which
/// parses /metrics with prometheus_client's own parser.
struct Scrape {
    var status: Int
    var body: String
    var contentType: String
    var samples: [String: Double]
    var types: [String: String]

    init(port: Int, path: String = "/metrics", method: String = "GET", data: String? = nil) throws {
        let r = Subprocess.run("python3", [Paths.peers + "/scrape.py", "--port", String(port), "--path", path, "--method", method] + (data.map { ["--data", $0] } ?? []), timeout: 20)
        guard let data = r.out.data(using: .utf8),
              let json = try JSONSerialization.jsonObject(with: data) as? [String: Any],
              let status = json["status"] as? Int else {
            throw ScrapeError.unreadable(r.out + r.err)
        }
        self.status = status
        body = json["body"] as? String ?? ""
        contentType = json["content_type"] as? String ?? ""
        samples = (json["samples"] as? [String: Any] ?? [:]).compactMapValues { ($0 as? NSNumber)?.doubleValue }
        types = json["types"] as? [String: String] ?? [:]
    }

    subscript(_ key: String) -> Double? { samples[key] }

    enum ScrapeError: Error { case unreadable(String) }
}

private let metricsScript = """
request_route {
    if (is_method("OPTIONS")) { sl_send_reply("200", "OK"); exit; }
    if (is_method("REGISTER")) {
        if (!auth_check("localhost", "subscriber", "1")) { auth_challenge("localhost", "0"); exit; }
        save("location");
        exit;
    }
    if (is_method("ACK") || is_method("BYE")) { if (loose_route()) { t_relay(); exit; } t_relay(); exit; }
    if (!lookup("location")) { sl_send_reply("404", "Not Found"); exit; }
    record_route();
    t_relay();
}
"""

@Suite("Metrics and health over HTTP", .serialized)
struct MetricsTests {
    @Test("/metrics parses with prometheus_client; OPTIONS, REGISTER (with its 401) and a call move the counters by what was sent; /health and /ready answer 200")
    func countersMove() throws {
        let pki = try TestPKI()
        let proxy = try defaultProxy(pki, extra: "http_listen=127.0.0.1:0", script: metricsScript)
        defer { proxy.stop() }
        let port = try #require(proxy.http?.port)
        let before = try Scrape(port: port)
        #expect(before.status == 200)
        #expect(before.contentType.hasPrefix("text/plain; version=0.0.4"))
        #expect(before.types["swiftser_rcv_requests"] == "counter")
        #expect(before.types["swiftser_active_transactions"] == "gauge")
        #expect(before.types["swiftser_tm_final_response_seconds"] == "histogram")
        #expect(before["swiftser_rcv_requests_total{method=OPTIONS}"] == 0)
        #expect(before["swiftser_registered_users"] == 0)
        #expect(before["swiftser_tls_handshakes_total{outcome=completed}"] == 0)

        let udp = String(proxy.port(.udp))
        for _ in 0..<3 {
            let o = Subprocess.sipclient(["--proto", "udp", "--port", udp, "--options"])
            #expect(o.out.contains("RESPONSE SIP/2.0 200 OK"), "\(o.out)")
        }
        // Over TLS: one handshake completed, one TLS connection open while it lasts.
        let reg = Subprocess.run("python3", [Paths.peers + "/ua.py", "register", "--proto", "tls", "--port", String(proxy.port(.tls)), "--ca", pki.caFile, "--user", "alice"])
        #expect(reg.out.contains("RESPONSE SIP/2.0 200"), "\(reg.out)")

        let after = try Scrape(port: port)
        func delta(_ k: String) -> Double { (after[k] ?? -1) - (before[k] ?? 0) }
        #expect(delta("swiftser_rcv_requests_total{method=OPTIONS}") == 3)
        #expect(delta("swiftser_rcv_requests_total{method=REGISTER}") == 2)
        #expect(delta("swiftser_rcv_requests_total{method=INVITE}") == 0)
        #expect(delta("swiftser_sent_replies_total{class=2xx}") == 4)
        #expect(delta("swiftser_sent_replies_total{class=4xx}") == 1)
        #expect(delta("swiftser_auth_challenges_total") == 1)
        #expect(delta("swiftser_auth_results_total{result=ok}") == 1)
        #expect(delta("swiftser_tls_handshakes_total{outcome=completed}") == 1)
        #expect(after["swiftser_registered_users"] == 1)
        #expect(after["swiftser_location_contacts"] == 1)

        // A call through a transaction to a registered phone: the INVITE is
        // forwarded, 180 and 200 come back and go on, and the latency of
        // its final response is recorded once.
        let phone = try Background.ua(["phone", "--proto", "tcp", "--port", String(proxy.port(.tcp)), "--user", "bob", "--duration", "8"])
        defer { phone.stop() }
        #expect(phone.wait(for: "REGISTERED"), "\(phone.lines)")
        let mid = try Scrape(port: port)
        let call = Subprocess.run("python3", [Paths.peers + "/ua.py", "call", "--proto", "udp", "--port", udp, "--to", "bob"], timeout: 20)
        #expect(call.out.contains("BYE-OK"), "\(call.out)")
        let end = try Scrape(port: port)
        func moved(_ k: String) -> Double { (end[k] ?? -1) - (mid[k] ?? 0) }
        #expect(moved("swiftser_rcv_requests_total{method=INVITE}") == 1)
        #expect(moved("swiftser_rcv_requests_total{method=BYE}") == 1)
        #expect(moved("swiftser_rcv_replies_total{class=2xx}") == 2)  // 200 to INVITE and to BYE
        #expect(moved("swiftser_fwd_replies_total{class=2xx}") == 2)
        #expect(moved("swiftser_fwd_requests_total") >= 3)  // INVITE, ACK, BYE
        #expect(moved("swiftser_tm_final_response_seconds_count") == 2)  // INVITE and BYE transactions
        #expect(end["swiftser_registered_users"] == 2)

        let health = try Scrape(port: port, path: "/health")
        #expect(health.status == 200)
        let ready = try Scrape(port: port, path: "/ready")
        #expect(ready.status == 200, "\(ready.body)")
    }

    @Test("/ready is 503 once draining; unknown paths 404; POST 405; an oversized request is closed unanswered; plain SIP to the TLS port counts a failed handshake")
    func readinessAndLimits() throws {
        let pki = try TestPKI()
        let proxy = try defaultProxy(pki, extra: "http_listen=\"127.0.0.1:0\"", script: metricsScript)
        defer { proxy.stop() }
        let port = try #require(proxy.http?.port)
        #expect(try Scrape(port: port, path: "/ready").status == 200)
        proxy.core.metrics.isDraining = true
        let draining = try Scrape(port: port, path: "/ready")
        #expect(draining.status == 503)
        #expect(try Scrape(port: port, path: "/health").status == 200)
        #expect(try Scrape(port: port, path: "/nothing").status == 404)
        #expect(try Scrape(port: port, path: "/metrics", method: "POST").status == 405)
        let big = Subprocess.run("python3", [Paths.peers + "/scrape.py", "--port", String(port), "--raw", String(HTTPStatusServer.maxRequestBytes + 100)], timeout: 20)
        #expect(big.out.contains("\"closed\": true"), "\(big.out) \(big.err)")
        // The listener still answers afterwards.
        #expect(try Scrape(port: port, path: "/health").status == 200)
        // Plain SIP over TCP to the TLS listener: a failed handshake.
        let before = try Scrape(port: port)
        _ = Subprocess.sipclient(["--proto", "tcp", "--port", String(proxy.port(.tls)), "--options", "--wait", "1"])
        let after = try Scrape(port: port)
        #expect((after["swiftser_tls_handshakes_total{outcome=failed}"] ?? 0) - (before["swiftser_tls_handshakes_total{outcome=failed}"] ?? 0) == 1)
        #expect(after["swiftser_tls_handshakes_total{outcome=completed}"] == before["swiftser_tls_handshakes_total{outcome=completed}"])
    }

    @Test("http_listen: loopback only unless http_listen_public=yes; malformed values refused")
    func listenConfig() throws {
        func load(_ text: String) throws -> Config { try ConfigLoader.load(text: text + "request_route { exit; }\n", functions: ScriptFunctions.catalogue) }
        let ok = try load("http_listen=127.0.0.1:9090\n")
        #expect(ok.core.httpListen == HTTPListenAddress("127.0.0.1:9090"))
        #expect(ok.core.httpListen?.isLoopback == true)
        #expect(try load("http_listen=\"[::1]:9090\"\n").core.httpListen?.isLoopback == true)
        #expect(throws: ConfigErrors.self) { try load("http_listen=\"0.0.0.0:9090\"\n") }
        #expect(throws: ConfigErrors.self) { try load("http_listen=\"[::]:9090\"\n") }
        let open = try load("http_listen=\"0.0.0.0:9090\"\nhttp_listen_public=yes\n")
        #expect(open.core.httpListen?.host == "0.0.0.0")
        for bad in ["\"9090\"", "\"localhost:9090\"", "\"127.0.0.1\"", "\"127.0.0.1:70000\"", "\"::1:9090\""] {
            #expect(throws: ConfigErrors.self, "\(bad)") { try load("http_listen=\(bad)\n") }
        }
        #expect(try load("\n").core.httpListen == nil)
    }

    @Test("JSON-RPC over HTTP: POST /rpc answers as the control socket (results, errors, batches, notifications); GET 405; loopback peers only unless http_rpc=any; http_rpc=no turns it off")
    func rpcOverHTTP() throws {
        let pki = try TestPKI()
        let proxy = try defaultProxy(pki, extra: "http_listen=\"127.0.0.1:0\"", script: metricsScript)
        defer { proxy.stop() }
        let port = try #require(proxy.http?.port)
        func rpc(_ body: String) throws -> (Int, Any?) {
            let s = try Scrape(port: port, path: "/rpc", method: "POST", data: body)
            return (s.status, s.body.isEmpty ? nil : try JSONSerialization.jsonObject(with: Data(s.body.utf8), options: [.fragmentsAllowed]))
        }
        let (status, version) = try rpc(#"{"jsonrpc":"2.0","method":"core.version","id":7}"#)
        #expect(status == 200)
        let v = version as? [String: Any]
        #expect((v?["result"] as? String)?.hasPrefix("swiftser ") == true && (v?["id"] as? Int) == 7, "\(String(describing: version))")
        let (_, unknown) = try rpc(#"{"jsonrpc":"2.0","method":"no.such","id":1}"#)
        #expect(((unknown as? [String: Any])?["error"] as? [String: Any])?["code"] as? Int == -32601)
        let (_, bad) = try rpc("not json")
        #expect(((bad as? [String: Any])?["error"] as? [String: Any])?["code"] as? Int == -32700)
        let (_, batch) = try rpc(#"[{"jsonrpc":"2.0","method":"core.uptime","id":1},{"jsonrpc":"2.0","method":"cfg.get","params":["core","debug"],"id":2}]"#)
        #expect((batch as? [Any])?.count == 2)
        let (noteStatus, note) = try rpc(#"{"jsonrpc":"2.0","method":"core.version"}"#)
        #expect(noteStatus == 204 && note == nil)
        #expect(try Scrape(port: port, path: "/rpc").status == 405)
        // Who may call it.
        let server = try #require(proxy.http)
        #expect(server.rpcAllowed(from: try SocketAddress(ipAddress: "127.0.0.1", port: 1)))
        #expect(server.rpcAllowed(from: try SocketAddress(ipAddress: "::1", port: 1)))
        #expect(!server.rpcAllowed(from: try SocketAddress(ipAddress: "192.0.2.1", port: 1)))
        let anyPeer = HTTPStatusServer(core: proxy.core, address: HTTPListenAddress("127.0.0.1:0")!, logger: Logger(label: "t"), control: proxy.control, rpcAccess: .any)
        #expect(anyPeer.rpcAllowed(from: try SocketAddress(ipAddress: "192.0.2.1", port: 1)))

        let off = try defaultProxy(pki, extra: "http_listen=\"127.0.0.1:0\"\nhttp_rpc=no", script: metricsScript)
        defer { off.stop() }
        let offPort = try #require(off.http?.port)
        #expect(try Scrape(port: offPort, path: "/rpc", method: "POST", data: #"{"jsonrpc":"2.0","method":"core.version","id":1}"#).status != 200)
        func load(_ text: String) throws -> Config { try ConfigLoader.load(text: text + "request_route { exit; }\n", functions: ScriptFunctions.catalogue) }
        #expect(try load("\n").core.httpRPC == .loopback)
        #expect(try load("http_rpc=any\n").core.httpRPC == .any)
        #expect(try load("http_rpc=no\n").core.httpRPC == .off)
        #expect(throws: ConfigErrors.self) { try load("http_rpc=sometimes\n") }
    }
}
