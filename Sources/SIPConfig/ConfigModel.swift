import Foundation

/// The typed result of loading a config: every setting with its default
/// applied, the TLS domain table, and the route script.
public struct Config: Sendable {
    /// Path of the main config file.
    public var file: String
    /// The folder of the config file: the seed's CFG_DIR, where relative
    /// certificate paths are resolved.
    public var configDirectory: String
    public var listens: [ListenSocket] = []
    /// Host names (and host:port) that `myself` matches besides the listen addresses.
    public var aliases: [String] = []
    public var core = CoreSettings()
    public var tls = TLSSettings()
    public var registrar = RegistrarSettings()
    public var transactions = TransactionSettings()
    public var recordRoute = RecordRouteSettings()
    public var auth = AuthSettings()
    public var pike = PikeSettings()
    public var sanity = SanitySettings()
    public var permissions = PermissionsSettings()
    /// htable tables (`modparam("htable", "htable", "name=>size=8;autoexpire=300;")`).
    public var htables: [HTableSpec] = []
    /// Where the script relays without authenticating or checking the
    /// source of requests (an open relay); nil when it does not.
    public var openRelay: SourceLocation?
    public var modules: [String] = []
    public var script = RouteScript()
    /// Warnings found while loading (errors stop the load instead).
    public var warnings: [ConfigDiagnostic] = []

    public init(file: String, configDirectory: String) {
        self.file = file
        self.configDirectory = configDirectory
    }
}

public enum TransportProtocol: String, Sendable, CaseIterable, Hashable {
    case udp, tcp, tls

    /// The port used when a listen or URI gives none.
    public var defaultPort: UInt16 { self == .tls ? 5061 : 5060 }
    public var isStream: Bool { self != .udp }
}

/// One `listen=` socket.
public struct ListenSocket: Sendable, Equatable, CustomStringConvertible {
    public var proto: TransportProtocol { didSet { description = Self.describe(proto, host, port) } }
    /// Address to bind: an IPv4 or IPv6 literal (no brackets), or a name.
    public var host: String { didSet { description = Self.describe(proto, host, port) } }
    public var port: UInt16 { didSet { description = Self.describe(proto, host, port) } }
    /// `advertise host[:port]`: what goes into Via and Record-Route instead.
    public var advertisedHost: String?
    public var advertisedPort: UInt16?
    public var location: SourceLocation?
    /// `proto:host:port`, IPv6 in brackets (made once: it is stored with
    /// every registration).
    public private(set) var description: String

    public init(proto: TransportProtocol, host: String, port: UInt16, advertisedHost: String? = nil, advertisedPort: UInt16? = nil, location: SourceLocation? = nil) {
        self.proto = proto
        self.host = host
        self.port = port
        self.advertisedHost = advertisedHost
        self.advertisedPort = advertisedPort
        self.location = location
        self.description = Self.describe(proto, host, port)
    }

    public var isIPv6: Bool { host.utf8.contains(0x3A) }

    static func describe(_ proto: TransportProtocol, _ host: String, _ port: UInt16) -> String {
        "\(proto.rawValue):\(host.utf8.contains(0x3A) ? "[\(host)]" : host):\(port)"
    }

    public static func == (a: ListenSocket, b: ListenSocket) -> Bool {
        a.proto == b.proto && a.host == b.host && a.port == b.port && a.advertisedHost == b.advertisedHost && a.advertisedPort == b.advertisedPort
    }
}

/// Core and TCP settings (names as in SER/Kamailio).
public struct CoreSettings: Sendable, Equatable {
    /// `debug` / `log_level`: -3 (alert) … 3 (debug), SER's scale.
    public var logLevel = 0
    /// `children`: event-loop threads (0: one per core).
    public var children = 0
    /// `tcp_connection_lifetime`: idle seconds before a TCP/TLS connection closes.
    public var tcpConnectionLifetime = 120
    public var tcpMaxConnections = 2048
    public var tlsMaxConnections = 2048
    /// `tcp_connect_timeout` (s).
    public var tcpConnectTimeout = 10
    /// `tcp_send_timeout` (s): queued writes on a TCP connection.
    public var tcpSendTimeout = 10
    /// `tcp_conn_wq_max` (octets): one TCP/TLS connection's write queue;
    /// past it the connection closes (never below `maxMessageSize`).
    public var tcpConnWriteQueueMax = 32 * 1024
    /// `tcp_wq_max` (octets): the write queues of all connections together.
    public var tcpWriteQueueMax = 10 * 1024 * 1024
    /// `tcp_max_connections_per_ip`: inbound TCP and TLS connections from one source address.
    public var tcpMaxConnectionsPerIP = 32
    /// `tcp_max_outbound_connections`: connections SwiftSER opens (TCP and TLS together).
    public var tcpMaxOutboundConnections = 2048
    /// `tcp_msg_read_timeout` (s): a started message must be complete within this.
    public var tcpMessageReadTimeout = 20
    /// `max_message_size` / `tcp_max_msg_size` (octets, header plus body).
    public var maxMessageSize = 65_535
    /// `server_header` / `user_agent_header`: values SwiftSER writes into replies and requests it makes.
    public var serverHeader = "Server: SwiftSER"
    public var userAgentHeader = "User-Agent: SwiftSER"
    /// `sip_warning`: add a Warning header to replies SwiftSER generates.
    public var sipWarning = false
    /// `control_socket`: where `swiftser ctl` reaches the running proxy.
    public var controlSocket = "var/swiftser.ctl"
    /// `pid_file`.
    public var pidFile: String?
    /// `shutdown_timeout` (s): on SIGTERM, how long transactions in
    /// progress may take to finish before the process exits anyway.
    public var shutdownTimeout = 30
    /// `max_while_loops` (Kamailio's core parameter): iterations one
    /// `while` loop may run on one message; the loop then stops (logged and
    /// counted) and the script goes on after it.
    public var maxWhileLoops = 100
    /// `dns_hosts_file`: a hosts-style file consulted before DNS (tests, lab setups).
    public var dnsHostsFile: String?
    /// `dns_server`: the DNS server (IP[:port]) for SRV and A/AAAA look-ups;
    /// nil: the first `nameserver` of /etc/resolv.conf.
    public var dnsServer: String?
    /// `dns_srv_lookup`: RFC 3263 SRV look-ups for names without a port.
    public var dnsSRVLookup = true
    /// `dns_max_pending`: DNS look-ups in progress at once; more fail at once.
    public var dnsMaxPending = 1024
    /// `dns_cache_max_entries`: answers kept in the DNS cache at most.
    public var dnsCacheMaxEntries = 10_000
    /// `dns_use_search_list`: names are also tried with the `search`
    /// domains of /etc/resolv.conf (as its `ndots` says).
    public var dnsUseSearchList = true
    /// `dns_try_naptr`: RFC 3263 §4.1 NAPTR look-ups pick the transport for
    /// names given without transport and port.
    public var dnsTryNAPTR = true
    /// `http_listen`: the address of the HTTP listener for `/metrics`,
    /// `/health` and `/ready`; nil (the default): no listener.
    public var httpListen: HTTPListenAddress?
    /// `http_listen_public`: allow `http_listen` on an address other than
    /// loopback (off: such an address is a config error).
    public var httpListenPublic = false
    /// `http_rpc`: JSON-RPC over HTTP (`POST /rpc`) on the `http_listen`
    /// listener: `loopback` (the default: only peers on 127.0.0.0/8 or ::1),
    /// `any` (every peer that reaches the listener), `no` (off).
    public var httpRPC = HTTPRPCAccess.loopback
    /// `log_stderror`: log to standard error (yes, SwiftSER's default) or
    /// to syslog (no). `-E` on the command line forces standard error.
    public var logStderror = true
    /// `log_facility`: the syslog facility (Kamailio's default LOG_DAEMON).
    public var logFacility = SyslogFacility.daemon
    /// `log_name`: the syslog tag (default `swiftser`).
    public var logName = "swiftser"
    /// `log_format`: `text` or `json` (one JSON object per line).
    public var logFormat = LogFormat.text
    /// `syslog_socket`: the syslog daemon's datagram socket.
    public var syslogSocket = "/dev/log"
}

/// `http_rpc`.
public enum HTTPRPCAccess: String, Sendable, Equatable {
    case off, loopback, any
}

/// `log_format`.
public enum LogFormat: String, Sendable, Equatable {
    case text, json
}

/// `log_facility`: syslog facilities by Kamailio's names (`LOG_LOCAL0`),
/// with or without the `LOG_` prefix, in any case.
public enum SyslogFacility: Int, Sendable, Equatable, CaseIterable {
    case kern = 0, user, mail, daemon, auth, syslog, lpr, news, uucp, cron, authpriv, ftp
    case local0 = 16, local1, local2, local3, local4, local5, local6, local7

    /// The facility as syslog's priority expects it (facility × 8).
    public var code: Int { rawValue << 3 }

    public init?(name: String) {
        var n = name.trimmingCharacters(in: CharacterSet(charactersIn: "\" ")).lowercased()
        if n.hasPrefix("log_") { n.removeFirst(4) }
        guard let f = SyslogFacility.allCases.first(where: { "\($0)" == n }) else { return nil }
        self = f
    }
}

/// `http_listen` parsed: "IPv4:port" or "[IPv6]:port" (port 0: any free one).
public struct HTTPListenAddress: Sendable, Equatable {
    public var host: String
    public var port: Int

    public init?(_ text: String) {
        let t = text.trimmingCharacters(in: .whitespaces)
        let hostPart: Substring, portPart: Substring
        if t.hasPrefix("[") {
            guard let close = t.firstIndex(of: "]"), t[t.index(after: close)...].hasPrefix(":") else { return nil }
            hostPart = t[t.index(after: t.startIndex)..<close]
            portPart = t[t.index(close, offsetBy: 2)...]
        } else {
            guard let colon = t.lastIndex(of: ":"), !t[..<colon].contains(":") else { return nil }
            hostPart = t[..<colon]
            portPart = t[t.index(after: colon)...]
        }
        guard !portPart.isEmpty, portPart.allSatisfy(\.isASCII), portPart.allSatisfy(\.isNumber),
              let port = Int(portPart), (0...65535).contains(port) else { return nil }
        let host = String(hostPart)
        var v4 = in_addr(), v6 = in6_addr()
        if t.hasPrefix("[") {
            guard inet_pton(AF_INET6, host, &v6) == 1 else { return nil }
        } else {
            guard inet_pton(AF_INET, host, &v4) == 1 else { return nil }
        }
        self.host = host
        self.port = port
    }

    /// 127.0.0.0/8 or ::1.
    public var isLoopback: Bool {
        var v4 = in_addr(), v6 = in6_addr()
        if inet_pton(AF_INET, host, &v4) == 1 { return host.hasPrefix("127.") }
        guard inet_pton(AF_INET6, host, &v6) == 1 else { return false }
        return withUnsafeBytes(of: &v6) { b in b.prefix(15).allSatisfy { $0 == 0 } && b[15] == 1 }
    }
}

/// A TLS protocol version.
public enum TLSVersion: Int, Sendable, Comparable, CaseIterable, CustomStringConvertible {
    case tls10 = 10, tls11 = 11, tls12 = 12, tls13 = 13
    public static func < (a: TLSVersion, b: TLSVersion) -> Bool { a.rawValue < b.rawValue }
    public var description: String {
        switch self {
        case .tls10: return "TLSv1.0"
        case .tls11: return "TLSv1.1"
        case .tls12: return "TLSv1.2"
        case .tls13: return "TLSv1.3"
        }
    }
}

/// `tls_method`: the range of protocol versions a domain negotiates.
public struct TLSMethod: Sendable, Equatable, CustomStringConvertible {
    /// The spelling from the config (`sslv23`, `tlsv1.2+`, …).
    public var name: String
    public var minimum: TLSVersion
    public var maximum: TLSVersion

    /// `sslv23`: "any version": here TLS 1.2 and 1.3 only (BCP 195).
    public static let sslv23 = TLSMethod(name: "sslv23", minimum: .tls12, maximum: .tls13)

    /// Parses a method name (case-insensitive). Throws a message for
    /// refused or unknown values.
    public static func parse(_ raw: String) -> Result<TLSMethod, TLSMethodError> {
        let v = raw.lowercased()
        switch v {
        case "sslv23", "sslv23_method", "any", "tlsany": return .success(TLSMethod(name: v, minimum: .tls12, maximum: .tls13))
        case "tlsv1", "tlsv1.0": return .success(TLSMethod(name: v, minimum: .tls10, maximum: .tls10))
        case "tlsv1.1": return .success(TLSMethod(name: v, minimum: .tls11, maximum: .tls11))
        case "tlsv1.2": return .success(TLSMethod(name: v, minimum: .tls12, maximum: .tls12))
        case "tlsv1.3": return .success(TLSMethod(name: v, minimum: .tls13, maximum: .tls13))
        case "tlsv1+", "tlsv1.0+": return .success(TLSMethod(name: v, minimum: .tls10, maximum: .tls13))
        case "tlsv1.1+": return .success(TLSMethod(name: v, minimum: .tls11, maximum: .tls13))
        case "tlsv1.2+": return .success(TLSMethod(name: v, minimum: .tls12, maximum: .tls13))
        case "tlsv1.3+": return .success(TLSMethod(name: v, minimum: .tls13, maximum: .tls13))
        case "sslv2", "sslv3", "sslv2_method", "sslv3_method":
            return .failure(.refused("\(raw) is refused: SSL 2.0 and 3.0 are broken (RFC 6176, RFC 7568) and no peer may use them; write tls_method=tlsv1.2+ (or sslv23, which negotiates TLS 1.2 and 1.3)"))
        default:
            return .failure(.unknown("unknown tls_method '\(raw)'; expected sslv23, tlsv1, tlsv1.1, tlsv1.2, tlsv1.3, tlsv1+, tlsv1.1+, tlsv1.2+ or tlsv1.3+"))
        }
    }

    /// True when the range allows a version BCP 195 forbids (TLS 1.0/1.1).
    public var allowsDeprecatedVersions: Bool { minimum < .tls12 }

    public var description: String {
        minimum == maximum ? "\(name) (\(minimum) only)" : "\(name) (\(minimum)–\(maximum))"
    }
}

public enum TLSMethodError: Error, Sendable, Equatable {
    case refused(String)
    case unknown(String)
    public var message: String {
        switch self {
        case .refused(let m), .unknown(let m): return m
        }
    }
}

/// Where a TLS domain applies.
public enum TLSDomainRole: String, Sendable, Equatable {
    /// Accepting connections on a listener.
    case server
    /// Opening connections to a destination.
    case client
}

/// One TLS domain: the settings for a listener (server) or a destination
/// (client), the seed's `tls_domain` and Kamailio's `[server:…]`/`[client:…]`.
public struct TLSDomain: Sendable, Equatable, CustomStringConvertible {
    public var role: TLSDomainRole
    /// IP:port it applies to; nil for the default domain of its role.
    public var address: HostPort?
    /// SNI name: a server domain chosen by the ClientHello's server name
    /// (exact or `*.example.com`); for a client domain, the name sent.
    public var serverName: String?
    public var certificate: String
    public var privateKey: String
    public var privateKeyPassword: String?
    /// File of trusted CA certificates (PEM, one after another).
    public var caList: String?
    /// File of certificate revocation lists (PEM).
    public var crl: String?
    /// OpenSSL cipher string for TLS ≤ 1.2; nil: SwiftSER's default (ECDHE with AEAD only).
    public var ciphers: String?
    /// Key-exchange groups in order of preference (`tls_curves`), canonical
    /// names; nil: the library's default (X25519MLKEM768, X25519, P-256, P-384).
    public var curves: [String]? = nil
    public var method: TLSMethod
    /// Server: ask the client for a certificate. Client: verify the server's.
    public var verify: Bool
    /// Server: refuse a client without a verified certificate (with verify).
    public var requireCertificate: Bool
    public var verifyDepth: Int
    /// Client with verify: check the server's name per RFC 5922.
    public var verifyHostname: Bool
    /// Accept `*.example.com` certificates in RFC 5922 name checks.
    public var allowWildcardCertificates: Bool
    public var location: SourceLocation?

    public var isDefault: Bool { address == nil && serverName == nil }

    /// `server:default`, `server:127.0.0.1:5061`, `server:127.0.0.1:5061 sni=example.com`, …
    public var name: String {
        var s = role.rawValue + ":" + (address?.description ?? "default")
        if let serverName { s += " sni=\(serverName)" }
        return s
    }

    public var description: String { name }
}

/// A host and port, as in `tls_domain[IP:port]`.
public struct HostPort: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: UInt16
    public init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }
    public var description: String { host.utf8.contains(0x3A) ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// All TLS settings.
public struct TLSSettings: Sendable, Equatable {
    /// `disable_tls=1`: no TLS listener, no outbound TLS.
    public var disabled = false
    /// `tls_handshake_timeout` (s).
    public var handshakeTimeout = 10
    /// `tls_max_handshakes`: inbound TLS connections still in the handshake
    /// (a pool of their own; when full, the oldest is closed for a new one).
    public var maxHandshakes = 256
    /// `tls_send_timeout` (s).
    public var sendTimeout = 120
    /// The default server and client domains first, then the others in
    /// config order.
    public var domains: [TLSDomain] = []
    /// Path of a Kamailio `tls.cfg` profile file, when one was loaded.
    public var profileFile: String?
    /// `tls_auto_dev_certificates=yes`: create a development CA and server
    /// certificate at start when the default domain's files are missing.
    public var autoDevelopmentCertificates = false
    /// `tls_crl_stale=fail`: a `tls_crl` whose nextUpdate has passed stops
    /// the start (and refuses peer certificates while it stays stale);
    /// `warn` (the default): a warning at load.
    public var crlStaleFails = false

    public var defaultServer: TLSDomain? { domains.first { $0.role == .server && $0.isDefault } }
    public var defaultClient: TLSDomain? { domains.first { $0.role == .client && $0.isDefault } }
    public func domains(_ role: TLSDomainRole) -> [TLSDomain] { domains.filter { $0.role == role } }
}

/// registrar / usrloc module parameters.
public struct RegistrarSettings: Sendable, Equatable {
    public var defaultExpires = 3600
    public var minExpires = 60
    public var maxExpires = 86_400
    /// `max_contacts`: contacts an AOR may have, and a REGISTER may carry
    /// (0: no limit).
    public var maxContacts = 10
    /// `max_bindings` (SwiftSER's own): bindings held in all, every AOR
    /// together (0: no limit). A REGISTER that would add one beyond it gets
    /// 503 with Retry-After and changes nothing.
    public var maxBindings = 1_000_000
    /// The SQLite file of `usrloc` `db_url` (`sqlite:///abs/path`,
    /// `sqlite://relative/path` or a bare path), made absolute against the
    /// config's folder; the default is `var/location.sqlite` there.
    public var database = "var/location.sqlite"
    /// usrloc `db_mode`: 0 memory only, 1 write-through to SQLite (the only two implemented).
    public var dbMode = 1
}

/// sanity module parameters (sanity_check()).
public struct SanitySettings: Sendable, Equatable {
    /// `default_checks`: the checks sanity_check() runs without arguments,
    /// a sum of check numbers (Kamailio's default 3047).
    public var defaultChecks = 3047
    /// `uri_checks`: the URIs the parse check reads: 1 Request-URI, 2 From, 4 To (7).
    public var uriChecks = 7
    /// `proxy_require`: the Proxy-Require options this proxy supports
    /// (comma-separated; none by default). Any other option gets 420, from
    /// the core before the script runs and from sanity_check().
    public var proxyRequire: [String] = []
    /// `autodrop`: after answering a failed request, stop the script (1,
    /// Kamailio's default) or return false (0).
    public var autodrop = true
    public init() {}
}

/// One htable table.
public struct HTableSpec: Sendable, Equatable {
    public var name: String
    /// `size`: the table has 2^size slots (Kamailio's meaning); SwiftSER
    /// holds at most 2^size × `entriesPerSlot` entries in all. 1 to 16; 4 when not given.
    public var size = 4
    /// `autoexpire`: seconds an entry lives after it was set (0: for ever).
    public var autoexpire = 0
    /// `initval`: what a key not in the table reads as (nil: `$null`).
    public var initval: Int?
    /// `updateexpire`: setting an entry again restarts its expiry (1, the default).
    public var updateExpire = true

    /// Entries per slot SwiftSER allows on average (the cap of a table).
    public static let entriesPerSlot = 64
    /// Entries the table may hold.
    public var capacity: Int { (1 << size) * HTableSpec.entriesPerSlot }

    public init(name: String) { self.name = name }
}

/// permissions module parameters (allow_source_address()).
public struct PermissionsSettings: Sendable, Equatable {
    /// `address_file`: the address table (group, address or range, port,
    /// tag per line); nil: no table, allow_source_address() is false.
    public var addressFile: String?
    /// `max_address_entries` (SwiftSER): lines the table may hold.
    public var maxAddressEntries = 10_000
    public init() {}
}

/// pike module parameters (per-source request rate).
public struct PikeSettings: Sendable, Equatable {
    /// `sampling_time_unit`: seconds of one sampling window (Kamailio's default 2).
    public var samplingTimeUnit = 2
    /// `reqs_density_per_unit`: requests per window above which a source is blocked (30).
    public var reqsDensityPerUnit = 30
    /// `remove_latency`: seconds an idle source stays in the table (120).
    public var removeLatency = 120
    /// `max_entries` (SwiftSER): sources tracked at most.
    public var maxEntries = 100_000
    public init() {}
}

/// auth and auth_db module parameters (digest authentication).
public struct AuthSettings: Sendable, Equatable {
    /// `secret`: the HMAC key of nonces; nil: random at each start.
    public var secret: String?
    /// `nonce_expire`: seconds a nonce is valid (Kamailio's default 300).
    public var nonceExpire = 300
    /// `nonce_auth_max_drift`: seconds a nonce's issue time may lie in the future.
    public var nonceAuthMaxDrift = 3
    /// `auth_checks_register`, `auth_checks_no_dlg`, `auth_checks_in_dlg`:
    /// what nonces are bound to (1 Request-URI, 2 Call-ID, 4 From tag, 8 source IP).
    public var checksRegister = 0
    public var checksNoDialog = 0
    public var checksInDialog = 0
    /// `nc_array_size`: slots of the nonce-count table (replay protection).
    public var ncArraySize = 65_536
    /// `algorithm`: the digest algorithms offered when the challenge names
    /// none, in order (SHA-256 first, then MD5).
    public var algorithms = ["SHA-256", "MD5"]
    /// auth_db `db_url`; nil: the usrloc database (memory when db_mode=0).
    public var database: String?
    /// auth_db `calculate_ha1`: compute HA1 from the plain `password` column.
    public var calculateHA1 = false
    /// auth_db `use_domain`: match the subscriber's domain against the realm.
    /// SwiftSER's default is on (Kamailio's is off).
    public var useDomain = true
    public init() {}
}

/// tm module parameters (milliseconds as in Kamailio).
public struct TransactionSettings: Sendable, Equatable {
    public var t1 = 500
    public var t2 = 4000
    public var t4 = 5000
    /// `fr_timer`: final response timeout for non-INVITE and before a provisional.
    public var finalResponseTimeout = 30_000
    /// `fr_inv_timer`: Timer C, an INVITE branch's wait for a final after a
    /// provisional, restarted by each provisional. RFC 3261 §16.6 step 11
    /// asks for more than three minutes.
    public var inviteFinalResponseTimeout = 181_000
    /// `max_branches`: most branches one request forks to (Kamailio's
    /// default 12; at most 64).
    public var maxBranches = 12
    /// tm `max_transactions`: transactions held at once in all; a new
    /// request beyond it gets 503 with Retry-After (SwiftSER's own
    /// parameter: Kamailio's bound is its shared memory size).
    public var maxTransactions = 400_000
    /// tm `max_transactions_per_ip`: transactions held at once for requests
    /// from one source address (IPv6 by its /64).
    public var maxTransactionsPerIP = 150_000
}

/// rr module parameters.
public struct RecordRouteSettings: Sendable, Equatable {
    /// `enable_double_rr`: two Record-Route values when the legs differ.
    public var doubleRecordRoute = true
    /// `append_fromtag`.
    public var appendFromTag = false
}

/// `dns_server` parsed: "IP", "IP:port", "[IPv6]:port" or a bare IPv6 address.
public struct DNSServerAddress: Sendable, Equatable {
    public var host: String
    public var port: Int

    public init?(_ text: String) {
        var host = text
        var port = 53
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            host = String(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            if !rest.isEmpty {
                guard rest.hasPrefix(":"), let p = Int(rest.dropFirst()) else { return nil }
                port = p
            }
        } else if text.filter({ $0 == ":" }).count == 1, let colon = text.firstIndex(of: ":") {
            host = String(text[..<colon])
            guard let p = Int(text[text.index(after: colon)...]) else { return nil }
            port = p
        }
        guard (1...65535).contains(port), !host.isEmpty,
              host.allSatisfy({ $0.isHexDigit || $0 == "." || $0 == ":" }) else { return nil }
        if !host.utf8.contains(0x3A) {
            let parts = host.split(separator: ".", omittingEmptySubsequences: false)
            guard parts.count == 4, parts.allSatisfy({ Int($0).map { (0...255).contains($0) } ?? false }) else { return nil }
        }
        self.host = host
        self.port = port
    }
}

/// `usrloc` `db_url`: which database a URL names. Only SQLite is
/// implemented: `sqlite://PATH` or a bare path; any other scheme
/// (`mysql://`, `postgres://`, `redis://`, …) is refused.
public enum DatabaseURL {
    public enum ParseError: Error, Sendable, Equatable {
        /// A scheme other than `sqlite` (only the scheme is kept: the rest may hold a password).
        case unsupportedScheme(String)
        /// `sqlite:` not followed by `//`.
        case malformedSQLite
        case emptyPath

        public var message: String {
            switch self {
            case .unsupportedScheme(let s):
                return "usrloc db_url: the '\(s)' database is not supported; SwiftSER keeps registrations in SQLite: write \"sqlite:///var/lib/swiftser/location.sqlite\" (absolute) or \"sqlite://location.sqlite\" (relative to the config's folder)"
            case .malformedSQLite:
                return "usrloc db_url: expected sqlite://PATH (sqlite:///absolute/path or sqlite://relative/path)"
            case .emptyPath:
                return "usrloc db_url names no file; write sqlite://PATH, or set db_mode to 0 to keep registrations in memory"
            }
        }
    }

    /// The file path of a `db_url` value, as written (still relative when it was).
    public static func parse(_ text: String) -> Result<String, ParseError> {
        let url = text.trimmingCharacters(in: .whitespaces)
        if let colon = url.firstIndex(of: ":") {
            let scheme = url[..<colon]
            let isScheme = scheme.first.map { $0.isASCII && $0.isLetter } ?? false
                && scheme.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "+" || $0 == "-" || $0 == ".") }
            if isScheme {
                guard scheme.lowercased() == "sqlite" else { return .failure(.unsupportedScheme(scheme.lowercased())) }
                let rest = url[url.index(after: colon)...]
                guard rest.hasPrefix("//") else { return .failure(.malformedSQLite) }
                let file = String(rest.dropFirst(2))
                return file.isEmpty ? .failure(.emptyPath) : .success(file)
            }
        }
        return url.isEmpty ? .failure(.emptyPath) : .success(url)
    }
}

extension Config {
    /// File descriptors the connection limits can hold open: the inbound
    /// pools of the stream protocols that have a listener (TLS with its
    /// handshake pool), the outbound pool, the listeners, and 256 for DNS,
    /// the control socket, files and the database.
    public var descriptorsNeeded: Int {
        let tcp = listens.contains { $0.proto == .tcp } ? core.tcpMaxConnections : 0
        let tls = listens.contains { $0.proto == .tls } ? self.tls.maxConnectionsWithHandshakes(core) : 0
        return tcp + tls + core.tcpMaxOutboundConnections + listens.count + core.dnsMaxPending + 256
    }
}

extension TLSSettings {
    func maxConnectionsWithHandshakes(_ core: CoreSettings) -> Int { core.tlsMaxConnections + maxHandshakes }
}
