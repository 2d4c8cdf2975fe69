import Foundation
import NIOSSL
import SIPConfig
import X509

/// One TLS domain made ready: its settings, the certificate it presents,
/// and the swift-nio-ssl context built from them. The seed's per-domain
/// `SSL_CTX`.
public final class TLSDomainContext: Sendable {
    public let domain: TLSDomain
    public let context: NIOSSLContext
    public let summary: CertificateSummary
    public let cipherList: TLSCipherList
    /// Subjects of the trusted CAs (empty: the system's trust store).
    public let trustedCASubjects: [String]
    /// Certificates `tls_crl` revokes; checked after each handshake.
    public let revocations: RevocationList?
    /// `tls_crl_stale=fail`.
    public let crlStaleFails: Bool

    init(domain: TLSDomain, context: NIOSSLContext, summary: CertificateSummary, cipherList: TLSCipherList, trustedCASubjects: [String], revocations: RevocationList?,
         crlStaleFails: Bool = false) {
        self.crlStaleFails = crlStaleFails
        self.domain = domain
        self.context = context
        self.summary = summary
        self.cipherList = cipherList
        self.trustedCASubjects = trustedCASubjects
        self.revocations = revocations
    }

    /// True when `tls_crl_stale=fail` and the domain's CRL is past its
    /// nextUpdate now: a peer certificate cannot be checked against it and
    /// is refused (fail closed) until a fresh CRL is loaded.
    public func refusesForStaleCRL(now: Date = Date()) -> Bool {
        crlStaleFails && (revocations?.isStale(now: now) ?? false)
    }

    /// True when the peer's certificate (DER) is listed in `tls_crl`.
    public func isRevoked(peerDER: [UInt8]) -> Bool {
        guard let revocations, let cert = try? Certificate(derEncoded: peerDER) else { return false }
        return revocations.isRevoked(cert)
    }

    /// Enforces `tls_verify_depth` on a verified chain: BoringSSL calls the
    /// returned closure once per certificate of the chain it built, trust
    /// anchor first; more than depth + 2 calls (leaf, `depth` intermediate
    /// CAs, anchor — OpenSSL's meaning of the depth) fails the handshake and
    /// calls `exceeded`. One closure per connection; nil when this domain
    /// does not verify peers.
    public func depthCheck(exceeded: @escaping (Int) -> Void) -> NIOSSLVerificationCallback? {
        guard domain.verify else { return nil }
        let depth = domain.verifyDepth
        var seen = 0
        return { result, _ in
            seen += 1
            if seen > depth + 2 {
                if seen == depth + 3 { exceeded(depth) }
                return .failed
            }
            return result
        }
    }

    /// The verification mode in the seed's words.
    public var verificationDescription: String {
        switch (domain.role, domain.verify, domain.requireCertificate) {
        case (.server, false, _): return "no client certificate requested (tls_verify=0)"
        case (.server, true, false): return "client certificate requested, verified if given (tls_verify=1, tls_require_certificate=0)"
        case (.server, true, true): return "verified client certificate required (tls_verify=1, tls_require_certificate=1)"
        case (.client, false, _): return "server certificate not verified (tls_verify=0)"
        case (.client, true, _):
            return "server certificate verified" + (domain.verifyHostname ? " and its name checked per RFC 5922" : " (name not checked)")
        }
    }
}

/// All errors found while building the TLS domains.
public struct TLSSetupErrors: Error, Sendable, CustomStringConvertible {
    public var errors: [String]
    public var description: String { errors.joined(separator: "\n") }
}

/// The TLS domains of a config, ready to use, and the rules that pick one:
/// the seed's `tls_domains` list and `tls_find_domain`, extended with SNI
/// and client domains. Immutable: a reload builds a new table.
public final class TLSDomainTable: Sendable {
    public let servers: [TLSDomainContext]
    public let clients: [TLSDomainContext]
    /// The domains used when no other fits (every table has both).
    public let defaultServer: TLSDomainContext
    public let defaultClient: TLSDomainContext
    public let warnings: [String]
    public let handshakeTimeout: TimeInterval
    public let sendTimeout: TimeInterval

    init(servers: [TLSDomainContext], clients: [TLSDomainContext], defaultServer: TLSDomainContext, defaultClient: TLSDomainContext,
         warnings: [String], handshakeTimeout: TimeInterval, sendTimeout: TimeInterval) {
        self.servers = servers
        self.clients = clients
        self.defaultServer = defaultServer
        self.defaultClient = defaultClient
        self.warnings = warnings
        self.handshakeTimeout = handshakeTimeout
        self.sendTimeout = sendTimeout
    }

    /// True when some server domain is chosen by SNI.
    public var usesSNI: Bool { servers.contains { $0.domain.serverName != nil } }

    /// Reads every file, checks it, and builds a context per domain.
    /// Collects every problem before failing.
    public static func build(_ settings: TLSSettings, now: Date = Date()) throws(TLSSetupErrors) -> TLSDomainTable {
        var errors: [String] = []
        var warnings: [String] = []
        var servers: [TLSDomainContext] = []
        var clients: [TLSDomainContext] = []
        for d in settings.domains {
            do {
                let ctx = try makeContext(d, now: now, warnings: &warnings, crlStaleFails: settings.crlStaleFails)
                if d.role == .server { servers.append(ctx) } else { clients.append(ctx) }
            } catch {
                errors.append(String(describing: error))
            }
        }
        let defaultServer = servers.first { $0.domain.isDefault }
        let defaultClient = clients.first { $0.domain.isDefault }
        if errors.isEmpty && (defaultServer == nil || defaultClient == nil) {
            errors.append("no default TLS \(defaultServer == nil ? "server" : "client") domain (one without an address and without tls_server_name)")
        }
        guard errors.isEmpty, let defaultServer, let defaultClient else { throw TLSSetupErrors(errors: errors) }
        return TLSDomainTable(servers: servers, clients: clients, defaultServer: defaultServer, defaultClient: defaultClient, warnings: warnings,
                              handshakeTimeout: TimeInterval(settings.handshakeTimeout), sendTimeout: TimeInterval(settings.sendTimeout))
    }

    static func nioVersion(_ v: SIPConfig.TLSVersion) -> NIOSSL.TLSVersion {
        switch v {
        case .tls10: return .tlsv1
        case .tls11: return .tlsv11
        case .tls12: return .tlsv12
        case .tls13: return .tlsv13
        }
    }

    /// `tls_curves` names (canonical, checked by the config loader) → the library's groups.
    static func curve(_ name: String) -> NIOTLSCurve? {
        switch name {
        case "X25519MLKEM768": return .x25519_MLKEM768
        case "X25519": return .x25519
        case "P-256": return .secp256r1
        case "P-384": return .secp384r1
        case "P-521": return .secp521r1
        default: return nil
        }
    }

    static func makeContext(_ d: TLSDomain, now: Date, warnings: inout [String], crlStaleFails: Bool = false) throws -> TLSDomainContext {
        let identity = try CertificateFiles.loadIdentity(d, now: now)
        warnings.append(contentsOf: identity.warnings)
        let ciphers: TLSCipherList
        if let s = d.ciphers {
            switch TLSCipherList.parse(s) {
            case .success(let c):
                ciphers = c
                if !c.ignored.isEmpty {
                    warnings.append("TLS domain \(d.name): tls_ciphers_list names \(c.ignored.joined(separator: ", ")), which this TLS library does not offer; ignored")
                }
                if !c.isModernOnly {
                    warnings.append("TLS domain \(d.name): tls_ciphers_list enables suites without ECDHE or without AEAD (\(c.selected.filter { !$0.isModern }.map(\.openSSLName).joined(separator: ", ")))")
                }
            case .failure(let e):
                throw TLSFileError(parameter: "tls_ciphers_list", path: s, reason: e.description, domain: d.name)
            }
        } else {
            ciphers = .secureDefault
        }
        var config: TLSConfiguration
        if d.role == .server {
            config = .makeServerConfiguration(certificateChain: identity.chain.map { .certificate($0) }, privateKey: .privateKey(identity.key))
            if d.verify {
                config.certificateVerification = d.requireCertificate ? .noHostnameVerification : .optionalVerification
                config.sendCANameList = true
            } else {
                config.certificateVerification = .none
            }
        } else {
            config = .makeClientConfiguration()
            config.certificateChain = identity.chain.map { .certificate($0) }
            config.privateKey = .privateKey(identity.key)
            // The RFC 5922 name check runs after the handshake (see OutboundTLSVerifier);
            // the library checks the chain only.
            config.certificateVerification = d.verify ? .noHostnameVerification : .none
        }
        config.minimumTLSVersion = nioVersion(d.method.minimum)
        config.maximumTLSVersion = nioVersion(d.method.maximum)
        config.cipherSuiteValues = ciphers.nioCiphers
        config.renegotiationSupport = .none
        if let names = d.curves {
            config.curves = names.compactMap(Self.curve)
        }
        var caSubjects: [String] = []
        if let ca = d.caList {
            let list = try CertificateFiles.loadCAList(ca, domain: d.name, now: now)
            warnings.append(contentsOf: list.warnings)
            config.trustRoots = .certificates(list.certificates)
            caSubjects = list.parsed.map { $0.subject.description }
        } else {
            config.trustRoots = .default
            // A client domain checking servers against the system's trust
            // store is the usual thing; a server domain accepting any
            // client certificate a public CA signed is worth a word.
            if d.verify && d.role == .server {
                warnings.append("TLS domain \(d.name) verifies peers but has no tls_ca_list: the system's trust store is used")
            }
        }
        let revocations = try d.crl.map { path throws(TLSFileError) in try RevocationList.load(path, domain: d.name) }
        if let crl = d.crl, let list = revocations, list.isStale(now: now), let next = list.nextUpdate {
            let why = "stale: its nextUpdate (\(next)) has passed, so certificates revoked since are not in it; fetch a fresh CRL from its issuer"
            if crlStaleFails { throw TLSFileError(parameter: "tls_crl", path: crl, reason: why + " (tls_crl_stale=fail)", domain: d.name) }
            warnings.append("TLS domain \(d.name): tls_crl '\(crl)' is \(why); set tls_crl_stale=fail to refuse to start with a stale CRL")
        }
        let context = try NIOSSLContext(configuration: config)
        return TLSDomainContext(domain: d, context: context, summary: identity.summary, cipherList: ciphers, trustedCASubjects: caSubjects, revocations: revocations,
                                crlStaleFails: crlStaleFails)
    }

    // MARK: Picking a domain

    static func sameHost(_ a: String, _ b: String) -> Bool {
        a.lowercased() == b.lowercased()
    }

    /// The server domain for a connection accepted on `local`, given the
    /// ClientHello's SNI name: a domain for that address with a matching
    /// name, else an address-less SNI domain with a matching name, else
    /// the domain for that address, else the default (the seed's
    /// `tls_find_domain`).
    public func server(local: HostPort?, serverName: String?) -> TLSDomainContext {
        if let sni = serverName?.lowercased() {
            let named = servers.filter { d in d.domain.serverName.map { PeerIdentity.nameMatches($0.lowercased(), sni, allowWildcards: true) } ?? false }
            if let local, let d = named.first(where: { $0.domain.address.map { TLSDomainTable.sameHost($0.host, local.host) && $0.port == local.port } ?? false }) {
                return d
            }
            if let d = named.first(where: { $0.domain.address == nil }) { return d }
        }
        if let local, let d = servers.first(where: { $0.domain.serverName == nil && ($0.domain.address.map { TLSDomainTable.sameHost($0.host, local.host) && $0.port == local.port } ?? false) }) {
            return d
        }
        return defaultServer
    }

    /// The client domain for a connection to `remote`: the one for that
    /// IP:port, else the default client domain.
    public func client(remote: HostPort) -> TLSDomainContext {
        clients.first { $0.domain.address.map { TLSDomainTable.sameHost($0.host, remote.host) && $0.port == remote.port } ?? false }
            ?? defaultClient
    }
}
