import Foundation
import SIPConfig
import SIPProxy
import Testing

/// baresip (Debian `baresip-core`, 1.0) as a real softphone on both ends of a
/// call, driven by Tests/Peers/baresip_call.py.
enum Baresip {
    static let program = "/usr/bin/baresip"
    static let modules = ["ctrl_tcp", "menu", "g711", "ausine"]

    static var installed: Bool {
        FileManager.default.isExecutableFile(atPath: program)
            && modules.allSatisfy { FileManager.default.fileExists(atPath: "/usr/lib/baresip/modules/\($0).so") }
    }

    static let notInstalled: Comment = "baresip is not installed (Debian package baresip-core with the modules \(modules.joined(separator: ", "))): run scripts/install-test-deps"

    /// The one JSON line the peer script prints.
    struct Outcome: Decodable {
        var ok: Bool
        var failedStep: String?
        var error: String?
        var tlsVerified: Bool
        var callerRegistered: Bool
        var calleeRegistered: Bool
        var registered: Bool
        var established: Bool
        var rtpCallerToCallee: Int
        var rtpCalleeToCaller: Int
        var closedByBye: Bool
        /// The SIP status that ended a call that did not connect.
        var callerFinalStatus: Int?
        var callerSip: [String]?
        var calleeSip: [String]?
        /// When each step ended, in seconds from the start.
        var seconds: [String: Double]?
    }

    struct Run {
        var outcome: Outcome?
        var result: Subprocess.Result
        var proxyLog: [String]

        /// Everything needed to see where a failed call stopped.
        var report: String {
            var s = "baresip_call.py exit \(result.status)"
            if let o = outcome {
                s += ", failed step: \(o.failedStep ?? "none"), error: \(o.error ?? "none")"
                s += "\nsteps ended at (s): " + (o.seconds ?? [:]).sorted { $0.value < $1.value }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
                s += "\ncaller (UDP) SIP:\n  " + (o.callerSip ?? []).joined(separator: "\n  ")
                s += "\ncallee (TLS) SIP:\n  " + (o.calleeSip ?? []).joined(separator: "\n  ")
            } else {
                s += "\nstdout: \(result.out)"
            }
            s += "\nproxy log (last 40 lines):\n  " + proxyLog.suffix(40).joined(separator: "\n  ")
            s += "\nphones' output (last 4000 characters):\n" + String(result.err.suffix(4000))
            return s
        }
    }

    /// One call: the callee registers over TLS, the caller over UDP, both with
    /// the proxy as outbound proxy; RTP flows; the caller hangs up.
    static func call(_ proxy: TestProxy, ca: String, callerPassword: String? = nil, calleePassword: String? = nil) -> Run {
        var args = [Paths.peers + "/baresip_call.py", "--host", "127.0.0.1",
                    "--udp-port", String(proxy.port(.udp)), "--tls-port", String(proxy.port(.tls)),
                    "--ca", ca, "--domain", "localhost", "--time-limit", "60", "--baresip", program]
        if let callerPassword { args += ["--caller-password", callerPassword] }
        if let calleePassword { args += ["--callee-password", calleePassword] }
        let r = Subprocess.run("python3", args, timeout: 90)
        let line = r.lines.last { $0.hasPrefix("{") } ?? ""
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        let outcome = try? decoder.decode(Outcome.self, from: Data(line.utf8))
        return Run(outcome: outcome, result: r, proxyLog: proxy.log.lines)
    }

    enum CallFailure: Error, CustomStringConvertible {
        /// The caller's INVITE ended with `status` (nil: no final response).
        case notEstablished(status: Int?, report: String)
        var description: String {
            switch self {
            case .notEstablished(let status, let report):
                "the call was not established (caller's final status: \(status.map(String.init) ?? "none")). \(report)"
            }
        }
    }

    /// The steps of a call in order; the first that failed stops the test
    /// with the SIP exchange each phone saw and the proxy's log.
    static func requireCompleted(_ run: Run) throws {
        let o = try #require(run.outcome, "baresip_call.py printed no outcome. \(run.report)")
        let tlsVerified = o.tlsVerified, calleeRegistered = o.calleeRegistered, callerRegistered = o.callerRegistered
        let established = o.established, toCallee = o.rtpCallerToCallee, toCaller = o.rtpCalleeToCaller
        let closedByBye = o.closedByBye, ok = o.ok, status = run.result.status
        try #require(tlsVerified, "the proxy's certificate did not verify. \(run.report)")
        try #require(calleeRegistered, "the callee did not register over TLS. \(run.report)")
        try #require(callerRegistered, "the caller did not register over UDP. \(run.report)")
        if !established { throw CallFailure.notEstablished(status: o.callerFinalStatus, report: run.report) }
        #expect(toCallee > 0, "no RTP from the caller reached the callee. \(run.report)")
        #expect(toCaller > 0, "no RTP from the callee reached the caller. \(run.report)")
        #expect(closedByBye, "the caller's BYE did not close the call at the callee. \(run.report)")
        #expect(ok && status == 0, "\(run.report)")
    }
}

/// etc/swiftser.cfg as it is, with only what ties it to one machine changed
/// for a test: the listen ports (ephemeral), the TLS files (the test PKI),
/// the control socket and the location database (files in `dir`).
func defaultConfigForTest(_ pki: TestPKI, dir: String) throws -> String {
    let text = try String(contentsOfFile: Paths.repo + "/etc/swiftser.cfg", encoding: .utf8)
    var out: [String] = []
    var rewritten: [String: Int] = [:]
    for line in text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
        let t = line.trimmingCharacters(in: .whitespaces)
        func set(_ key: String, _ value: String) {
            out.append(value)
            rewritten[key, default: 0] += 1
        }
        if t.hasPrefix("listen="), let colon = t.lastIndex(of: ":") {
            set("listen", String(t[..<colon]) + ":0")
        } else if t.hasPrefix("tls_certificate=") {
            set("tls_certificate", "tls_certificate=\"\(pki.dir)/server.pem\"")
        } else if t.hasPrefix("tls_private_key=") {
            set("tls_private_key", "tls_private_key=\"\(pki.dir)/server.key\"")
        } else if t.hasPrefix("tls_ca_list=") {
            set("tls_ca_list", "tls_ca_list=\"\(pki.caFile)\"")
        } else if t.hasPrefix("control_socket=") {
            set("control_socket", "control_socket=\"\(dir)/swiftser.ctl\"")
        } else if t.hasPrefix("modparam(\"usrloc\", \"db_url\"") {
            set("db_url", "modparam(\"usrloc\", \"db_url\", \"sqlite://\(dir)/location.sqlite\")")
        } else {
            out.append(line)
        }
    }
    // If etc/swiftser.cfg changes shape, say so rather than run something else.
    for key in ["listen", "tls_certificate", "tls_private_key", "tls_ca_list", "control_socket", "db_url"] where rewritten[key] == nil {
        throw DefaultConfigError.missing(key)
    }
    return out.joined(separator: "\n")
}

enum DefaultConfigError: Error, CustomStringConvertible {
    case missing(String)
    var description: String {
        switch self {
        case .missing(let key): "etc/swiftser.cfg has no \(key) line for the test to point at its own files and ports"
        }
    }
}

@Suite("baresip softphones call each other through SwiftSER", .serialized)
struct BaresipTests {
    @Test("etc/swiftser.cfg: a UDP caller reaches a callee registered over TLS, both behind an outbound proxy; RTP both ways; BYE ends the call")
    func defaultConfig() throws {
        try #require(Baresip.installed, Baresip.notInstalled)
        let pki = try TestPKI()
        try pki.issue("server", cn: "localhost", dns: ["localhost"], ips: ["127.0.0.1"], sip: ["sip:localhost"])
        let dir = makeTempDir("baresip-default")
        let config = try defaultConfigForTest(pki, dir: dir)
        let proxy = try TestProxy(config, dir: dir, locationFile: dir + "/location.sqlite")
        defer { proxy.stop() }
        // The default config authenticates: both phones are users with a password.
        for u in ["alice", "bob"] {
            try proxy.core.subscribers.put(.make(username: u, domain: "localhost", password: testPassword, keepPassword: false))
        }
        try Baresip.requireCompleted(Baresip.call(proxy, ca: pki.caFile, callerPassword: testPassword, calleePassword: testPassword))
    }

    @Test("a minimal registrar + proxy script (save, lookup, record_route, t_relay; loose_route in dialog): the same call completes")
    func minimalScript() throws {
        try #require(Baresip.installed, Baresip.notInstalled)
        let pki = try TestPKI()
        try pki.issue("server", cn: "localhost", dns: ["localhost"], ips: ["127.0.0.1"], sip: ["sip:localhost"])
        let proxy = try TestProxy("""
        listen=udp:127.0.0.1:0
        listen=tls:127.0.0.1:0
        alias="localhost"
        tls_certificate="\(pki.dir)/server.pem"
        tls_private_key="\(pki.dir)/server.key"
        tls_ca_list="\(pki.caFile)"
        loadmodule "sl.so"
        loadmodule "tm.so"
        loadmodule "rr.so"
        loadmodule "registrar.so"
        loadmodule "usrloc.so"
        loadmodule "siputils.so"
        loadmodule "textops.so"
        loadmodule "tls.so"
        modparam("usrloc", "db_mode", 0)
        request_route {
            if (has_totag()) {
                if (loose_route()) { t_relay(); exit; }
                if (!is_method("ACK")) { sl_send_reply("404", "Not here"); }
                exit;
            }
            if (is_method("REGISTER")) { save("location"); exit; }
            if (!lookup("location")) { sl_send_reply("404", "Not Found"); exit; }
            record_route();
            t_relay();
        }
        """)
        defer { proxy.stop() }
        try Baresip.requireCompleted(Baresip.call(proxy, ca: pki.caFile))
    }

}
