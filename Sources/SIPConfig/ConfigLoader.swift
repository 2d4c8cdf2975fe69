import Foundation

/// Loads a ser.cfg file into a `Config`: preprocess, lex, parse, apply
/// every setting with its default, build the TLS domain table, check the
/// route script. Every error found is reported, each with file, line,
/// column and a caret line.
public enum ConfigLoader {
    /// `functions`: the script functions the route script may call
    /// (SIPProxy's `ScriptFunctions.catalogue`).
    public static func load(file: String, functions: FunctionCatalogue, defines: [String: String] = [:],
                            readFile: @escaping Lexer.FileReader = { try String(contentsOfFile: $0, encoding: .utf8) }) throws(ConfigErrors) -> Config {
        var lexer = Lexer(defines: defines, readFile: readFile)
        let tokens = lexer.tokenize(file: file)
        let dir = absoluteDirectory((file as NSString).deletingLastPathComponent)
        return try build(tokens: tokens, lexer: lexer, file: file, directory: dir, functions: functions, readFile: readFile)
    }

    /// The folder as an absolute path: a relative one is taken against the
    /// current directory once, while loading, so that every relative path
    /// in the config means the same file whatever directory the proxy runs in later.
    static func absoluteDirectory(_ dir: String) -> String {
        if dir.hasPrefix("/") { return dir }
        let cwd = FileManager.default.currentDirectoryPath
        if dir.isEmpty || dir == "." { return cwd }
        let rest = dir.hasPrefix("./") ? String(dir.dropFirst(2)) : dir
        return cwd.hasSuffix("/") ? cwd + rest : cwd + "/" + rest
    }

    /// Loads config text (tests, `swiftser check -e`).
    public static func load(text: String, file: String = "<config>", directory: String = ".", functions: FunctionCatalogue,
                            readFile: @escaping Lexer.FileReader = { try String(contentsOfFile: $0, encoding: .utf8) }) throws(ConfigErrors) -> Config {
        var lexer = Lexer(readFile: readFile)
        let tokens = lexer.tokenize(text: text, file: file)
        return try build(tokens: tokens, lexer: lexer, file: file, directory: absoluteDirectory(directory), functions: functions, readFile: readFile)
    }

    static func build(tokens: [Token], lexer: Lexer, file: String, directory: String, functions: FunctionCatalogue,
                      readFile: @escaping Lexer.FileReader) throws(ConfigErrors) -> Config {
        var parser = Parser(tokens: tokens, functions: functions, sourceLine: { lexer.line($0) })
        parser.parseConfig()
        var b = Builder(config: Config(file: file, configDirectory: directory), functions: functions, sourceLine: { lexer.line($0) }, readFile: readFile)
        b.diagnostics = lexer.diagnostics + parser.diagnostics
        b.apply(parser)
        let errors = b.diagnostics.filter { $0.severity == .error }
        if !errors.isEmpty { throw ConfigErrors(ConfigDiagnostic.capped(errors, at: ConfigDiagnostic.maxErrors)) }
        var config = b.config
        config.warnings = ConfigDiagnostic.capped(b.diagnostics.filter { $0.severity == .warning }, at: ConfigDiagnostic.maxWarnings)
        return config
    }
}

/// Applies parsed assignments and blocks to the typed model.
struct Builder {
    var config: Config
    let functions: FunctionCatalogue
    let sourceLine: (SourceLocation) -> String?
    let readFile: Lexer.FileReader
    var diagnostics: [ConfigDiagnostic] = []
    /// Where `db_url` was set, for errors found once every modparam is read.
    var dbURLLocation: SourceLocation?
    /// Where `http_listen` was set, for the loopback check once all are read.
    var httpListenLocation: SourceLocation?

    mutating func error(_ loc: SourceLocation, _ message: String) {
        diagnostics.append(ConfigDiagnostic(.error, loc, message, sourceLine: sourceLine(loc)))
    }

    mutating func warning(_ loc: SourceLocation, _ message: String) {
        diagnostics.append(ConfigDiagnostic(.warning, loc, message, sourceLine: sourceLine(loc)))
    }

    // MARK: Value conversions

    mutating func int(_ a: Assignment) -> Int? {
        if a.tokens.count == 1, case .number(let n) = a.tokens[0].kind { return n }
        if a.tokens.count == 2, a.tokens[0].isPunct("-"), case .number(let n) = a.tokens[1].kind { return -n }
        if let n = Int(a.text.trimmingCharacters(in: .whitespaces)) { return n }
        error(a.valueLocation, "\(a.name) needs a number, found '\(a.text)'")
        return nil
    }

    mutating func bool(_ a: Assignment) -> Bool? {
        switch a.text.lowercased() {
        case "1", "yes", "on", "true", "enable", "enabled": return true
        case "0", "no", "off", "false", "disable", "disabled": return false
        default:
            error(a.valueLocation, "\(a.name) needs yes/no (or 1/0, on/off), found '\(a.text)'")
            return nil
        }
    }

    /// A path from the config: relative ones are taken against the config
    /// file's folder (never the current directory).
    func path(_ s: String) -> String {
        if s.hasPrefix("/") || s.isEmpty { return s }
        let rest = s.hasPrefix("./") ? String(s.dropFirst(2)) : s
        return config.configDirectory.hasSuffix("/") ? config.configDirectory + rest : config.configDirectory + "/" + rest
    }

    // MARK: Apply

    mutating func apply(_ p: Parser) {
        config.script = p.script
        config.modules = p.modules.map(\.0)
        var tlsGlobal = TLSParams()
        var profileBlocks: [DomainBlock] = []
        // The defaults are relative paths too: they live in the config's folder.
        config.core.controlSocket = path(config.core.controlSocket)
        config.registrar.database = path(config.registrar.database)
        for a in p.globals {
            applyGlobal(a, tls: &tlsGlobal)
        }
        for (module, name, value) in p.modparams {
            applyModparam(module: module, name: name, value: value, tls: &tlsGlobal, profile: &profileBlocks)
        }
        if config.registrar.dbMode != 0 && config.registrar.database.isEmpty {
            error(dbURLLocation ?? SourceLocation(file: config.file, line: 1, column: 1),
                  "usrloc db_url is empty but db_mode is \(config.registrar.dbMode); name a file (\"sqlite:///var/lib/swiftser/location.sqlite\") or set db_mode to 0 to keep registrations in memory")
        }
        if let h = config.core.httpListen, !h.isLoopback, !config.core.httpListenPublic, let loc = httpListenLocation {
            error(loc, "http_listen=\(h.host) is not a loopback address: /metrics and /ready would be open to the network; set http_listen_public=yes to allow it (and restrict it with a firewall)")
        }
        if config.listens.isEmpty {
            for proto in TransportProtocol.allCases where !(proto == .tls && config.tls.disabled) {
                config.listens.append(ListenSocket(proto: proto, host: "127.0.0.1", port: proto.defaultPort))
            }
        }
        if config.tls.disabled {
            for l in config.listens where l.proto == .tls {
                if let loc = l.location { warning(loc, "disable_tls=1: this TLS listener is not opened") }
            }
            config.listens.removeAll { $0.proto == .tls }
        }
        buildDomains(global: tlsGlobal, blocks: p.domains + profileBlocks)
        ScriptChecker(config: config, functions: functions, sourceLine: sourceLine).check(into: &diagnostics)
        if let loc = RelayCheck.openRelay(config.script, functions: functions) {
            config.openRelay = loc
            warning(loc, "this script relays requests without authenticating them (auth_check, proxy_authorize, is_peer_verified) or checking their source (src_ip, $si): anyone can use it as an open relay")
        }
    }

    mutating func applyGlobal(_ a: Assignment, tls: inout TLSParams) {
        if a.name == "tls_server_name" {
            // At the top level it would belong to the default domains, which
            // by definition have no name: say where it goes instead.
            error(a.nameLocation, "tls_server_name names an SNI domain and belongs in a TLS domain (tls_server_domain { … }, tls_client_domain[IP:port] { … } or a tls.cfg [server:any] section); the default domains have no name")
            return
        }
        if TLSParams.names.contains(a.name) {
            tls.set(a, builder: &self)
            return
        }
        switch a.name {
        case "listen":
            if let l = parseListen(a) { config.listens.append(contentsOf: l) }
        case "alias":
            config.aliases.append(a.text.replacingOccurrences(of: " ", with: ""))
        case "debug", "log_level":
            if let v = int(a) { config.core.logLevel = v }
        case "children", "tcp_children":
            if let v = int(a) {
                if v < 0 || v > 256 { error(a.valueLocation, "\(a.name) must be between 0 and 256") } else { config.core.children = v }
            }
        case "max_branches":
            if let v = int(a) {
                if v < 1 || v > 64 { error(a.valueLocation, "max_branches must be between 1 and 64") } else { config.transactions.maxBranches = v }
            }
        case "tcp_connection_lifetime":
            if let v = positive(a) { config.core.tcpConnectionLifetime = v }
        case "tcp_max_connections":
            if let v = inRange(a, 1...1_000_000) { config.core.tcpMaxConnections = v }
        case "tls_max_connections":
            if let v = inRange(a, 1...1_000_000) { config.core.tlsMaxConnections = v }
        case "tcp_connect_timeout":
            if let v = positive(a) { config.core.tcpConnectTimeout = v }
        case "tcp_send_timeout":
            if let v = positive(a) { config.core.tcpSendTimeout = v }
        case "tcp_conn_wq_max":
            if let v = positive(a) {
                if v < 4096 || v > 64 * 1024 * 1024 { error(a.valueLocation, "tcp_conn_wq_max must be between 4096 and 67108864 octets") } else { config.core.tcpConnWriteQueueMax = v }
            }
        case "tcp_wq_max":
            if let v = positive(a) {
                if v < 65_536 || v > 1 << 40 { error(a.valueLocation, "tcp_wq_max must be between 65536 and 1099511627776 octets") } else { config.core.tcpWriteQueueMax = v }
            }
        case "tcp_max_outbound_connections":
            if let v = inRange(a, 1...1_000_000) { config.core.tcpMaxOutboundConnections = v }
        case "tcp_max_connections_per_ip":
            if let v = inRange(a, 1...1_000_000) { config.core.tcpMaxConnectionsPerIP = v }
        case "tcp_msg_read_timeout":
            if let v = inRange(a, 1...86_400) { config.core.tcpMessageReadTimeout = v }
        case "tls_max_handshakes":
            if let v = inRange(a, 1...1_000_000) { config.tls.maxHandshakes = v }
        case "max_message_size", "tcp_max_msg_size", "max_msg_size":
            if let v = positive(a) {
                if v < 1024 { error(a.valueLocation, "\(a.name) below 1024 octets would refuse ordinary messages") } else { config.core.maxMessageSize = v }
            }
        case "disable_tls":
            if let v = bool(a) { config.tls.disabled = v }
        case "enable_tls":
            if let v = bool(a) { config.tls.disabled = !v }
        case "tls_auto_dev_certificates":
            if let v = bool(a) { config.tls.autoDevelopmentCertificates = v }
        case "tls_crl_stale":
            switch a.text.lowercased() {
            case "warn": config.tls.crlStaleFails = false
            case "fail": config.tls.crlStaleFails = true
            default: error(a.valueLocation, "tls_crl_stale must be warn or fail, found '\(a.text)'")
            }
        case "tls_handshake_timeout":
            if let v = positive(a) { config.tls.handshakeTimeout = v }
        case "tls_send_timeout":
            if let v = positive(a) { config.tls.sendTimeout = v }
        case "server_header":
            config.core.serverHeader = a.text
        case "user_agent_header":
            config.core.userAgentHeader = a.text
        case "sip_warning":
            if let v = bool(a) { config.core.sipWarning = v }
        case "control_socket":
            config.core.controlSocket = path(a.text)
        case "pid_file":
            config.core.pidFile = path(a.text)
        case "max_while_loops":
            if let v = inRange(a, 1...1_000_000) { config.core.maxWhileLoops = v }
        case "shutdown_timeout":
            if let v = inRange(a, 0...3600) { config.core.shutdownTimeout = v }
        case "dns_hosts_file":
            config.core.dnsHostsFile = path(a.text)
        case "dns_server":
            let text = a.text.trimmingCharacters(in: .whitespaces)
            if DNSServerAddress(text) == nil {
                error(a.valueLocation, "dns_server must be an IP address with an optional port, e.g. \"127.0.0.1\", \"127.0.0.1:5353\" or \"[::1]:53\"")
            } else {
                config.core.dnsServer = text
            }
        case "dns_srv_lookup", "dns_srv_lb":
            if let v = bool(a) { config.core.dnsSRVLookup = v }
        case "dns_max_pending":
            if let v = inRange(a, 1...100_000) { config.core.dnsMaxPending = v }
        case "dns_cache_max_entries":
            if let v = inRange(a, 1...10_000_000) { config.core.dnsCacheMaxEntries = v }
        case "dns_use_search_list":
            if let v = bool(a) { config.core.dnsUseSearchList = v }
        case "http_listen":
            if let v = HTTPListenAddress(a.text.trimmingCharacters(in: CharacterSet(charactersIn: "\" "))) {
                config.core.httpListen = v
                httpListenLocation = a.valueLocation
            } else {
                error(a.valueLocation, "http_listen must be an IP address and a port, e.g. \"127.0.0.1:9090\" or \"[::1]:9090\"")
            }
        case "http_listen_public":
            if let v = bool(a) { config.core.httpListenPublic = v }
        case "dns_try_naptr":
            if let v = bool(a) { config.core.dnsTryNAPTR = v }
        case "http_rpc":
            switch a.text.trimmingCharacters(in: CharacterSet(charactersIn: "\" ")).lowercased() {
            case "no", "off", "0", "false": config.core.httpRPC = .off
            case "loopback", "yes", "on", "1", "true": config.core.httpRPC = .loopback
            case "any": config.core.httpRPC = .any
            default: error(a.valueLocation, "http_rpc must be loopback (the default), any or no")
            }
        case "log_stderror":
            if let v = bool(a) { config.core.logStderror = v }
        case "log_facility":
            if let f = SyslogFacility(name: a.text) {
                config.core.logFacility = f
            } else {
                error(a.valueLocation, "log_facility must be a syslog facility: LOG_DAEMON, LOG_USER, LOG_LOCAL0 … LOG_LOCAL7, …")
            }
        case "log_name":
            let name = a.text.trimmingCharacters(in: CharacterSet(charactersIn: "\" "))
            if name.isEmpty || name.utf8.count > 64 || name.utf8.contains(where: { $0 <= 0x20 || $0 == 0x7F || $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: "[") }) {
                error(a.valueLocation, "log_name must be 1 to 64 characters without spaces, ':' or '['")
            } else {
                config.core.logName = name
            }
        case "log_format":
            if let f = LogFormat(rawValue: a.text.trimmingCharacters(in: CharacterSet(charactersIn: "\" ")).lowercased()) {
                config.core.logFormat = f
            } else {
                error(a.valueLocation, "log_format must be text or json")
            }
        case "syslog_socket":
            config.core.syslogSocket = path(a.text)
        case "fork", "log_prefix", "memdbg", "memlog", "mhomed", "auto_aliases",
             "dns", "rev_dns", "dns_try_ipv6", "use_dns_cache", "tcp_accept_no_cl", "tcp_keepalive", "enable_sctp", "udp_mtu":
            warning(a.nameLocation, "'\(a.name)' is a Kamailio setting SwiftSER does not need; it is ignored")
        default:
            error(a.nameLocation, "unknown parameter '\(a.name)'")
        }
    }

    mutating func inRange(_ a: Assignment, _ range: ClosedRange<Int>) -> Int? {
        guard let v = int(a) else { return nil }
        guard range.contains(v) else { error(a.valueLocation, "\(a.name) must be between \(range.lowerBound) and \(range.upperBound)"); return nil }
        return v
    }

    mutating func positive(_ a: Assignment) -> Int? {
        guard let v = int(a) else { return nil }
        guard v > 0 else { error(a.valueLocation, "\(a.name) must be greater than 0"); return nil }
        return v
    }

    /// `listen = [proto:]host[:port] [advertise host[:port]]`
    mutating func parseListen(_ a: Assignment) -> [ListenSocket]? {
        var words = a.text.split(separator: " ").map(String.init)
        guard !words.isEmpty else { error(a.valueLocation, "listen needs proto:address:port"); return nil }
        var spec = words.removeFirst()
        var advertised: (String, UInt16?)? = nil
        if !words.isEmpty {
            guard words[0] == "advertise", words.count == 2, let hp = HostPortParser.parse(words[1], defaultPort: nil) else {
                error(a.valueLocation, "expected 'listen = proto:address:port [advertise address[:port]]', found '\(a.text)'")
                return nil
            }
            advertised = (hp.host, hp.port)
        }
        var protos: [TransportProtocol] = [.udp, .tcp]
        for p in TransportProtocol.allCases where spec.lowercased().hasPrefix(p.rawValue + ":") {
            protos = [p]
            spec = String(spec.dropFirst(p.rawValue.count + 1))
        }
        if spec.lowercased().hasPrefix("sctp:") || spec.lowercased().hasPrefix("ws:") || spec.lowercased().hasPrefix("wss:") {
            error(a.valueLocation, "listen: SwiftSER serves udp, tcp and tls; '\(spec.split(separator: ":")[0])' is not supported")
            return nil
        }
        guard let hp = HostPortParser.parse(spec, defaultPort: nil) else {
            error(a.valueLocation, "listen: expected [udp:|tcp:|tls:]address[:port] (IPv6 in brackets), found '\(a.text)'")
            return nil
        }
        return protos.map {
            ListenSocket(proto: $0, host: hp.host, port: hp.port ?? $0.defaultPort, advertisedHost: advertised?.0, advertisedPort: advertised?.1, location: a.valueLocation)
        }
    }

    mutating func applyModparam(module: String, name: String, value: Assignment, tls: inout TLSParams, profile: inout [DomainBlock]) {
        let loc = value.valueLocation
        switch (module, name) {
        case ("registrar", "default_expires"): if let v = int(value) { config.registrar.defaultExpires = v }
        case ("registrar", "min_expires"): if let v = int(value) { config.registrar.minExpires = v }
        case ("registrar", "max_expires"): if let v = int(value) { config.registrar.maxExpires = v }
        case ("registrar", "max_contacts"): if let v = int(value) { config.registrar.maxContacts = v }
        case ("registrar", "max_bindings"): if let v = inRange(value, 0...100_000_000) { config.registrar.maxBindings = v }
        case ("usrloc", "db_url"):
            dbURLLocation = loc
            switch DatabaseURL.parse(value.text) {
            case .success(let file): config.registrar.database = path(file)
            case .failure(.emptyPath): config.registrar.database = "" // fine with db_mode 0; checked below
            case .failure(let e): error(loc, e.message)
            }
        case ("usrloc", "db_mode"):
            guard let v = int(value) else { return }
            switch v {
            case 0, 1: config.registrar.dbMode = v
            case 2: error(loc, "usrloc db_mode 2 (write-back) is not implemented; use 1 (every change written through to SQLite) or 0 (memory only)")
            case 3: error(loc, "usrloc db_mode 3 (database only) is not implemented; use 1 (every change written through to SQLite) or 0 (memory only)")
            case 4: error(loc, "usrloc db_mode 4 (read-only database) is not implemented; use 1 (every change written through to SQLite) or 0 (memory only)")
            default: error(loc, "unknown usrloc db_mode \(v); SwiftSER implements 0 (memory only) and 1 (write-through to SQLite)")
            }
        case ("tm", "fr_timer"): if let v = int(value) { config.transactions.finalResponseTimeout = v }
        case ("tm", "fr_inv_timer"): if let v = int(value) { config.transactions.inviteFinalResponseTimeout = v }
        case ("tm", "retr_timer1"), ("tm", "t1"): if let v = int(value) { config.transactions.t1 = v }
        case ("tm", "retr_timer2"), ("tm", "t2"): if let v = int(value) { config.transactions.t2 = v }
        case ("tm", "max_transactions"): if let v = inRange(value, 1...10_000_000) { config.transactions.maxTransactions = v }
        case ("tm", "max_transactions_per_ip"): if let v = inRange(value, 1...10_000_000) { config.transactions.maxTransactionsPerIP = v }
        case ("rr", "enable_double_rr"): if let v = bool(value) { config.recordRoute.doubleRecordRoute = v }
        case ("rr", "append_fromtag"): if let v = bool(value) { config.recordRoute.appendFromTag = v }
        case ("pike", "sampling_time_unit"): if let v = positive(value) { config.pike.samplingTimeUnit = min(v, 3600) }
        case ("pike", "reqs_density_per_unit"): if let v = positive(value) { config.pike.reqsDensityPerUnit = v }
        case ("pike", "remove_latency"): if let v = positive(value) { config.pike.removeLatency = min(v, 86_400) }
        case ("pike", "max_entries"):
            if let v = positive(value) {
                if v > 10_000_000 { error(loc, "pike max_entries above 10000000 is refused") } else { config.pike.maxEntries = v }
            }
        case ("htable", "htable"):
            if let spec = htable(value) {
                if config.htables.contains(where: { $0.name == spec.name }) {
                    error(loc, "htable '\(spec.name)' is declared twice")
                } else {
                    config.htables.append(spec)
                }
            }
        case ("htable", _):
            warning(value.nameLocation, "modparam htable/\(name) has no effect in SwiftSER")
        case ("permissions", "address_file"):
            config.permissions.addressFile = value.text.isEmpty ? nil : path(value.text)
        case ("permissions", "max_address_entries"):
            if let v = positive(value) {
                if v > 1_000_000 { error(loc, "permissions max_address_entries above 1000000 is refused") } else { config.permissions.maxAddressEntries = v }
            }
        case ("permissions", "db_url"), ("permissions", "address_table"), ("permissions", "grp_col"), ("permissions", "ip_addr_col"),
             ("permissions", "mask_col"), ("permissions", "port_col"), ("permissions", "db_mode"), ("permissions", "peer_tag_avp"):
            warning(value.nameLocation, "modparam permissions/\(name) has no effect in SwiftSER (the address table is read from address_file)")
        case ("sanity", "default_checks"):
            if let v = int(value) {
                if v < 0 || v > 16383 { error(loc, "sanity default_checks must be a sum of check numbers, 0 to 16383") } else { config.sanity.defaultChecks = v }
            }
        case ("sanity", "uri_checks"):
            if let v = int(value) {
                if v < 0 || v > 7 { error(loc, "sanity uri_checks must be 0 to 7 (1 Request-URI, 2 From, 4 To)") } else { config.sanity.uriChecks = v }
            }
        case ("sanity", "proxy_require"):
            config.sanity.proxyRequire = value.text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        case ("sanity", "autodrop"):
            if let v = int(value) { config.sanity.autodrop = v != 0 }
        case ("pike", "pike_log_level"):
            warning(value.nameLocation, "modparam pike/\(name) has no effect in SwiftSER")
        case ("auth", "secret"):
            if value.text.utf8.count < 16 { error(loc, "auth secret must be at least 16 characters (or leave it out: a random one is made at start)") } else { config.auth.secret = value.text }
        case ("auth", "nonce_expire"):
            if let v = positive(value) { config.auth.nonceExpire = min(v, 86_400) }
        case ("auth", "nonce_auth_max_drift"):
            if let v = int(value) { config.auth.nonceAuthMaxDrift = max(0, min(v, 3600)) }
        case ("auth", "auth_checks_register"), ("auth", "auth_checks_no_dlg"), ("auth", "auth_checks_in_dlg"):
            guard let v = int(value) else { return }
            guard (0...15).contains(v) else { error(loc, "\(name) is a sum of 1 (Request-URI), 2 (Call-ID), 4 (From tag), 8 (source IP): 0 to 15"); return }
            switch name {
            case "auth_checks_register": config.auth.checksRegister = v
            case "auth_checks_no_dlg": config.auth.checksNoDialog = v
            default: config.auth.checksInDialog = v
            }
        case ("auth", "nc_array_size"):
            if let v = positive(value) {
                if v > 16_777_216 { error(loc, "nc_array_size above 16777216 slots (256 MiB) is refused") } else { config.auth.ncArraySize = v }
            }
        case ("auth", "algorithm"):
            let words = value.text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).uppercased() }
            guard !words.isEmpty, words.allSatisfy({ $0 == "MD5" || $0 == "SHA-256" }) else {
                error(loc, "auth algorithm: MD5, SHA-256 or both separated by a comma (SHA-512 is not supported)")
                return
            }
            config.auth.algorithms = words
        case ("auth", "nonce_count"), ("auth", "qop"), ("auth", "one_time_nonce"), ("auth", "force_stateless_reply"):
            warning(value.nameLocation, "modparam auth/\(name) has no effect in SwiftSER (nonce counts are always checked; qop comes from the challenge flags; challenges are sent statelessly)")
        case ("auth_db", "db_url"):
            var url = value.text
            if url.hasPrefix("sqlite://") { url.removeFirst("sqlite://".count) }
            guard !url.contains("://") else { error(loc, "auth_db db_url: SwiftSER stores subscribers in SQLite: sqlite:///path or a path"); return }
            config.auth.database = path(url)
        case ("auth_db", "calculate_ha1"): if let v = bool(value) { config.auth.calculateHA1 = v }
        case ("auth_db", "use_domain"): if let v = bool(value) { config.auth.useDomain = v }
        case ("auth_db", "user_column"), ("auth_db", "domain_column"), ("auth_db", "password_column"), ("auth_db", "password_column_2"), ("auth_db", "load_credentials"), ("auth_db", "version_table"):
            warning(value.nameLocation, "modparam auth_db/\(name) has no effect in SwiftSER (the subscriber columns are fixed)")
        case ("tls", "config"):
            let file = path(value.text)
            config.tls.profileFile = file
            do {
                let text = try readFile(file)
                var pp = ProfileParser(file: file, text: text)
                profile.append(contentsOf: pp.parse())
                diagnostics.append(contentsOf: pp.diagnostics)
            } catch {
                self.error(loc, "cannot read TLS profile file '\(file)'")
            }
        case ("tls", _):
            guard let canonical = TLSParams.kamailioNames[name] else {
                error(loc, "unknown tls module parameter '\(name)'")
                return
            }
            var a = value
            a.name = canonical
            tls.set(a, builder: &self)
        case ("sl", _), ("maxfwd", _), ("textops", _), ("siputils", _), ("xlog", _), ("pv", _), ("kex", _),
             ("corex", _), ("sanity", _), ("ctl", _), ("jsonrpcs", _), ("tmx", _):
            warning(value.nameLocation, "modparam \(module)/\(name) has no effect in SwiftSER")
        default:
            error(value.nameLocation, "unknown \(module) module parameter '\(name)'")
        }
    }

    /// `name=>size=8;autoexpire=300;initval=0;updateexpire=1;` (Kamailio's syntax).
    mutating func htable(_ value: Assignment) -> HTableSpec? {
        let loc = value.valueLocation
        guard let arrow = value.text.range(of: "=>") else {
            error(loc, "htable needs 'name=>attributes', e.g. \"ipban=>size=8;autoexpire=300;\"")
            return nil
        }
        let name = value.text[..<arrow.lowerBound].trimmingCharacters(in: .whitespaces)
        guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" }) else {
            error(loc, "htable name '\(name)' must be letters, digits, '_' or '-'")
            return nil
        }
        var spec = HTableSpec(name: name)
        for attr in value.text[arrow.upperBound...].split(separator: ";") {
            let parts = attr.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard let key = parts.first, !key.isEmpty else { continue }
            let number = parts.count > 1 ? Int(parts[1]) : nil
            switch key {
            case "size":
                guard let n = number, (1...16).contains(n) else { error(loc, "htable \(name): size must be 1 to 16 (2^size slots)"); return nil }
                spec.size = n
            case "autoexpire":
                guard let n = number, (0...31_536_000).contains(n) else { error(loc, "htable \(name): autoexpire must be 0 to 31536000 seconds"); return nil }
                spec.autoexpire = n
            case "initval":
                guard let n = number else { error(loc, "htable \(name): initval must be a number"); return nil }
                spec.initval = n
            case "updateexpire":
                guard let n = number else { error(loc, "htable \(name): updateexpire must be 0 or 1"); return nil }
                spec.updateExpire = n != 0
            case "dbtable", "dbmode", "dmqreplicate", "cols", "coldelim", "colnull":
                warning(loc, "htable \(name): '\(key)' has no effect in SwiftSER (tables live in memory)")
            default:
                error(loc, "htable \(name): unknown attribute '\(key)'")
                return nil
            }
        }
        return spec
    }

    // MARK: TLS domains

    mutating func buildDomains(global: TLSParams, blocks: [DomainBlock]) {
        var domains: [TLSDomain] = []
        // Profile sections [server:default]/[client:default] refine the defaults.
        var serverDefault = global
        var clientDefault = global
        for b in blocks where b.address == nil && b.isDefault {
            var params = b.role == .server ? serverDefault : clientDefault
            for a in b.assignments { params.set(a, builder: &self) }
            if b.role == .server { serverDefault = params } else { clientDefault = params }
        }
        domains.append(resolve(serverDefault, role: .server, address: nil, location: nil))
        domains.append(resolve(clientDefault, role: .client, address: nil, location: nil))
        let tlsListens = config.listens.filter { $0.proto == .tls }
        for b in blocks where !(b.address == nil && b.isDefault) {
            var params = b.role == .server ? serverDefault : clientDefault
            params.serverName = nil
            for a in b.assignments { params.set(a, builder: &self) }
            if b.address == nil && params.serverName == nil {
                error(b.location, "a TLS domain without an address needs a server_name (SNI)")
                continue
            }
            let d = resolve(params, role: b.role, address: b.address, location: b.location)
            if domains.contains(where: { $0.role == d.role && $0.address == d.address && $0.serverName?.lowercased() == d.serverName?.lowercased() }) {
                error(b.location, "TLS domain \(d.name) is defined twice")
                continue
            }
            if b.role == .server, let addr = b.address, !config.tls.disabled,
               !tlsListens.contains(where: { $0.host.lowercased() == addr.host.lowercased() && $0.port == addr.port }) {
                error(b.location, "tls_domain[\(addr)] is not a TLS listener; TLS listeners are: \(tlsListens.map { "\($0.host):\($0.port)" }.joined(separator: ", "))")
            }
            domains.append(d)
        }
        config.tls.domains = domains
        // Warnings about insecure settings.
        for d in domains {
            let loc = d.location ?? SourceLocation(file: config.file, line: 1, column: 1)
            if d.method.allowsDeprecatedVersions {
                warning(global.method?.1 ?? loc, "TLS domain \(d.name) allows \(d.method.minimum), which BCP 195 (RFC 8996) forbids; use tlsv1.2+")
            }
            if let c = d.ciphers, let weak = TLSParams.weakCipherWords.first(where: { c.uppercased().contains($0) && !c.uppercased().contains("!" + $0) }) {
                warning(global.ciphers?.1 ?? loc, "TLS domain \(d.name): cipher list '\(c)' enables \(weak) ciphers, which give no or weak protection")
            }
        }
        if let server = domains.first(where: { $0.role == .server && $0.isDefault }), !server.verify {
            for l in tlsListens where !(l.host == "127.0.0.1" || l.host == "::1" || l.host == "localhost") {
                if !domains.contains(where: { $0.role == .server && $0.address?.host == l.host && $0.address?.port == l.port && $0.verify }) {
                    warning(l.location ?? SourceLocation(file: config.file, line: 1, column: 1),
                            "TLS listener \(l) does not verify client certificates (tls_verify=0) on a non-loopback address")
                }
            }
        }
        // Outbound: a proxy that listens beyond this machine forwards to
        // other hosts too; an unverified client domain lets anyone on the
        // path stand in for them.
        let facesNetwork = config.listens.contains { !["127.0.0.1", "::1", "localhost"].contains($0.host) }
        if facesNetwork {
            for d in domains where d.role == .client && !d.verify {
                warning(d.location ?? SourceLocation(file: config.file, line: 1, column: 1),
                        "TLS client domain \(d.name) sends to other servers without verifying their certificate (tls_verify=0): anyone on the path can pose as them; set tls_verify=1 in tls_client_domain { … } (with tls_ca_list=\"\" the system's trust store is used)")
            }
        }
    }

    func resolve(_ p: TLSParams, role: TLSDomainRole, address: HostPort?, location: SourceLocation?) -> TLSDomain {
        TLSDomain(
            role: role, address: address, serverName: p.serverName,
            certificate: path(p.certificate?.0 ?? "cert.pem"),
            privateKey: path(p.privateKey?.0 ?? p.certificate?.0 ?? "cert.pem"),
            privateKeyPassword: p.privateKeyPassword,
            caList: p.caList.map { path($0.0) },
            crl: p.crl.map { path($0) },
            ciphers: p.ciphers?.0,
            curves: p.curves,
            method: p.method?.0 ?? .sslv23,
            verify: p.verify ?? false,
            requireCertificate: p.requireCertificate ?? false,
            verifyDepth: p.verifyDepth ?? 9,
            verifyHostname: p.verifyHostname ?? true,
            allowWildcardCertificates: p.allowWildcard ?? false,
            location: location)
    }
}

extension DomainBlock {
    var isDefault: Bool { address == nil && !assignments.contains { $0.name == "tls_server_name" } && !isAny }
    /// A `[server:any]` profile section (SNI domain without an address).
    var isAny: Bool { assignments.contains { $0.name == "__any" } }
}

/// TLS parameters of one scope (global, a domain block, a profile section);
/// unset ones are inherited.
struct TLSParams {
    var certificate: (String, SourceLocation)?
    var privateKey: (String, SourceLocation)?
    var privateKeyPassword: String?
    var caList: (String, SourceLocation)?
    var crl: String?
    var ciphers: (String, SourceLocation)?
    var curves: [String]?
    var method: (TLSMethod, SourceLocation)?
    var verify: Bool?
    var requireCertificate: Bool?
    var verifyDepth: Int?
    var serverName: String?
    var verifyHostname: Bool?
    var allowWildcard: Bool?

    static let names: Set<String> = [
        "tls_certificate", "tls_private_key", "tls_private_key_password", "tls_ca_list", "tls_crl", "tls_ciphers_list",
        "tls_method", "tls_verify", "tls_require_certificate", "tls_verify_depth", "tls_server_name",
        "tls_verify_hostname", "tls_allow_wildcard_certs", "tls_curves",
    ]

    /// Key-exchange groups `tls_curves` accepts, with the spellings OpenSSL
    /// also uses, mapped to the canonical name.
    static let curveNames: [String: String] = [
        "x25519mlkem768": "X25519MLKEM768", "x25519": "X25519",
        "p-256": "P-256", "prime256v1": "P-256", "secp256r1": "P-256",
        "p-384": "P-384", "secp384r1": "P-384", "p-521": "P-521", "secp521r1": "P-521",
    ]

    /// Kamailio tls module / tls.cfg names → ours.
    static let kamailioNames: [String: String] = [
        "certificate": "tls_certificate", "private_key": "tls_private_key", "private_key_password": "tls_private_key_password",
        "ca_list": "tls_ca_list", "crl": "tls_crl", "cipher_list": "tls_ciphers_list", "tls_method": "tls_method",
        "method": "tls_method", "verify_certificate": "tls_verify", "require_certificate": "tls_require_certificate",
        "verify_depth": "tls_verify_depth", "server_name": "tls_server_name", "verify_hostname": "tls_verify_hostname",
        "allow_wildcard_certs": "tls_allow_wildcard_certs", "curves": "tls_curves",
    ]

    static let weakCipherWords = ["NULL", "EXPORT", "RC4", "DES", "MD5", "ANULL", "ENULL", "LOW"]

    mutating func set(_ a: Assignment, builder b: inout Builder) {
        let loc = a.valueLocation
        switch a.name {
        case "tls_certificate": certificate = (a.text, loc)
        case "tls_private_key": privateKey = (a.text, loc)
        case "tls_private_key_password": privateKeyPassword = a.text
        case "tls_ca_list": caList = a.text.isEmpty ? nil : (a.text, loc)
        case "tls_crl": crl = a.text.isEmpty ? nil : a.text
        case "tls_ciphers_list": ciphers = a.text.isEmpty ? nil : (a.text, loc)
        case "tls_curves":
            let words = a.text.split(whereSeparator: { $0 == ":" || $0 == "," || $0 == " " }).map { String($0) }
            if words.isEmpty { curves = nil; break }
            var list: [String] = []
            for w in words {
                guard let c = TLSParams.curveNames[w.lowercased()] else {
                    b.error(loc, "tls_curves: unknown key-exchange group '\(w)'; known: X25519MLKEM768, X25519, P-256, P-384, P-521")
                    return
                }
                if !list.contains(c) { list.append(c) }
            }
            curves = list
        case "tls_method":
            switch TLSMethod.parse(a.text) {
            case .success(let m): method = (m, loc)
            case .failure(let e): b.error(loc, e.message)
            }
        case "tls_verify": if let v = b.bool(a) { verify = v }
        case "tls_require_certificate": if let v = b.bool(a) { requireCertificate = v }
        case "tls_verify_depth":
            if let v = b.int(a) {
                if v < 0 || v > 100 { b.error(loc, "tls_verify_depth must be between 0 and 100") } else { verifyDepth = v }
            }
        case "tls_server_name": serverName = a.text
        case "tls_verify_hostname": if let v = b.bool(a) { verifyHostname = v }
        case "tls_allow_wildcard_certs": if let v = b.bool(a) { allowWildcard = v }
        case "__any": break
        default: b.error(a.nameLocation, "'\(a.name)' cannot be set in a TLS domain; allowed: \(TLSParams.names.sorted().joined(separator: ", "))")
        }
    }
}

/// Reads a Kamailio `tls.cfg` profile file: `[server:default]`,
/// `[client:default]`, `[server:IP:port]`, `[client:IP:port]`,
/// `[server:any]` (with server_name), then `name = value` lines.
struct ProfileParser {
    let file: String
    let text: String
    var diagnostics: [ConfigDiagnostic] = []

    mutating func parse() -> [DomainBlock] {
        var blocks: [DomainBlock] = []
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            let loc = SourceLocation(file: file, line: i + 1, column: 1)
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("[") {
                guard line.hasSuffix("]") else { err(loc, String(raw), "section header must end with ']'"); continue }
                let inner = line.dropFirst().dropLast()
                let parts = inner.split(separator: ":", maxSplits: 1).map(String.init)
                guard parts.count == 2, let role = TLSDomainRole(rawValue: parts[0].lowercased()) else {
                    err(loc, String(raw), "expected [server:…] or [client:…]")
                    continue
                }
                var block = DomainBlock(role: role, address: nil, location: loc, assignments: [])
                switch parts[1].lowercased() {
                case "default": break
                case "any":
                    block.assignments.append(Assignment(name: "__any", nameLocation: loc, tokens: [], valueLocation: loc))
                default:
                    guard let hp = HostPortParser.parse(parts[1], defaultPort: nil), let port = hp.port else {
                        err(loc, String(raw), "expected IP:port, 'default' or 'any' in the section name")
                        continue
                    }
                    block.address = HostPort(host: hp.host, port: port)
                }
                blocks.append(block)
                continue
            }
            guard let eq = line.firstIndex(of: "=") else { err(loc, String(raw), "expected 'name = value'"); continue }
            let name = line[..<eq].trimmingCharacters(in: .whitespaces)
            var value = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            if value.hasPrefix("\"") && value.hasSuffix("\"") && value.count >= 2 { value = String(value.dropFirst().dropLast()) }
            guard !blocks.isEmpty else { err(loc, String(raw), "'\(name)' before any [server:…] or [client:…] section"); continue }
            guard let canonical = TLSParams.kamailioNames[name] else {
                if ["server_id", "verify_client"].contains(name) { continue }
                err(loc, String(raw), "unknown TLS profile parameter '\(name)'")
                continue
            }
            let col = (raw.range(of: value).map { raw.distance(from: raw.startIndex, to: $0.lowerBound) } ?? 0) + 1
            let vloc = SourceLocation(file: file, line: i + 1, column: col)
            let tok = Token(kind: .string(value), location: vloc, spaceBefore: true)
            blocks[blocks.count - 1].assignments.append(Assignment(name: canonical, nameLocation: loc, tokens: [tok], valueLocation: vloc))
        }
        return blocks
    }

    mutating func err(_ loc: SourceLocation, _ line: String, _ message: String) {
        diagnostics.append(ConfigDiagnostic(.error, loc, message, sourceLine: line))
    }
}
