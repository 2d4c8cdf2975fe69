import Foundation
import SIPConfig
import SIPProxy
import Testing

@Suite("sipsak against the proxy", .serialized)
struct SipsakTests {
    @Test("OPTIONS over UDP, TCP and TLS", arguments: ["udp", "tcp", "tls"])
    func options(proto: String) throws {
        let pki = try TestPKI()
        // sipsak (GnuTLS) stops reading after TLS 1.3's post-handshake
        // session tickets, so its TLS run uses TLS 1.2.
        let proxy = try defaultProxy(pki, extra: proto == "tls" ? "tls_method=tlsv1.2" : "")
        defer { proxy.stop() }
        let port = proto == "tls" ? proxy.port(.tls) : (proto == "tcp" ? proxy.port(.tcp) : proxy.port(.udp))
        var args = ["-v", "--transport=\(proto)", "-s", "sip:localhost:\(port)"]
        // sipsak compares the certificate with "host:port" (port included), so its name check cannot pass.
        if proto == "tls" { args += ["--tls-ca-cert=\(pki.caFile)", "--tls-ignore-cert-failure"] }
        let r = Subprocess.run("sipsak", args, timeout: 15)
        #expect(r.status == 0, "\(r.out) \(r.err)")
        #expect(r.out.contains("200 OK"), "\(r.out)")
    }

    @Test("REGISTER (usrloc mode) with an MD5 password binds the contact through the default config")
    func register() throws {
        let pki = try TestPKI()
        // sipsak reads only the first challenge and knows only MD5.
        let proxy = try defaultProxy(pki, extra: "modparam(\"auth\", \"algorithm\", \"MD5\")")
        defer { proxy.stop() }
        let r = Subprocess.run("sipsak", ["-U", "-C", "sip:sipsak@127.0.0.1:5999", "-x", "300", "-s", "sip:frank@localhost:\(proxy.port(.udp))", "-H", "127.0.0.1", "-a", testPassword, "-u", "frank"], timeout: 15)
        #expect(r.status == 0, "\(r.out) \(r.err)")
        #expect(proxy.location.bindings(for: "frank@localhost").first?.contact == "sip:sipsak@127.0.0.1:5999")
    }
}

@Suite("RFC 4475 torture messages sent to the running proxy", .serialized)
struct RFC4475ProxyTests {
    struct Row: Sendable, CustomStringConvertible {
        let name: String
        let verdict: String
        var description: String { name }
    }

    /// The rows of Tests/Fixtures/rfc4475/EXPECTED.tsv; empty when the
    /// file is missing (the tests then fail on the count, naming the file).
    static let rows: [Row] = {
        let text = (try? String(contentsOfFile: Paths.rfc4475 + "/EXPECTED.tsv", encoding: .utf8)) ?? ""
        return text.split(separator: "\n").filter { !$0.hasPrefix("#") }.compactMap {
            let f = $0.split(separator: "\t").map(String.init)
            return f.count >= 2 ? Row(name: f[0], verdict: f[1]) : nil
        }
    }()

    /// What the proxy must answer over UDP (nil: nothing, the message is dropped).
    static func expected(_ name: String, _ verdict: String) -> Set<Int>? {
        switch name {
        case "unreason", "noreason", "scalarlg", "bigcode", "bcast": return nil // responses: never answered
        case "test": return nil // no Via, no CSeq: nothing to answer to
        case "badvers": return [505]
        case "mismatch02": return [400, 501]
        case "unkscm", "novelsc": return [416]
        case "unksm2": return [400]
        case "bext01": return [420]
        case "zeromf": return [483]
        default: return verdict == "invalid-must-reject" ? [400] : [200]
        }
    }

    static let script = """
    alias="example.com"
    alias="example.net"
    request_route {
        if (!mf_process_maxfwd_header("70")) { sl_send_reply("483", "Too Many Hops"); exit; }
        if (!($ru =~ "^sips?:")) { sl_send_reply("416", "Unsupported URI Scheme"); exit; }
        if (is_method("REGISTER")) { save("location"); exit; }
        sl_send_reply("200", "OK");
        exit;
    }
    """

    @Test("UDP: each message gets the verdict of EXPECTED.tsv, and the proxy keeps serving")
    func udp() throws {
        #expect(RFC4475ProxyTests.rows.count == 50, "RFC 4475 corpus not readable at \(Paths.rfc4475)/EXPECTED.tsv")
        let proxy = try TestProxy("listen=udp:127.0.0.1:0\n" + RFC4475ProxyTests.script)
        defer { proxy.stop() }
        let dir = Paths.rfc4475
        for row in RFC4475ProxyTests.rows {
            let want = RFC4475ProxyTests.expected(row.name, row.verdict)
            let r = Subprocess.sipclient(["--proto", "udp", "--port", String(proxy.port(.udp)), "--file", "\(dir)/\(row.name).dat", "--wait", want == nil ? "1" : "3"])
            let codes = r.lines.filter { $0.hasPrefix("RESPONSE") }.compactMap { Int($0.split(separator: " ")[2]) }
            if let want {
                #expect(codes.count == 1 && want.contains(codes[0]), "\(row.name): got \(codes), want \(want)")
            } else {
                #expect(codes.isEmpty, "\(row.name) must be dropped, got \(codes)")
            }
        }
        let alive = Subprocess.sipclient(["--proto", "udp", "--port", String(proxy.port(.udp)), "--options"])
        #expect(alive.out.contains("200 OK"))
        // escnull: two distinct contacts bound.
        #expect(proxy.location.bindings(for: "null-\u{0}-null@example.com").count == 2)
    }

    @Test("TCP: framing errors close the connection, the rest as over UDP")
    func tcp() throws {
        #expect(RFC4475ProxyTests.rows.count == 50, "RFC 4475 corpus not readable at \(Paths.rfc4475)/EXPECTED.tsv")
        let proxy = try TestProxy("listen=tcp:127.0.0.1:0\n" + RFC4475ProxyTests.script)
        defer { proxy.stop() }
        let dir = Paths.rfc4475
        for row in RFC4475ProxyTests.rows {
            let r = Subprocess.sipclient(["--proto", "tcp", "--port", String(proxy.port(.tcp)), "--file", "\(dir)/\(row.name).dat", "--wait", "1.5"])
            let codes = r.lines.filter { $0.hasPrefix("RESPONSE") }.compactMap { Int($0.split(separator: " ")[2]) }
            switch row.name {
            case "ncl", "mcl01", "inv2543":
                #expect(codes.isEmpty && r.out.contains("CLOSED"), "\(row.name): \(r.out)")
            case "clerr", "baddn":
                #expect(codes.isEmpty, "\(row.name) must not be dispatched: \(r.out)")
            case "dblreq":
                #expect(codes.first == 200, "\(row.name): \(r.out)")
            default:
                let want = RFC4475ProxyTests.expected(row.name, row.verdict)
                if let want {
                    #expect(codes.count == 1 && want.contains(codes[0]), "\(row.name): got \(codes), want \(want)")
                } else {
                    #expect(codes.isEmpty, "\(row.name) must be dropped, got \(codes)")
                }
            }
        }
        let alive = Subprocess.sipclient(["--proto", "tcp", "--port", String(proxy.port(.tcp)), "--options"])
        #expect(alive.out.contains("200 OK"))
    }
}
