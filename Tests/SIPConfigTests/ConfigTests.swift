import Foundation
import Testing
@testable import SIPConfig
import SIPProxy

/// An in-memory file system for configs with includes and profiles.
func files(_ map: [String: String]) -> Lexer.FileReader {
    return { path in
        guard let t = map[path] else { throw CocoaLikeError.noFile }
        return t
    }
}
enum CocoaLikeError: Error { case noFile }

let minimalRoute = "request_route { sl_send_reply(\"200\", \"OK\"); }\n"

func load(_ text: String, extra: [String: String] = [:]) throws(ConfigErrors) -> Config {
    var all = extra
    all["/etc/swiftser/test.cfg"] = text
    return try ConfigLoader.load(file: "/etc/swiftser/test.cfg", functions: ScriptFunctions.catalogue, readFile: files(all))
}

func errors(_ text: String, extra: [String: String] = [:]) -> [ConfigDiagnostic] {
    do {
        _ = try load(text, extra: extra)
        return []
    } catch {
        return error.diagnostics
    }
}

@Suite("Seed TLS parameters (ser-0.9 free-TLS README §1.5)")
struct SeedParameterTests {
    @Test("defaults: CFG_DIR/cert.pem, no CA list, sslv23, verify and require 0, 10 s handshake and 120 s send timeouts")
    func defaults() throws {
        let c = try load("listen=tls:127.0.0.1:5061\n" + minimalRoute)
        #expect(!c.tls.disabled)
        let d = try #require(c.tls.defaultServer)
        #expect(d.certificate == "/etc/swiftser/cert.pem")
        #expect(d.privateKey == "/etc/swiftser/cert.pem")
        #expect(d.caList == nil)
        #expect(d.ciphers == nil)
        #expect(d.method == .sslv23 && d.method.minimum == .tls12 && d.method.maximum == .tls13)
        #expect(!d.verify && !d.requireCertificate)
        // The seed's 120 s handshake timeout is 10 s here (issue 15: a
        // handshake in progress holds a place in a small pool).
        #expect(c.tls.handshakeTimeout == 10 && c.tls.sendTimeout == 120)
        #expect(c.listens == [ListenSocket(proto: .tls, host: "127.0.0.1", port: 5061)])
    }

    @Test("every seed parameter is honoured")
    func everyParameter() throws {
        let c = try load("""
        disable_tls=0
        listen=tls:127.0.0.1:5061
        listen=udp:127.0.0.1:5060
        tls_certificate="/mycerts/certs/ser_server_cert.pem"
        tls_private_key="/mycerts/private/prik.pem"
        tls_ca_list="/mycerts/certs/ca_list.pem"
        tls_ciphers_list="ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"
        tls_method=tlsv1.2
        tls_verify = 1
        tls_require_certificate = 1
        tls_handshake_timeout=119
        tls_send_timeout=121
        \(minimalRoute)
        """)
        let d = try #require(c.tls.defaultServer)
        #expect(d.certificate == "/mycerts/certs/ser_server_cert.pem")
        #expect(d.privateKey == "/mycerts/private/prik.pem")
        #expect(d.caList == "/mycerts/certs/ca_list.pem")
        #expect(d.ciphers == "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256")
        #expect(d.method.minimum == .tls12 && d.method.maximum == .tls12)
        #expect(d.verify && d.requireCertificate)
        #expect(c.tls.handshakeTimeout == 119 && c.tls.sendTimeout == 121)
        #expect(c.listens.map(\.description) == ["tls:127.0.0.1:5061", "udp:127.0.0.1:5060"])
    }

    @Test("disable_tls=1 opens no TLS listener")
    func disableTLS() throws {
        let c = try load("disable_tls=1\nlisten=tls:127.0.0.1:5061\nlisten=udp:127.0.0.1:5060\n" + minimalRoute)
        #expect(c.tls.disabled)
        #expect(c.listens.map(\.proto) == [.udp])
        #expect(c.warnings.contains { $0.message.contains("not opened") })
    }

    @Test("the seed's tls_domain example loads, each domain inheriting the rest")
    func seedDomains() throws {
        let c = try load("""
        listen=tls:10.0.0.2:5061
        listen=tls:10.0.0.3:5061
        tls_verify=1
        tls_ca_list="ca.pem"
        tls_domain[10.0.0.2:5061] {
        #specify parameters for a domain in particular
            tls_certificate="new_cert"
            tls_private_key="new_cert_key"
            tls_ca_list="other ca"
            tls_method="tlsv1.2+"
        }
        tls_domain[10.0.0.3:5061] {
            tls_certificate="third.pem"
            tls_ciphers_list="ECDHE-RSA-AES256-GCM-SHA384"
            tls_verify=0
        }
        \(minimalRoute)
        """)
        let servers = c.tls.domains(.server)
        #expect(servers.count == 3)
        let d2 = try #require(servers.first { $0.address == HostPort(host: "10.0.0.2", port: 5061) })
        #expect(d2.certificate == "/etc/swiftser/new_cert" && d2.privateKey == "/etc/swiftser/new_cert_key")
        #expect(d2.caList == "/etc/swiftser/other ca" && d2.method.name == "tlsv1.2+" && d2.verify)
        let d3 = try #require(servers.first { $0.address == HostPort(host: "10.0.0.3", port: 5061) })
        #expect(d3.caList == "/etc/swiftser/ca.pem" && !d3.verify && d3.ciphers == "ECDHE-RSA-AES256-GCM-SHA384")
        #expect(d3.privateKey == "/etc/swiftser/third.pem")
    }

    @Test("sslv2 and sslv3 are refused with why and what to write", arguments: ["sslv2", "sslv3", "SSLv3"])
    func refusedMethods(method: String) {
        let e = errors("tls_method=\(method)\n" + minimalRoute)
        #expect(e.count == 1)
        #expect(e.first?.message.contains("broken") == true)
        #expect(e.first?.message.contains("tls_method=tlsv1.2+") == true)
        #expect(e.first?.location == SourceLocation(file: "/etc/swiftser/test.cfg", line: 1, column: 12))
    }

    @Test("every tls_method value maps to its version range", arguments: [
        ("sslv23", TLSVersion.tls12, TLSVersion.tls13), ("tlsv1", .tls10, .tls10), ("tlsv1.2", .tls12, .tls12),
        ("tlsv1.3", .tls13, .tls13), ("tlsv1.2+", .tls12, .tls13), ("TLSv1.1+", .tls11, .tls13),
    ])
    func methods(name: String, min: TLSVersion, max: TLSVersion) throws {
        let c = try load("tls_method=\(name)\n" + minimalRoute)
        let d = try #require(c.tls.defaultServer)
        #expect(d.method.minimum == min && d.method.maximum == max)
        #expect(c.warnings.contains { $0.message.contains("BCP 195") } == (min < .tls12))
    }

    @Test("beyond the seed: per-domain verify/ciphers, SNI domains, client domains, depth, CRL, password")
    func beyondSeed() throws {
        let c = try load("""
        listen=tls:127.0.0.1:5061
        tls_verify_depth=3
        tls_crl="crl.pem"
        tls_private_key_password="s3cret"
        tls_domain[127.0.0.1:5061] {
            tls_server_name="sip.example.com"
            tls_certificate="example.pem"
            tls_verify=1
            tls_require_certificate=1
        }
        tls_client_domain[192.0.2.7:5061] {
            tls_verify=1
            tls_server_name="pbx.example.net"
            tls_allow_wildcard_certs=yes
        }
        tls_client_domain {
            tls_verify=1
            tls_verify_hostname=no
        }
        \(minimalRoute)
        """)
        let sni = try #require(c.tls.domains.first { $0.serverName == "sip.example.com" })
        #expect(sni.role == .server && sni.verify && sni.requireCertificate && sni.verifyDepth == 3)
        #expect(sni.crl == "/etc/swiftser/crl.pem" && sni.privateKeyPassword == "s3cret")
        let client = try #require(c.tls.domains.first { $0.role == .client && $0.address != nil })
        #expect(client.address == HostPort(host: "192.0.2.7", port: 5061) && client.allowWildcardCertificates)
        let defClient = try #require(c.tls.defaultClient)
        #expect(defClient.verify && !defClient.verifyHostname)
    }
}

@Suite("Config errors name file, line, column and what was expected")
struct ConfigErrorTests {
    @Test("the caret counts code points and keeps tabs (non-ASCII text before the column)")
    func caretAfterMultibyte() {
        let d = ConfigDiagnostic(.error, SourceLocation(file: "f.cfg", line: 1, column: 6), "x", sourceLine: "\té€\u{1F600}b?")
        #expect(d.description == "f.cfg:1:6: error: x\n    \té€\u{1F600}b?\n    \t    ^")
        // A column past the end of the line (an error at the line's end).
        let end = ConfigDiagnostic(.error, SourceLocation(file: "f.cfg", line: 1, column: 9), "x", sourceLine: "ab")
        #expect(end.description.hasSuffix("\n    ab\n      ^"))
    }

    @Test("at most 20 errors are reported, then how many more there were")
    func errorCap() {
        let text = "listen=udp:127.0.0.1:5060\n" + String(repeating: "no_such_parameter = 1\n", count: 45)
        let e = errors(text)
        #expect(e.count == ConfigDiagnostic.maxErrors + 1)
        #expect(e.last?.severity == .error)
        #expect(e.last?.location.line == ConfigDiagnostic.maxErrors + 2)
        #expect(e.last?.message.hasPrefix("too many errors: 2") == true && e.last?.message.hasSuffix("more not shown") == true)
    }

    @Test("syntax error with caret")
    func syntax() {
        let e = errors("listen=udp:127.0.0.1:5060\nrequest_route {\n  if (method == \"INVITE\" {\n    drop;\n  }\n}\n")
        let first = try! #require(e.first)
        #expect(first.location == SourceLocation(file: "/etc/swiftser/test.cfg", line: 3, column: 26))
        #expect(first.message == "expected ')' to close the if condition, found '{'")
        #expect(first.description == """
        /etc/swiftser/test.cfg:3:26: error: expected ')' to close the if condition, found '{'
              if (method == "INVITE" {
                                     ^
        """)
    }

    @Test("one error per kind, with its position", arguments: [
        ("request_route { foo(); }", 1, 17, "unknown function 'foo'"),
        ("request_route { sl_send_reply(\"200\"); }", 1, 17, "sl_send_reply takes 2 arguments, given 1"),
        ("request_route { route(nowhere); }", 1, 17, "route(nowhere): there is no route[nowhere]"),
        ("request_route { $xyz = 1; }", 1, 17, "unknown pseudo-variable '$xyz'"),
        ("request_route { $fu = \"sip:a@b\"; }", 1, 17, "$fu cannot be assigned; assignable are $ru, $rU, $rd, $rp, $du, $var(…), $avp(…)"),
        ("request_route { sl_send_reply(\"900\", \"x\"); }", 1, 31, "reply code must be between 100 and 699"),
        ("request_route { break; }", 1, 17, "'break' outside a while loop or switch"),
        ("loadmodule \"acc.so\"\nrequest_route { drop; }", 1, 12, "module 'acc' is not provided by SwiftSER"),
        ("frobnicate=1\nrequest_route { drop; }", 1, 1, "unknown parameter 'frobnicate'"),
        ("tls_verify=maybe\nrequest_route { drop; }", 1, 12, "tls_verify needs yes/no (or 1/0, on/off), found 'maybe'"),
        ("listen=tls:127.0.0.1:5061\ntls_domain[127.0.0.1:5062] { tls_verify=1 }\nrequest_route { drop; }", 2, 1, "tls_domain[127.0.0.1:5062] is not a TLS listener"),
        ("route[a] { route(b); }\nroute[b] { route(a); }\nrequest_route { route(a); }", 2, 12, "route(a) recurses"),
        ("loadmodule \"sl.so\"\nrequest_route { t_relay(); }", 2, 17, "t_relay needs loadmodule \"tm.so\""),
        ("request_route { if ($rm =~ \"(\") { drop; } }", 1, 28, "regular expression '(' does not compile"),
        ("listen=sctp:127.0.0.1\nrequest_route { drop; }", 1, 8, "'sctp' is not supported"),
        ("#!ifdef X\nrequest_route { drop; }", 1, 1, "never closed with #!endif"),
        ("request_route { drop; }\nonreply_route { t_relay(); }", 2, 17, "t_relay cannot be used in onreply_route"),
        ("max_branches=65\nrequest_route { drop; }", 1, 14, "max_branches must be between 1 and 64"),
    ])
    func errorKinds(text: String, line: Int, column: Int, message: String) {
        let e = errors(text)
        let match = e.first { $0.message.contains(message) }
        #expect(match != nil, "got \(e.map(\.description))")
        #expect(match?.location.line == line && match?.location.column == column, "at \(String(describing: match?.location))")
    }

    @Test("several errors are all reported")
    func several() {
        let e = errors("foo=1\nbar=2\nrequest_route { baz(); }")
        #expect(e.count == 3)
    }

    @Test("no request route is an error")
    func noRoute() {
        #expect(errors("listen=udp:127.0.0.1").first?.message.contains("no request route") == true)
    }

    @Test("an included file's error names the included file")
    func includedError() {
        let e = errors("include_file \"inc.cfg\"\n" + minimalRoute, extra: ["/etc/swiftser/inc.cfg": "\n\nbad_param=1\n"])
        #expect(e.first?.location == SourceLocation(file: "/etc/swiftser/inc.cfg", line: 3, column: 1))
    }
}

@Suite("Preprocessor, modules and the route script")
struct ScriptTests {
    @Test("#!define, #!ifdef/#!else/#!endif, #!substdef, include_file, import_file")
    func preprocessor() throws {
        let c = try load("""
        #!define WITH_TLS
        #!define TLS_PORT 5071
        #!substdef "/LOCALIP/127.0.0.2/"
        #!ifdef WITH_TLS
        listen=tls:LOCALIP:TLS_PORT
        #!else
        listen=udp:127.0.0.1:5060
        #!endif
        #!ifndef WITH_TLS
        frobnicate=1
        #!endif
        import_file "missing-is-fine.cfg"
        include_file "routes.cfg"
        """, extra: ["/etc/swiftser/routes.cfg": minimalRoute])
        #expect(c.listens.map(\.description) == ["tls:127.0.0.2:5071"])
        #expect(c.script.main != nil)
    }

    @Test("every route-script construct parses")
    func constructs() throws {
        let c = try load("""
        loadmodule "tm.so"
        loadmodule "sl.so"
        loadmodule "rr.so"
        loadmodule "maxfwd.so"
        loadmodule "registrar.so"
        loadmodule "usrloc.so"
        loadmodule "textops.so"
        loadmodule "siputils.so"
        loadmodule "xlog.so"
        loadmodule "tls.so"
        modparam("registrar", "default_expires", 1800)
        modparam("usrloc", "db_url", "sqlite:///var/lib/swiftser/location.db")
        modparam("tm", "fr_timer", 5000)
        request_route {
            if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); exit; }
            if (has_totag()) { if (loose_route()) { route(RELAY); } else { sl_send_reply("404", "Not here"); } exit; }
            if (is_method("REGISTER")) { if (!save("location")) { sl_reply_error(); } exit; }
            if (uri == myself && method != "OPTIONS" && !(src_ip == "127.0.0.1" || src_port == 5060)) {
                xlog("L_INFO", "from $fu to $ru via $pr/$tls_version\\n");
            }
            if ($rm =~ "^(INVITE|MESSAGE)$" && $hdr(Subject) !~ "spam") { setflag(1); }
            switch ($rm) {
                case "INVITE": record_route(); break;
                case "BYE": $var(n) = 0; break;
                default: append_hf("X-Seen: yes\\r\\n");
            }
            $var(i) = 0;
            while ($var(i) < 3) { $var(i) = $var(i) + 1; }
            $avp(dest) = "sip:pbx.example.com";
            $du = "sip:127.0.0.1:5080;transport=udp";
            if (is_peer_verified() && $tls_peer_subject_cn == "phone") { remove_hf("X-Trust"); }
            if (!lookup("location")) { t_reply("404", "Not Found"); exit; }
            t_on_failure("REROUTE");
            t_on_reply("REPLY");
            route(RELAY);
        }
        route[RELAY] { if (!t_relay()) { sl_reply_error(); } exit; }
        failure_route[REROUTE] { if (t_check_status("408")) { $ru = "sip:backup@127.0.0.1"; t_relay(); } }
        onreply_route[REPLY] { if (status =~ "^18") { xlog("L_DBG", "ringing\\n"); } }
        branch_route[B] { return; }
        """)
        #expect(c.script.blocks.count == 5)
        #expect(c.registrar.defaultExpires == 1800)
        #expect(c.registrar.database == "/var/lib/swiftser/location.db")
        #expect(c.transactions.finalResponseTimeout == 5000)
        #expect(c.modules.count == 10)
    }
}

@Suite("Kamailio tls.cfg profiles")
struct ProfileTests {
    @Test("a tls.cfg profile loads to the same domains as the equivalent tls_domain blocks")
    func profileEqualsBlocks() throws {
        let profile = """
        # Kamailio-style profile
        [server:default]
        method = TLSv1.2+
        verify_certificate = no
        require_certificate = no
        private_key = /etc/kamailio/kamailio.key
        certificate = /etc/kamailio/kamailio.pem
        ca_list = /etc/kamailio/ca.pem

        [client:default]
        verify_certificate = yes
        require_certificate = yes

        [server:127.0.0.1:5061]
        verify_certificate = yes
        require_certificate = yes
        certificate = /etc/kamailio/lo.pem
        private_key = /etc/kamailio/lo.key

        [client:192.0.2.9:5061]
        server_name = pbx.example.net
        verify_certificate = yes
        """
        let k = try load("""
        listen=tls:127.0.0.1:5061
        loadmodule "tls.so"
        loadmodule "sl.so"
        modparam("tls", "config", "/etc/kamailio/tls.cfg")
        \(minimalRoute)
        """, extra: ["/etc/kamailio/tls.cfg": profile])
        let s = try load("""
        listen=tls:127.0.0.1:5061
        tls_server_domain {
          tls_method=tlsv1.2+
          tls_private_key="/etc/kamailio/kamailio.key"
          tls_certificate="/etc/kamailio/kamailio.pem"
          tls_ca_list="/etc/kamailio/ca.pem"
        }
        tls_client_domain { tls_verify=1
          tls_require_certificate=1 }
        tls_domain[127.0.0.1:5061] { tls_verify=1
          tls_require_certificate=1
          tls_certificate="/etc/kamailio/lo.pem"
          tls_private_key="/etc/kamailio/lo.key" }
        tls_client_domain[192.0.2.9:5061] { tls_server_name="pbx.example.net"
          tls_verify=1 }
        \(minimalRoute)
        """)
        func strip(_ d: [TLSDomain]) -> [String] {
            d.map { x in
                var y = x
                y.location = nil
                y.method.name = y.method.name.lowercased()
                return "\(y.role) \(String(describing: y.address)) \(y.serverName ?? "-") \(y.certificate) \(y.privateKey) \(y.caList ?? "-") \(y.method.minimum)-\(y.method.maximum) \(y.verify) \(y.requireCertificate)"
            }.sorted()
        }
        #expect(strip(k.tls.domains) == strip(s.tls.domains))
        #expect(k.tls.domains.count == 4)
    }
}

@Suite("The shipped configs")
struct ShippedConfigTests {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    @Test("etc/swiftser.cfg and etc/tls-example.cfg load", arguments: ["swiftser.cfg", "tls-example.cfg"])
    func loads(name: String) throws {
        let c = try ConfigLoader.load(file: ShippedConfigTests.repo + "/etc/" + name, functions: ScriptFunctions.catalogue)
        #expect(c.script.main != nil)
        #expect(c.listens.contains { $0.proto == .tls })
    }

    @Test("the example shows an IP:port domain, an SNI domain and client domains")
    func example() throws {
        let c = try ConfigLoader.load(file: ShippedConfigTests.repo + "/etc/tls-example.cfg", functions: ScriptFunctions.catalogue)
        #expect(c.tls.domains.contains { $0.role == .server && $0.address != nil })
        #expect(c.tls.domains.contains { $0.role == .server && $0.serverName == "voice.example.com" })
        #expect(c.tls.domains.contains { $0.role == .client && $0.address != nil })
        #expect(c.tls.defaultClient?.verify == true)
    }

    @Test("etc/swiftser.cfg verifies the servers it forwards to: system trust store, RFC 5922 name check")
    func defaultConfigVerifiesOutbound() throws {
        let c = try ConfigLoader.load(file: ShippedConfigTests.repo + "/etc/swiftser.cfg", functions: ScriptFunctions.catalogue)
        let client = try #require(c.tls.defaultClient)
        #expect(client.verify && client.verifyHostname)
        #expect(client.caList == nil)
        #expect(c.tls.defaultServer?.caList?.hasSuffix("certs/dev-ca.pem") == true)
    }

    @Test("an unverified client domain is warned about once the proxy listens beyond loopback, not before")
    func unverifiedOutboundWarned() throws {
        // Counted, not read: the same config with and without a verifying
        // default client domain differs by exactly that warning.
        func warnings(_ listen: String, _ client: String) throws -> Int {
            try load("listen=tls:\(listen):5061\ntls_verify=0\n\(client)\n" + minimalRoute).warnings.count
        }
        let verified = "tls_client_domain { tls_verify=1 }"
        #expect(try warnings("192.0.2.10", "") == warnings("192.0.2.10", verified) + 1)
        #expect(try warnings("127.0.0.1", "") == warnings("127.0.0.1", verified))
        // A verifying domain for one address leaves the default one unverified.
        #expect(try warnings("192.0.2.10", "tls_client_domain[192.0.2.7:5061] { tls_verify=1 }") == warnings("192.0.2.10", ""))
    }
}

@Suite("usrloc db_url and db_mode")
struct DatabaseURLTests {
    @Test("sqlite:// URLs and bare paths name a file; relative ones are in the config's folder")
    func sqlite() throws {
        #expect(try load("modparam(\"usrloc\", \"db_url\", \"sqlite:///var/lib/swiftser/l.db\")\n" + minimalRoute).registrar.database == "/var/lib/swiftser/l.db")
        #expect(try load("modparam(\"usrloc\", \"db_url\", \"sqlite://db/l.db\")\n" + minimalRoute).registrar.database == "/etc/swiftser/db/l.db")
        #expect(try load("modparam(\"usrloc\", \"db_url\", \"SQLite://../l.db\")\n" + minimalRoute).registrar.database == "/etc/swiftser/../l.db")
        #expect(try load("modparam(\"usrloc\", \"db_url\", \"l.db\")\n" + minimalRoute).registrar.database == "/etc/swiftser/l.db")
        // The default is in the config's folder too.
        #expect(try load(minimalRoute).registrar.database == "/etc/swiftser/var/location.sqlite")
    }

    @Test("other schemes are refused at the db_url line, without echoing credentials", arguments: [
        "mysql://user:secret@db.example.com/kamailio", "postgres://user:secret@localhost/kamailio", "redis://:secret@127.0.0.1:6379", "text:///tmp/db",
    ])
    func refused(url: String) {
        let e = errors("listen=udp:127.0.0.1:5060\nmodparam(\"usrloc\", \"db_url\", \"\(url)\")\n" + minimalRoute)
        #expect(e.count == 1)
        #expect(e.first?.location.line == 2)
        #expect(e.first?.message.contains("sqlite://") == true)
        #expect(e.first?.message.contains("secret") == false)
        #expect(DatabaseURL.parse(url) == .failure(.unsupportedScheme(String(url.prefix { $0 != ":" }))))
    }

    @Test("sqlite: without // and an empty URL with db_mode 1 are refused; empty with db_mode 0 is memory only")
    func malformed() throws {
        #expect(DatabaseURL.parse("sqlite:l.db") == .failure(.malformedSQLite))
        #expect(DatabaseURL.parse("sqlite://") == .failure(.emptyPath))
        #expect(errors("modparam(\"usrloc\", \"db_url\", \"sqlite:l.db\")\n" + minimalRoute).first?.location.line == 1)
        let empty = errors("modparam(\"usrloc\", \"db_url\", \"\")\n" + minimalRoute)
        #expect(empty.count == 1 && empty.first?.location.line == 1)
        let memory = try load("modparam(\"usrloc\", \"db_url\", \"\")\nmodparam(\"usrloc\", \"db_mode\", 0)\n" + minimalRoute)
        #expect(memory.registrar.dbMode == 0)
    }

    @Test("db_mode 0 and 1 are taken; 2, 3, 4 (not implemented) and unknown values are refused", arguments: [0, 1, 2, 3, 4, 5, -1])
    func mode(value: Int) {
        let text = "\n\nmodparam(\"usrloc\", \"db_mode\", \(value))\n" + minimalRoute
        let e = errors(text)
        if value == 0 || value == 1 {
            #expect(e.isEmpty, "\(e)")
            #expect((try? load(text))?.registrar.dbMode == value)
        } else {
            #expect(e.count == 1 && e.first?.location.line == 3, "\(e)")
        }
    }
}

@Suite("Relative paths in a config")
struct RelativePathTests {
    @Test("every relative path is taken against the config file's folder")
    func configFolder() throws {
        let c = try load("""
        control_socket="run/ctl.sock"
        pid_file="./swiftser.pid"
        tls_certificate="certs/server.pem"
        tls_private_key="certs/server.key"
        tls_ca_list="certs/ca.pem"
        tls_crl="certs/crl.pem"
        modparam("usrloc", "db_url", "sqlite://var/l.sqlite")
        \(minimalRoute)
        """)
        #expect(c.core.controlSocket == "/etc/swiftser/run/ctl.sock")
        #expect(c.core.pidFile == "/etc/swiftser/swiftser.pid")
        #expect(c.registrar.database == "/etc/swiftser/var/l.sqlite")
        let d = try #require(c.tls.defaultServer)
        #expect(d.certificate == "/etc/swiftser/certs/server.pem" && d.privateKey == "/etc/swiftser/certs/server.key")
        #expect(d.caList == "/etc/swiftser/certs/ca.pem" && d.crl == "/etc/swiftser/certs/crl.pem")
        // Defaults too.
        let bare = try load(minimalRoute)
        #expect(bare.core.controlSocket == "/etc/swiftser/var/swiftser.ctl")
        #expect(bare.tls.defaultServer?.certificate == "/etc/swiftser/cert.pem")
    }
}

@Suite("Transport limits (issue 15)")
struct TransportLimitParameterTests {
    @Test("defaults")
    func defaults() throws {
        let c = try load(minimalRoute)
        #expect(c.core.tcpConnWriteQueueMax == 32_768)
        #expect(c.core.tcpWriteQueueMax == 10_485_760)
        #expect(c.core.tcpMaxConnectionsPerIP == 32)
        #expect(c.core.tcpMessageReadTimeout == 20)
        #expect(c.tls.maxHandshakes == 256)
        #expect(c.core.tcpMaxOutboundConnections == 2048)
    }

    @Test("set")
    func set() throws {
        let c = try load("""
        tcp_conn_wq_max=65536
        tcp_wq_max=1048576
        tcp_max_connections_per_ip=5
        tcp_msg_read_timeout=7
        tls_max_handshakes=16
        tcp_max_outbound_connections=10
        shutdown_timeout=5
        \(minimalRoute)
        """)
        #expect(c.core.tcpConnWriteQueueMax == 65_536)
        #expect(c.core.tcpWriteQueueMax == 1_048_576)
        #expect(c.core.tcpMaxConnectionsPerIP == 5)
        #expect(c.core.tcpMessageReadTimeout == 7)
        #expect(c.tls.maxHandshakes == 16)
        #expect(c.core.tcpMaxOutboundConnections == 10)
        #expect(c.core.shutdownTimeout == 5)
        #expect(try load(minimalRoute).core.shutdownTimeout == 30)
    }

    @Test("out-of-range values are config errors", arguments: [
        "tcp_conn_wq_max=100", "tcp_wq_max=1000", "tcp_max_connections_per_ip=0", "tcp_msg_read_timeout=0",
        "tls_max_handshakes=-1", "tcp_max_connections=9999999999999", "tcp_msg_read_timeout=99999999999",
        "shutdown_timeout=-1", "shutdown_timeout=3601",
    ])
    func refused(line: String) {
        #expect(throws: ConfigErrors.self) { _ = try load(line + "\n" + minimalRoute) }
    }
}

@Suite("File descriptors the limits need")
struct DescriptorBudgetTests {
    @Test("only the pools of protocols with a listener count, the outbound pool always")
    func budget() throws {
        let udpOnly = try load("listen=udp:127.0.0.1:5060\ntcp_max_connections=100000\n" + minimalRoute)
        #expect(udpOnly.descriptorsNeeded == 2048 + 1 + 1024 + 256)
        let all = try load(minimalRoute)
        #expect(all.descriptorsNeeded == 2048 + (2048 + 256) + 2048 + 3 + 1024 + 256)
    }
}

@Suite("The lexer reads UTF-8 bytes: columns, non-ASCII text, CRLF files")
struct LexerByteTests {
    func tokens(_ text: String) -> (tokens: [Token], diagnostics: [ConfigDiagnostic]) {
        var lexer = Lexer(readFile: { _ in text })
        let t = lexer.tokenize(file: "/t.cfg")
        return (t, lexer.diagnostics)
    }

    @Test("columns count characters, not bytes: a token after a two-byte character in a string is where an editor shows it")
    func columnsAfterNonASCII() {
        let r = tokens("x = \"é\"; y\n")
        #expect(r.diagnostics.isEmpty)
        #expect(r.tokens.map(\.kind) == [.identifier("x"), .punct("="), .string("é"), .punct(";"), .identifier("y"), .end])
        #expect(r.tokens[4].location.column == 10)
        #expect(r.tokens[2].location.column == 5)
    }

    @Test("a non-ASCII character outside strings and comments is an error naming the whole character, once")
    func nonASCIIOutsideStrings() {
        let r = tokens("# comment: ü is fine here\nnamé = 1\n")
        #expect(r.diagnostics.count == 1)
        #expect(r.diagnostics.first?.location == SourceLocation(file: "/t.cfg", line: 2, column: 4))
        #expect(r.diagnostics.first?.message.contains("'é'") == true)
        #expect(r.tokens.map(\.kind) == [.identifier("nam"), .punct("="), .number(1), .end])
    }

    @Test("CRLF files: the CR is blank, directives' arguments and the diagnostic's line lose it")
    func crlf() {
        let r = tokens("#!define NAME value\r\nlisten = NAME\r\n@\r\n")
        #expect(r.tokens.map(\.kind) == [.identifier("listen"), .punct("="), .identifier("value"), .end])
        #expect(r.diagnostics.count == 1)
        #expect(r.diagnostics.first?.sourceLine == "@")
    }

    @Test("numbers, dotted addresses, a trailing dot, pseudo-variables and two-character operators")
    func shapes() {
        let r = tokens("a.b. 10.0.0.1 42 $var(x) $(ru) $hdr(X(1)) =~ != <= &&")
        #expect(r.diagnostics.isEmpty)
        #expect(r.tokens.map(\.kind) == [
            .identifier("a.b"), .punct("."), .identifier("10.0.0.1"), .number(42),
            .pseudoVariable("var", "x"), .pseudoVariable("ru", nil), .pseudoVariable("hdr", "X(1)"),
            .punct("=~"), .punct("!="), .punct("<="), .punct("&&"), .end,
        ])
    }

    @Test("a number too big for Int is an identifier, not a trap")
    func hugeNumber() {
        let r = tokens("99999999999999999999999 ")
        #expect(r.tokens.first?.kind == .identifier("99999999999999999999999"))
    }
}

@Suite("Script safety parameters and checks (issue 15 item 7)")
struct ScriptSafetyConfigTests {
    @Test("max_while_loops: Kamailio's name, default 100, 1 to 1000000")
    func maxWhileLoops() throws {
        #expect(try load(minimalRoute).core.maxWhileLoops == 100)
        #expect(try load("max_while_loops=5\n" + minimalRoute).core.maxWhileLoops == 5)
        let e = errors("max_while_loops=0\n" + minimalRoute)
        #expect(e.count == 1 && e.first?.location.line == 1 && e.first?.location.column == 17, "\(e.map(\.description))")
    }

    @Test("a literal regular expression that does not compile is a config error at its position: =~, !~ and t_check_status")
    func invalidRegexLiterals() {
        let cases: [(String, Int, Int)] = [
            ("request_route { if ($ua !~ \"[a-\") { drop; } }", 1, 28),
            ("request_route { if ($rm =~ \"a{2,1}\") { drop; } }", 1, 28),
            ("loadmodule \"tm.so\"\nfailure_route[f] { if (t_check_status(\"(40\")) { drop; } }\nrequest_route { t_on_failure(\"f\"); t_relay(); }", 2, 39),
        ]
        for (text, line, column) in cases {
            let e = errors(text)
            #expect(e.count == 1, "\(text): \(e.map(\.description))")
            #expect(e.first?.location.line == line && e.first?.location.column == column, "\(text): \(e.map(\.description))")
        }
    }

    @Test("valid patterns, and a t_check_status pattern built from a variable, load")
    func validRegexes() throws {
        _ = try load("""
        loadmodule "tm.so"
        failure_route[f] { if (t_check_status("^(408|5[0-9][0-9])$")) { drop; } if (t_check_status("$var(re)")) { drop; } }
        request_route { if ($ua =~ "^friendly-(scanner|sipvicious)") { drop; } if ($rm =~ $var(re)) { drop; } t_on_failure("f"); t_relay(); }
        """)
    }

    @Test("Builtins.mentionsPseudoVariable: $name, $(name), $name(arg); a bare $ or an unknown name is text")
    func pseudoVariableMentions() {
        #expect(Builtins.mentionsPseudoVariable("$var(x)"))
        #expect(Builtins.mentionsPseudoVariable("^$(ru)"))
        #expect(Builtins.mentionsPseudoVariable("a$rs"))
        #expect(!Builtins.mentionsPseudoVariable("^4[0-9]{2}$"))
        #expect(!Builtins.mentionsPseudoVariable("$notapv"))
        #expect(!Builtins.mentionsPseudoVariable("$"))
    }
}
