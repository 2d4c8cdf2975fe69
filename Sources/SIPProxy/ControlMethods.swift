import Foundation
import NIOCore
import SIPConfig
import SIPCore
import SIPTLS
import SIPTransport

/// SwiftSER's version, for `--version`, `core.version` and `core.info`.
public enum SwiftSERVersion {
    public static let number = "0.1.0"
    public static let full: String = {
        #if arch(x86_64)
        let arch = "x86_64"
        #elseif arch(arm64)
        let arch = "aarch64"
        #else
        let arch = "unknown"
        #endif
        #if os(Linux)
        let os = "linux"
        #elseif os(macOS)
        let os = "darwin"
        #else
        let os = "unknown"
        #endif
        return "swiftser \(number) (\(arch)/\(os))"
    }()
}

/// The JSON-RPC methods of the control socket, named and shaped as
/// Kamailio's RPC commands (core, ul, tls, cfg, stats), plus
/// `system.listMethods`.
struct ControlMethods {
    let server: ControlServer
    var core: ProxyCore { server.core }

    typealias Outcome = Result<Any, JSONRPC.Failure>

    static let names: [String] = [
        "cfg.get", "cfg.reload", "cfg.set", "core.info", "core.psx", "core.uptime", "core.version",
        "htable.delete", "htable.dump", "htable.get", "permissions.addressDump", "permissions.addressReload", "stats.get_statistics", "system.listMethods", "tls.info", "tls.list", "tls.options", "tls.reload", "ul.dump", "ul.lookup", "ul.rm",
    ]

    func run(_ method: String, _ p: [Any]) -> Outcome {
        switch method {
        case "core.version":
            return plain(p) { SwiftSERVersion.full }
        case "core.uptime":
            return plain(p) { uptime() }
        case "core.psx", "core.ps":
            return plain(p) { [["IDX": 0, "PID": Int(getpid()), "DSC": "main process: \(threads) event-loop threads, SIP and control"]] as [[String: Any]] }
        case "core.info":
            return plain(p) { info() }
        case "system.listMethods":
            return plain(p) { ControlMethods.names }
        case "ul.dump":
            return plain(p) { ulDump() }
        case "ul.lookup":
            return table(p).flatMap { aor -> Outcome in
                let list = core.location.bindings(for: aor)
                guard !list.isEmpty else { return .failure(.notFound("AOR not found")) }
                return .success(["AoR": aor, "Contacts": list.map { ["Contact": contact($0)] }] as [String: Any])
            }
        case "ul.rm":
            return table(p).flatMap { aor -> Outcome in
                guard !core.location.bindings(for: aor).isEmpty else { return .failure(.notFound("AOR not found")) }
                do {
                    try core.location.replace(aor: aor, with: [])
                } catch {
                    return .failure(.failed("failed to remove the AOR: \(error)"))
                }
                return .success("ok")
            }
        case "tls.list":
            return plain(p) { tlsList() }
        case "tls.options":
            return plain(p) { tlsOptions() }
        case "tls.info":
            return plain(p) {
                ["max_connections": core.config.core.tlsMaxConnections, "opened_connections": core.transport.connectionCount(.tls)] as [String: Any]
            }
        case "tls.reload":
            return noParams(p).flatMap { _ -> Outcome in
                switch server.reloadTLSOutcome() {
                case .reloaded: return .success("Ok. TLS configuration reloaded.")
                case .notInUse: return .failure(.failed("TLS is not in use; nothing to reload"))
                case .failed(let why): return .failure(.failed("TLS reload failed, the running certificates stay in use: \(why)"))
                }
            }
        case "cfg.get":
            return cfgVariable(p, count: 2).map { _ -> Any in server.logLevel.debug }
        case "cfg.set", "cfg.set_now_int", "cfg.seti":
            return cfgVariable(p, count: 3).flatMap { _ -> Outcome in
                let v: Int?
                switch p[2] {
                case let n as Int: v = n
                case let s as String: v = Int(s)
                default: v = nil
                }
                guard let v, server.logLevel.set(v) else {
                    return .failure(.invalidParams("core debug must be an integer from \(RuntimeLogLevel.range.lowerBound) to \(RuntimeLogLevel.range.upperBound)"))
                }
                server.logger.notice("log level set to \(v) (cfg.set core debug)")
                return .success(0)
            }
        case "cfg.reload":
            return noParams(p).flatMap { _ -> Outcome in
                switch core.reloadScript() {
                case .success(let r):
                    return .success(["reloaded": true, "route_blocks": r.blocks, "warnings": r.warnings] as [String: Any])
                case .failure(.invalid(let diagnostics)):
                    let errors = diagnostics.filter { $0.severity == .error }
                    return .failure(JSONRPC.Failure(code: 500, message: "route script not reloaded (\(errors.count) error\(errors.count == 1 ? "" : "s")); the running script stays in use",
                                                    data: diagnostics.map(\.description)))
                }
            }
        case "htable.dump":
            return htable(p, count: 1).map { t, _ -> Any in
                t.entries().map { e -> [String: Any] in
                    var d: [String: Any] = ["name": e.key, "value": ControlMethods.json(e.value)]
                    if let left = e.secondsLeft { d["expires"] = left }
                    return d
                }
            }
        case "htable.get":
            return htable(p, count: 2).flatMap { t, key -> Outcome in
                guard let v = t.get(key) else { return .failure(.notFound("key not found")) }
                let item: [String: Any] = ["name": key, "value": ControlMethods.json(v)]
                return .success(["item": item] as [String: Any])
            }
        case "htable.delete":
            return htable(p, count: 2).map { t, key -> Any in
                t.remove(key)
                return "ok"
            }
        case "permissions.addressReload":
            return noParams(p).flatMap { _ -> Outcome in
                guard core.permissions.file != nil else { return .failure(.failed("no address_file is configured (modparam permissions address_file)")) }
                switch core.permissions.reload() {
                case .success(let n):
                    server.logger.notice("address table reloaded: \(n) entries")
                    return .success(["reloaded": true, "entries": n] as [String: Any])
                case .failure(let why):
                    return .failure(.failed("address table not reloaded, the running one stays in use: \(why)"))
                }
            }
        case "permissions.addressDump":
            return plain(p) {
                core.permissions.table.entries.map { e -> [String: Any] in
                    var d: [String: Any] = ["group": e.group, "address": e.network.description, "port": e.port]
                    if let t = e.tag { d["tag"] = t }
                    return d
                }
            }
        case "stats.get_statistics", "stats.fetch":
            return statistics(p)
        default:
            return .failure(.methodNotFound(method))
        }
    }

    var threads: Int { core.config.core.children > 0 ? core.config.core.children : System.coreCount }

    /// A method without parameters: its result, or -32602 when some were given.
    func plain(_ p: [Any], _ body: () -> Any) -> Outcome {
        noParams(p).map { _ in body() }
    }

    func noParams(_ p: [Any]) -> Result<Void, JSONRPC.Failure> {
        p.isEmpty ? .success(()) : .failure(.invalidParams("this method takes no parameters"))
    }

    /// `ul.lookup location AOR` / `ul.rm location AOR`: the AOR key.
    func table(_ p: [Any]) -> Result<String, JSONRPC.Failure> {
        guard p.count == 2, let table = p[0] as? String, let aor = p[1] as? String, !aor.isEmpty else {
            return .failure(.invalidParams("expected the table and the AOR: [\"location\", \"alice@example.com\"]"))
        }
        guard table == "location" else { return .failure(.notFound("table '\(table)' not found; SwiftSER has one table, 'location'")) }
        return .success(ControlMethods.aorKey(aor))
    }

    /// The store's key for an AOR given as `user@host`, `host` or a SIP URI.
    static func aorKey(_ text: String) -> String {
        if text.lowercased().hasPrefix("sip:") || text.lowercased().hasPrefix("sips:"),
           let uri = try? SIPURI.parse(text) {
            return LocationService.aor(uri)
        }
        guard let at = text.lastIndex(of: "@") else { return text.lowercased() }
        return String(text[..<at]) + "@" + text[text.index(after: at)...].lowercased()
    }

    /// `htable.dump NAME` / `htable.get NAME KEY` / `htable.delete NAME KEY`.
    func htable(_ p: [Any], count: Int) -> Result<(HTable, String), JSONRPC.Failure> {
        guard p.count == count, let name = p[0] as? String, count == 1 || (p[1] as? String).map({ !$0.isEmpty }) == true else {
            return .failure(.invalidParams(count == 1 ? "expected the table name: [\"ipban\"]" : "expected the table name and a key: [\"ipban\", \"192.0.2.7\"]"))
        }
        guard let t = core.htables[name] else { return .failure(.notFound("htable '\(name)' not found")) }
        return .success((t, count == 2 ? (p[1] as? String ?? "") : ""))
    }

    static func json(_ v: Value) -> Any {
        switch v {
        case .int(let n): return n
        case .str(let s): return s
        case .null: return NSNull()
        }
    }

    /// `cfg.get core debug` / `cfg.set core debug N`: only core.debug exists.
    func cfgVariable(_ p: [Any], count: Int) -> Result<Void, JSONRPC.Failure> {
        guard p.count == count, let group = p[0] as? String, let name = p[1] as? String else {
            return .failure(.invalidParams(count == 2 ? "expected [\"core\", \"debug\"]" : "expected [\"core\", \"debug\", N]"))
        }
        guard group == "core", name == "debug" else {
            return .failure(.invalidParams("unknown configuration variable \(group).\(name); SwiftSER can change core.debug at run time"))
        }
        return .success(())
    }

    func uptime() -> [String: Any] {
        let now = Date()
        let fmt = DateFormatter()
        fmt.locale = Locale(identifier: "en_US_POSIX")
        fmt.dateFormat = "EEE MMM d HH:mm:ss yyyy"
        return ["now": fmt.string(from: now), "up_since": fmt.string(from: server.startedAt), "uptime": Int(now.timeIntervalSince(server.startedAt))]
    }

    func info() -> [String: Any] {
        #if compiler(>=6.3)
        let compiler = "swiftc 6.3 or later"
        #else
        let compiler = "swiftc"
        #endif
        return [
            "version": SwiftSERVersion.full, "id": SwiftSERVersion.number, "compiler": compiler,
            "compiled": "", "flags": "", "pid": Int(getpid()), "threads": threads,
            "config": core.config.file, "listen": core.transport.listeners.map(\.description),
        ]
    }

    func contact(_ b: LocationService.Binding) -> [String: Any] {
        let now = Int64(Date().timeIntervalSince1970)
        var c: [String: Any] = [
            "Address": b.contact, "Expires": Int(b.secondsLeft(now: now)), "Q": b.q.map { Int(($0 * 1000).rounded()) } ?? -1,
            "Call-ID": b.callID, "CSeq": Int(b.cseq), "User-Agent": b.userAgent ?? "[not set]",
            "Received": "\(b.proto):\(b.receivedIP.utf8.contains(0x3A) ? "[\(b.receivedIP)]" : b.receivedIP):\(b.receivedPort)",
            "Path": b.path.isEmpty ? "[not set]" : b.path.joined(separator: ","),
            "Socket": b.socket, "Instance": b.instance ?? "[not set]", "Reg-Id": Int(b.regID ?? 0),
        ]
        c["Tcpconn-Id"] = b.connectionID.map { Int(truncatingIfNeeded: $0) } ?? -1
        return c
    }

    func ulDump() -> [String: Any] {
        let all = core.location.all()
        var byAOR: [String: [LocationService.Binding]] = [:]
        for b in all { byAOR[b.aor, default: []].append(b) }
        let aors: [[String: Any]] = byAOR.keys.sorted().map { aor in
            ["Info": ["AoR": aor, "Contacts": (byAOR[aor] ?? []).map { ["Contact": contact($0)] }] as [String: Any]]
        }
        let stats: [String: Any] = ["Records": byAOR.count, "Contacts": all.count]
        let domain: [String: Any] = ["Domain": "location", "AoRs": aors, "Stats": stats]
        return ["Domains": [["Domain": domain]]]
    }

    func tlsList() -> [[String: Any]] {
        let now = ContinuousClock.now
        return core.transport.openConnections.filter { $0.proto == .tls }.map { c in
            let tls = c.tls
            let local = c.local
            let age = now - c.openedAt
            return [
                "id": Int(truncatingIfNeeded: c.id),
                "direction": c.outbound ? "out" : "in",
                "peer": "\(c.remoteIP.utf8.contains(0x3A) ? "[\(c.remoteIP)]" : c.remoteIP):\(c.remote.port ?? 0)",
                "src_ip": c.remoteIP, "src_port": c.remote.port ?? 0,
                "dst_ip": local?.ipAddress ?? "", "dst_port": local?.port ?? 0,
                "state": tls?.version == nil ? "handshake" : "established",
                "domain": tls?.domain ?? "",
                "sni": tls?.serverName ?? "",
                "version": tls?.version ?? "",
                "cipher": tls?.cipher ?? "",
                "subject": tls?.peerSubject ?? "",
                "issuer": tls?.peerIssuer ?? "",
                "verified": tls?.peerVerified ?? false,
                "age": Int(age.components.seconds),
            ]
        }
    }

    func tlsOptions() -> [[String: Any]] {
        guard let table = core.transport.tlsTable else { return [] }
        let fmt = ISO8601DateFormatter()
        return (table.servers + table.clients).map { d in
            [
                "name": d.domain.name, "role": d.domain.role.rawValue, "server_name": d.domain.serverName ?? "",
                "certificate": d.domain.certificate, "private_key": d.domain.privateKey, "ca_list": d.domain.caList ?? "",
                "subject": d.summary.subject, "issuer": d.summary.issuer, "not_after": fmt.string(from: d.summary.notValidAfter),
                "key": d.summary.keyType, "method": d.domain.method.name, "verify_certificate": d.domain.verify,
                "require_certificate": d.domain.requireCertificate, "verification": d.verificationDescription,
            ]
        }
    }

    /// Kamailio's `stats.get_statistics all | group: | name ...`: a list
    /// of "group:name = value" strings.
    func statistics(_ p: [Any]) -> Outcome {
        let names = p.compactMap { $0 as? String }
        guard !names.isEmpty, names.count == p.count else {
            return .failure(.invalidParams("expected 'all', 'group:' or statistic names"))
        }
        let all = currentStatistics()
        var out: [String] = []
        for want in names {
            for (group, name, value) in all {
                let match = want == "all" || (want.hasSuffix(":") && want.dropLast() == group) || want == name || want == "\(group):\(name)"
                if match, !out.contains("\(group):\(name) = \(value)") { out.append("\(group):\(name) = \(value)") }
            }
        }
        return .success(out)
    }

    /// The statistics SwiftSER keeps today (read when asked; the message
    /// path counts nothing for them).
    func currentStatistics() -> [(String, String, Int)] {
        let bindings = core.location.all()
        let users = Set(bindings.map(\.aor)).count
        let tcp = core.transport.connectionCount(.tcp)
        let tls = core.transport.connectionCount(.tls)
        return [
            ("core", "uptime", Int(Date().timeIntervalSince(server.startedAt))),
            ("tcp", "current_opened_connections", tcp + tls),
            ("tls", "current_opened_connections", tls),
            ("usrloc", "registered_users", users),
            ("usrloc", "location-contacts", bindings.count),
            ("usrloc", "location-users", users),
        ]
    }
}
