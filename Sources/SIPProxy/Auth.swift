import Foundation
import SIPConfig
import SIPCore

/// Digest authentication state shared by every thread: the nonce key and
/// the nonce-count table. The clock is injectable for tests.
final class DigestAuthenticator: @unchecked Sendable {  // immutable after init except the table, which locks itself
    let settings: AuthSettings
    let codec: DigestNonceCodec
    let counts: NonceCountTable
    let algorithms: [DigestAlgorithm]
    /// Seconds since 1970 (tests replace it).
    var clock: @Sendable () -> UInt32 = { UInt32(clamping: Int64(Date().timeIntervalSince1970)) }

    init(settings: AuthSettings) {
        self.settings = settings
        var secret: [UInt8]
        if let s = settings.secret {
            secret = Array(s.utf8)
        } else {
            var rng = SystemRandomNumberGenerator()
            secret = (0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) }
        }
        codec = DigestNonceCodec(secret: secret)
        counts = NonceCountTable(size: settings.ncArraySize)
        algorithms = settings.algorithms.compactMap(DigestAlgorithm.init(token:))
        secret = []
    }
}

/// Return codes of the authorize functions (Kamailio's auth API).
enum AuthResult: Int {
    case ok = 1
    case drop = 0
    case error = -1
    case invalidPassword = -2
    case userUnknown = -3
    case staleNonce = -4
    case noCredentials = -5
    case nonceReused = -6
    case userMismatch = -8
}

extension ProxyCore {
    enum AuthKind {
        /// 401, WWW-Authenticate, Authorization (registrars, UAS).
        case www
        /// 407, Proxy-Authenticate, Proxy-Authorization (proxies).
        case proxy

        var credentialsHeader: SIPHeaderName { self == .www ? .authorization : .proxyAuthorization }
        var challengeHeader: String { self == .www ? "WWW-Authenticate" : "Proxy-Authenticate" }
        var code: Int { self == .www ? 401 : 407 }
        var reason: String { self == .www ? "Unauthorized" : "Proxy Authentication Required" }
    }

    /// The realm to use: the given text, or when empty the To domain
    /// (www, as for REGISTER) or the From domain (proxy).
    func authRealm(_ given: String, _ kind: AuthKind, _ ctx: MessageContext) -> String {
        if !given.isEmpty { return given }
        let m = ctx.received.message
        let na = kind == .www ? (ctx.checked?.to ?? ((try? m.to()) ?? nil)) : ((try? m.from()) ?? nil)
        return na?.uri.host ?? ""
    }

    /// What nonces for this request are bound to (auth_checks_*).
    func nonceBinding(_ ctx: MessageContext) -> DigestNonceCodec.Binding {
        let m = ctx.received.message
        let s = scriptOf(ctx).auth
        let checks: Int
        if m.method == .register {
            checks = s.checksRegister
        } else if ctx.toHasTag ?? (((try? m.to()) ?? nil)?.tag != nil) {
            checks = s.checksInDialog
        } else {
            checks = s.checksNoDialog
        }
        var b = DigestNonceCodec.Binding(checks: UInt8(clamping: checks))
        if checks & 1 != 0 { b.uri = m.requestURIString ?? "" }
        if checks & 2 != 0 { b.callID = m.callID ?? "" }
        if checks & 4 != 0 { b.fromTag = ctx.checked?.fromTag ?? (((try? m.from()) ?? nil)?.tag ?? "") }
        if checks & 8 != 0 { b.sourceIP = ctx.received.sourceIP }
        return b
    }

    /// www_challenge / proxy_challenge / auth_challenge(realm, flags [, algorithms]):
    /// replies 401/407 with one challenge per algorithm (same nonce).
    /// Flags: 1 qop=auth, 2 qop=auth-int, 4 no 500 on failure, 16 stale=true.
    func authChallenge(_ ctx: MessageContext, _ kind: AuthKind, realm given: String, flags: Int, algorithms list: String?) -> Int {
        let m = ctx.received.message
        guard m.isRequest, m.method != .ack, m.method != .cancel else { return -1 }
        let realm = authRealm(given, kind, ctx)
        var algorithms = auth.algorithms
        if let list, !list.isEmpty {
            let named = list.split(separator: ",").compactMap { DigestAlgorithm(token: $0.trimmingCharacters(in: .whitespaces)) }
            if !named.isEmpty { algorithms = named }
        }
        var qop: [DigestQOP] = []
        if flags & 1 != 0 { qop.append(.auth) }
        if flags & 2 != 0 { qop.append(.authInt) }
        let stale = flags & 16 != 0 || ctx.authStale
        let id = auth.counts.allocate()
        let nonce = auth.codec.make(realm: realm, issued: auth.clock(), id: id, qopRequired: !qop.isEmpty, binding: nonceBinding(ctx))
        let headers = algorithms.map { (kind.challengeHeader, DigestChallenge.value(realm: realm, nonce: nonce, algorithm: $0, qop: qop, stale: stale)) }
        ctx.replied = true
        metrics.authChallenged()
        sendReply(ctx, code: kind.code, reason: kind.reason, extraHeaders: headers)
        return 1
    }

    /// Counts the outcome of www_authorize / proxy_authorize / auth_check
    /// (`swiftser_auth_results_total`; no credentials is not counted).
    func counted(_ raw: Int) -> Int {
        if let r = AuthResult(rawValue: raw), r != .noCredentials { metrics.authenticated(r) }
        return raw
    }

    /// www_authorize / proxy_authorize(realm, table) and auth_check:
    /// verifies the credentials for `realm`. Kamailio's return codes
    /// (AuthResult). Malformed credentials for the realm get a 400 and stop
    /// the script (0).
    func authAuthorize(_ ctx: MessageContext, _ kind: AuthKind, realm given: String, table: String, method: String? = nil) -> AuthResult {
        let m = ctx.received.message
        guard m.isRequest else { return .error }
        ctx.authStale = false
        let realm = authRealm(given, kind, ctx)
        var found: DigestCredentials? = nil
        for f in m.headers(kind.credentialsHeader) {
            guard DigestCredentials.realm(of: f.value) == realm else { continue }
            switch DigestCredentials.parse(f.value) {
            case .success(let c):
                found = c
            case .failure(.notDigest), .failure(.unsupportedAlgorithm):
                continue
            case .failure(.malformed(let why)):
                logger.info("bad \(kind.credentialsHeader.canonicalName) from \(ctx.received.sourceIP):\(ctx.received.sourcePort): \(why)")
                ctx.lastError = (400, "Bad Credentials")
                reply(ctx, code: 400, reason: "Bad Credentials")
                return .drop
            }
            if found != nil { break }
        }
        guard let c = found else { return .noCredentials }
        let user: SubscriberStore.Subscriber?
        do {
            user = try subscribers.find(table: table, username: c.user, domain: scriptOf(ctx).auth.useDomain ? realm : nil)
        } catch {
            logger.error("\(error)")
            return .error
        }
        guard let user else {
            logger.info("authentication of unknown user \(ProxyCore.printable(c.username)) for realm \(ProxyCore.printable(realm)) from \(ctx.received.sourceIP)")
            return .userUnknown
        }
        let ha1: String
        if scriptOf(ctx).auth.calculateHA1 {
            ha1 = DigestHash.ha1(c.algorithm, username: c.username, realm: realm, password: user.password)
        } else if c.algorithm == .md5 {
            ha1 = c.domain != nil ? user.ha1b : user.ha1
        } else {
            ha1 = c.domain != nil ? "" : user.ha1SHA256
        }
        guard !ha1.isEmpty else {
            logger.info("no \(c.algorithm.rawValue) HA1 stored for \(ProxyCore.printable(c.username)); set the password again with swiftser user passwd")
            return .invalidPassword
        }
        let expected = DigestHash.response(c, ha1: ha1, method: method.flatMap { $0.isEmpty ? nil : $0 } ?? methodName(m), body: m.body)
        guard DigestHash.constantTimeEqual(expected, c.response) else {
            logger.info("wrong password for \(ProxyCore.printable(c.username))@\(ProxyCore.printable(realm)) from \(ctx.received.sourceIP)")
            return .invalidPassword
        }
        // The digest is right: an invalid or expired nonce is stale (RFC 7616 §3.3).
        let s = scriptOf(ctx).auth
        switch auth.codec.check(c.nonce, realm: realm, binding: nonceBinding(ctx), now: auth.clock(),
                                lifetime: UInt32(clamping: s.nonceExpire), maxDrift: UInt32(clamping: s.nonceAuthMaxDrift)) {
        case .invalid, .stale:
            ctx.authStale = true
            return .staleNonce
        case .valid(_, let id, let qopRequired):
            if qopRequired && c.qop == nil { return .error }
            switch auth.counts.use(id: id, nc: c.qop == nil ? nil : c.nonceCount) {
            case .evicted:
                ctx.authStale = true
                return .staleNonce
            case .replayed:
                return .nonceReused
            case .accepted:
                break
            }
        }
        ctx.authCredentials = c
        ctx.authHeader = kind.credentialsHeader
        return .ok
    }

    /// auth_check(realm, table, flags): authorize (www for REGISTER, proxy
    /// otherwise), then with flag 1 the identity checks — REGISTER: From
    /// and To user; PUBLISH: From, To and Request-URI user; others: From
    /// user must be the authentication user, and their domains the realm.
    /// Flag 2 (with 1) skips them for INVITE, BYE, PRACK, UPDATE, MESSAGE.
    func authCheck(_ ctx: MessageContext, realm given: String, table: String, flags: Int) -> Int {
        let m = ctx.received.message
        let kind: AuthKind = m.method == .register ? .www : .proxy
        let r = authAuthorize(ctx, kind, realm: given, table: table)
        guard r == .ok, let c = ctx.authCredentials else { return r.rawValue }
        guard flags & 1 != 0 else { return 1 }
        let method = methodName(m)
        if flags & 2 != 0, ["INVITE", "BYE", "PRACK", "UPDATE", "MESSAGE"].contains(method) { return 1 }
        let realm = authRealm(given, kind, ctx)
        var uris: [SIPURI] = []
        guard let from = (try? m.from()) ?? nil else { return AuthResult.userMismatch.rawValue }
        uris.append(from.uri)
        if method == "REGISTER" || method == "PUBLISH" {
            guard let to = ctx.checked?.to ?? ((try? m.to()) ?? nil) else { return AuthResult.userMismatch.rawValue }
            uris.append(to.uri)
        }
        if method == "PUBLISH" {
            guard let s = m.requestURIString, let ru = try? SIPURI.parse(s) else { return AuthResult.userMismatch.rawValue }
            uris.append(ru)
        }
        for u in uris {
            let user = u.user.map { String(decoding: SIPURI.unescaped($0), as: UTF8.self) } ?? ""
            guard user == c.user, u.hostName == realm.lowercased() else {
                logger.info("authenticated user \(ProxyCore.printable(c.user))@\(ProxyCore.printable(realm)) is not \(ProxyCore.printable(u.description)) (auth_check)")
                return AuthResult.userMismatch.rawValue
            }
        }
        return 1
    }

    /// consume_credentials(): removes the credentials this proxy used, so
    /// they are not passed on.
    func consumeCredentials(_ ctx: MessageContext) -> Int {
        guard let c = ctx.authCredentials, let name = ctx.authHeader else { return -1 }
        let keep = ctx.message.headers(name).filter { DigestCredentials.realm(of: $0.value) != c.realm }
        _ = ctx.message.removeHeaders(name)
        for f in keep { ctx.message.appendHeader(f) }
        return 1
    }

    /// has_credentials(realm): an Authorization or Proxy-Authorization
    /// header for the realm is present.
    func hasCredentials(_ ctx: MessageContext, realm: String) -> Int {
        let m = ctx.received.message
        for name in [SIPHeaderName.authorization, .proxyAuthorization] {
            for f in m.headers(name) where DigestCredentials.realm(of: f.value) == realm { return 1 }
        }
        return -1
    }

    /// The credentials `$au`, `$ar`, … read: those accepted, else the
    /// first Authorization or Proxy-Authorization that parses.
    func credentialsForPV(_ ctx: MessageContext) -> DigestCredentials? {
        if let c = ctx.authCredentials { return c }
        let m = ctx.received.message
        for name in [SIPHeaderName.authorization, .proxyAuthorization] {
            for f in m.headers(name) { if case .success(let c) = DigestCredentials.parse(f.value) { return c } }
        }
        return nil
    }

    /// Network text for a log line: its first 256 code points, escaped as
    /// every log line escapes network text (`LogText`).
    static func printable(_ s: String) -> String {
        var head = String.UnicodeScalarView()
        head.append(contentsOf: s.unicodeScalars.prefix(256))
        return LogText.escaped(String(head))
    }
}
