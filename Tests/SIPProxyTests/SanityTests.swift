import Foundation
import SIPCore
@testable import SIPProxy
import Testing

@Suite("sanity_check: Kamailio's sanity checks")
struct SanityTests {
    /// A request with `replace` applied to its lines (header → new line, "" removes it).
    static func request(_ uri: String = "sip:bob@example.com", method: String = "INVITE", headers extra: [String] = [],
                        replace: [String: String] = [:], body: String = "", contentLength: Int? = nil) -> String {
        var lines = [
            "Via: SIP/2.0/UDP 127.0.0.1:{LOCAL_PORT};branch=z9hG4bK-\(UUID().uuidString.prefix(8));rport",
            "Max-Forwards: 70",
            "From: <sip:alice@example.com>;tag=a1",
            "To: <sip:bob@example.com>",
            "Call-ID: \(UUID().uuidString)@test",
            "CSeq: 1 \(method)",
        ]
        lines = lines.compactMap { line in
            let name = String(line.prefix { $0 != ":" })
            guard let r = replace[name] else { return line }
            return r.isEmpty ? nil : r
        }
        lines += extra
        lines.append("Content-Length: \(contentLength ?? body.utf8.count)")
        return "\(method) \(uri) SIP/2.0\r\n" + lines.joined(separator: "\r\n") + "\r\n\r\n" + body
    }

    func failure(_ text: String, checks: Int = 3047, uris: Int = 7, supported: [String] = []) throws -> SanityCheck.Failure? {
        let m = try SIPMessage.parse(text.replacingOccurrences(of: "{LOCAL_PORT}", with: "5099"))
        return SanityCheck.check(m, checks: .init(rawValue: checks), uris: .init(rawValue: uris), supported: supported)
    }

    @Test("a well-formed request passes every check")
    func passes() throws {
        #expect(try failure(Self.request(), checks: 16383) == nil)
        #expect(try failure(Self.request(method: "REGISTER", headers: ["Expires: 3600"]), checks: 16383) == nil)
        #expect(try failure(Self.request("tel:+15551234"), checks: 16383) == nil)
        #expect(try failure(Self.request(headers: ["Proxy-Require: foo"]), supported: ["FOO"]) == nil)
        #expect(try failure(Self.request(headers: ["Authorization: Basic dXNlcjpwYXNz"]), checks: 8192) == nil)
        #expect(try failure(Self.request(body: "v=0\r\n"), checks: 16383) == nil)
    }

    @Test("each check finds its defect, with the status Kamailio answers", arguments: [
        (2, SanityTests.request("mailto:bob@example.com"), 416, "unsupported scheme"),
        (4, SanityTests.request(replace: ["Call-ID": ""]), 400, "no Call-ID"),
        (1024, SanityTests.request(replace: ["From": "From: <sip:al ice@example.com>;tag=a1"]), 400, "bad From URI"),
        (32, SanityTests.request(replace: ["CSeq": "CSeq: 1 BYE"]), 400, "CSeq method"),
        (128, SanityTests.request(body: "v=0\r\nextra", contentLength: 5), 400, "octets after Content-Length"),
        (256, SanityTests.request(method: "REGISTER", headers: ["Expires: soon"]), 400, "Expires not a number"),
        (256, SanityTests.request(method: "REGISTER", headers: ["Expires: 99999999999"]), 400, "Expires over 32 bits"),
        (512, SanityTests.request(headers: ["Proxy-Require: foo, bar"]), 420, "Proxy-Require"),
        (2048, SanityTests.request(headers: ["Authorization: Digest username=\"a\", realm=\"r\""]), 400, "Digest without nonce"),
        (2048, SanityTests.request(headers: ["Proxy-Authorization: Basic dXNlcjpwYXNz"]), 400, "not Digest"),
        (8192, SanityTests.request(headers: ["Authorization: Digest username=\"a\""]), 400, "authorization header"),
        (4096, SanityTests.request(replace: ["From": "From: <sip:alice@example.com>;tag=a1;tag=a2"]), 400, "two From tags"),
        (4096, SanityTests.request(replace: ["To": "To: sip:bob@example.com;tag=b1;TAG=b2"]), 400, "two To tags"),
    ] as [(Int, String, Int, String)])
    func finds(check: Int, text: String, status: Int, what: String) throws {
        let f = try failure(text, checks: check)
        #expect(f?.status == status, "\(what): \(String(describing: f))")
        // Without that check (and for credentials its sibling), the same request passes.
        let others = check == 2048 || check == 8192 ? 16383 & ~(2048 | 8192) : 16383 & ~check
        #expect(try failure(text, checks: others, supported: ["foo", "bar"]) == nil, "\(what)")
    }

    @Test("420 lists the unsupported options in Unsupported; supported ones are left out")
    func unsupportedHeader() throws {
        let f = try failure(Self.request(headers: ["Proxy-Require: foo, bar, baz"]), supported: ["bar"])
        #expect(f == .unsupportedExtensions(["foo", "baz"]))
        #expect(f?.extraHeaders.first?.0 == "Unsupported" && f?.extraHeaders.first?.1 == "foo, baz")
    }

    @Test("sanity_check() answers a failing request itself and stops the script (autodrop); with autodrop=0 it returns false")
    func endToEnd() throws {
        let proxy = try TestProxy("""
        listen=udp:127.0.0.1:0
        loadmodule "sl.so"
        loadmodule "sanity.so"
        loadmodule "textops.so"
        modparam("sanity", "proxy_require", "pathlike")
        request_route {
            if (is_method("REGISTER")) {
                if (!sanity_check("256")) { sl_send_reply("500", "not reached"); exit; }
                sl_send_reply("200", "Sane register");
                exit;
            }
            if (!sanity_check()) { sl_send_reply("500", "not reached"); exit; }
            sl_send_reply("200", "Sane");
        }
        """)
        defer { proxy.stop() }
        let dir = makeTempDir("sanity")
        func send(_ text: String) throws -> [String] {
            let f = dir + "/\(UUID().uuidString).sip"
            try text.write(toFile: f, atomically: true, encoding: .utf8)
            return Subprocess.sipclient(["--proto", "udp", "--port", String(proxy.port(.udp)), "--file", f, "--wait", "3"]).lines
        }
        #expect(try send(Self.request()) == ["RESPONSE SIP/2.0 200 Sane"])
        #expect(try send(Self.request("mailto:bob@example.com")).first?.hasPrefix("RESPONSE SIP/2.0 416 ") == true)
        #expect(try send(Self.request(body: "v=0\r\nextra", contentLength: 5)).first?.hasPrefix("RESPONSE SIP/2.0 400 ") == true)
        // The core answers other Proxy-Require options with 420 before the script; the listed one reaches it.
        #expect(try send(Self.request(headers: ["Proxy-Require: pathlike"])) == ["RESPONSE SIP/2.0 200 Sane"])
        #expect(try send(Self.request(headers: ["Proxy-Require: other"])).first?.hasPrefix("RESPONSE SIP/2.0 420 ") == true)
        // The argument chooses the checks: the REGISTER route checks only Expires.
        #expect(try send(Self.request(method: "REGISTER", headers: ["Expires: soon"])).first?.hasPrefix("RESPONSE SIP/2.0 400 ") == true)
        #expect(try send(Self.request("mailto:x@example.com", method: "REGISTER")) == ["RESPONSE SIP/2.0 200 Sane register"])

        // autodrop=0: the function answers, returns false, and the script goes on.
        let returning = try TestProxy("""
        listen=udp:127.0.0.1:0
        modparam("sanity", "autodrop", 0)
        request_route {
            if (!sanity_check("2")) { sl_send_reply("299", "Script went on"); exit; }
            sl_send_reply("200", "Sane");
        }
        """)
        defer { returning.stop() }
        let f = dir + "/ret.sip"
        try Self.request("mailto:bob@example.com").write(toFile: f, atomically: true, encoding: .utf8)
        let r = Subprocess.sipclient(["--proto", "udp", "--port", String(returning.port(.udp)), "--file", f, "--wait", "3", "--expect", "2"])
        #expect(r.lines.count == 2 && r.lines[0].hasPrefix("RESPONSE SIP/2.0 416 ") && r.lines[1] == "RESPONSE SIP/2.0 299 Script went on", "\(r.out)")
    }
}
