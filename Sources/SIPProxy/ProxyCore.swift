import Atomics
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import SIPConfig
import SIPCore
import SIPTLS
import SIPTransport
import X509

/// The proxy: receives every message from the transport, checks it, runs
/// the route script on requests, routes responses back, and carries out
/// what the script asks (replies, stateless and stateful forwarding,
/// record-routing, registrar).
public final class ProxyCore: SIPTransportDelegate, @unchecked Sendable { // immutable after init; shared state lives in types with their own locks
    public let config: Config
    public let transport: SIPTransport
    let logger: Logger
    /// The route script in use; `reloadScript` swaps it. Read once per
    /// message: what a message (and its transaction) started with runs to
    /// the end, whatever is swapped in meanwhile.
    private let scriptRef: ManagedAtomic<CompiledScript>
    var script: CompiledScript { scriptRef.load(ordering: .acquiring) }
    /// The script a message runs (its module parameters with it): the one
    /// it started with, else the current one.
    func scriptOf(_ ctx: MessageContext) -> CompiledScript { ctx.script ?? script }
    /// Set once by `beginDrain()`.
    private let draining = ManagedAtomic<Bool>(false)
    /// REGISTERs when the location store writes through to SQLite run
    /// here, one at a time and in order, so that a slow or locked disk
    /// holds this queue and not an event loop (and with it every other
    /// message on its connections).
    private let registrarQueue = DispatchQueue(label: "swiftser.registrar")
    /// REGISTERs waiting for or running on `registrarQueue`.
    private let registrarBacklog = ManagedAtomic<Int>(0)
    /// At most this many wait; more get 503 with Retry-After.
    static let registrarBacklogLimit = 4096
    /// Serialises script reloads (the control socket and SIGUSR1).
    private let reloadLock = NIOLock()
    /// The preprocessor definitions the config was loaded with.
    let defines: [String: String]
    let location: LocationService
    /// Made lazily because it needs `self`, but touched at the end of
    /// `init`, before any other thread can see the core.
    lazy var transactions = TransactionLayer(core: self)
    /// Hosts (lower case) and host:port strings that `myself` matches.
    private let myselfHosts: Set<String>
    /// Host (lower-cased) and port pairs of ours, for `myself`.
    private let myselfHostPorts: Set<HostPort>
    /// The Date header value of the current second (REGISTER replies).
    let dateCache = NIOLockedValueBox<(Int64, String)>((0, ""))
    /// Aliases given without a port: they match any port.
    private let portlessAliases: Set<String>
    /// `server_header` split once into name and value.
    let serverHeaderField: (String, String)?
    /// What a reply made here adds when the caller adds nothing and no
    /// Allow or Warning is due: the `server_header`, made once.
    private let plainReplyHeaders: [(String, String)]
    let resolver: Resolver
    /// Digest authentication: nonce key, nonce counts (auth module).
    let auth: DigestAuthenticator
    /// The subscriber table (auth_db module).
    public let subscribers: SubscriberStore
    /// Per-source request rates (pike module).
    let pike: PikeTable
    /// The address table of allow_source_address() (permissions module).
    let permissions: AddressPermissions
    /// The htable tables ($sht), kept across script reloads.
    let htables: HTables
    /// Counters and gauges (`/metrics`), and the readiness a drain clears.
    public let metrics = ProxyMetrics()

    /// `subscribers`: the credentials store; nil opens the one the config
    /// names (auth_db db_url, else the location store's file), or an empty
    /// in-memory one if that cannot be opened (logged).
    /// `defines`: the `-A` definitions the config was loaded with, used
    /// again when the script is reloaded.
    public init(config: Config, transport: SIPTransport, location: LocationService, logger: Logger, subscribers: SubscriberStore? = nil,
                defines: [String: String] = [:]) {
        self.config = config
        self.defines = defines
        self.transport = transport
        self.logger = logger
        self.location = location
        self.auth = DigestAuthenticator(settings: config.auth)
        let p = config.pike
        self.pike = PikeTable(windowMs: UInt64(p.samplingTimeUnit) * 1000, density: p.reqsDensityPerUnit,
                              removeLatencyMs: UInt64(p.removeLatency) * 1000, capacity: p.maxEntries)
        self.htables = HTables(config.htables)
        let permissions = AddressPermissions(file: config.permissions.addressFile, maxEntries: config.permissions.maxAddressEntries)
        self.permissions = permissions
        if case .failure(let why) = permissions.reload() {
            logger.error("\(why); allow_source_address() matches nothing until permissions.addressReload succeeds")
        }
        if let subscribers {
            self.subscribers = subscribers
        } else {
            do {
                self.subscribers = try SubscriberStore(path: config.auth.database.flatMap { $0.isEmpty ? nil : $0 } ?? location.path)
            } catch {
                logger.error("\(error); authentication will find no users")
                self.subscribers = try! SubscriberStore(path: nil)  // an in-memory database opens unless memory is exhausted
            }
        }
        self.scriptRef = ManagedAtomic(CompiledScript(config))
        var supported = Set(config.listens.map(\.proto))
        if config.tls.disabled { supported.remove(.tls) }
        self.resolver = Resolver(hostsFile: config.core.dnsHostsFile, srvLookup: config.core.dnsSRVLookup, naptrLookup: config.core.dnsTryNAPTR,
                                 supported: supported, transport: transport, logger: logger)
        var hosts: Set<String> = []
        var hostPorts: Set<HostPort> = []
        var portless: Set<String> = []
        for l in transport.listeners {
            for h in [l.host, l.advertisedHost].compactMap({ $0 }) {
                hosts.insert(h.lowercased())
                hostPorts.insert(HostPort(host: h.lowercased(), port: l.advertisedPort ?? l.port))
                hostPorts.insert(HostPort(host: h.lowercased(), port: l.port))
            }
        }
        for a in config.aliases {
            if let hp = ProxyCore.splitHostPort(a) {
                hosts.insert(hp.0.lowercased())
                if let p = hp.1 { hostPorts.insert(HostPort(host: hp.0.lowercased(), port: p)) } else { portless.insert(hp.0.lowercased()) }
            }
        }
        let server = config.core.serverHeader
        self.serverHeaderField = server.firstIndex(of: ":").map {
            (String(server[..<$0]), server[server.index(after: $0)...].trimmingCharacters(in: .whitespaces))
        }
        self.plainReplyHeaders = serverHeaderField.map { [$0] } ?? []
        self.myselfHosts = hosts
        self.myselfHostPorts = hostPorts
        self.portlessAliases = portless
        _ = transactions
    }

    static func splitHostPort(_ s: String) -> (String, UInt16?)? {
        if s.hasPrefix("[") {
            guard let close = s.firstIndex(of: "]") else { return nil }
            let host = String(s[s.index(after: s.startIndex)..<close])
            let rest = s[s.index(after: close)...]
            return (host, rest.hasPrefix(":") ? UInt16(rest.dropFirst()) : nil)
        }
        let parts = s.split(separator: ":")
        if parts.count == 2 { return (String(parts[0]), UInt16(parts[1])) }
        return (s, nil)
    }

    // MARK: myself

    /// True when host (and port, if given) is one of ours (`myself`).
    func isMyself(host rawHost: String, port: UInt16?) -> Bool {
        var host = rawHost.lowercased()
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard myselfHosts.contains(host) else { return false }
        guard let port else { return true }
        // Aliases given without a port match any port, as in Kamailio.
        if portlessAliases.contains(host) { return true }
        return myselfHostPorts.contains(HostPort(host: host, port: port))
    }

    func isMyself(uri: SIPURI) -> Bool {
        guard uri.isSIP else { return false }
        // No port: the scheme's default port must be one of ours (as Kamailio's check_self).
        return isMyself(host: uri.host, port: uri.port ?? (uri.scheme == .sips || uri.transport == "tls" ? 5061 : 5060))
    }

    // MARK: Receiving

    public func transport(_ transport: SIPTransport, received r: ReceivedMessage) {
        // Lines logged while this message is handled carry its Call-ID,
        // CSeq, source and transport; only at levels that log per-message
        // lines (info, debug), so at warning the path does nothing more.
        let tagged = logger.logLevel <= .info
        if tagged { MessageLogContext.begin(r) }
        defer { if tagged { MessageLogContext.end() } }
        if r.message.isRequest {
            metrics.receivedRequest(r.message.method)
            if r.message.method == .register, location.path != nil {
                handOffRegister(r)
                return
            }
            handleRequest(r)
        } else {
            metrics.receivedReply(r.message.statusCode ?? 0)
            handleResponse(r)
        }
    }

    /// Runs a REGISTER on `registrarQueue` (the location store writes to
    /// SQLite); beyond `registrarBacklogLimit` waiting it is answered 503
    /// with Retry-After at once.
    private func handOffRegister(_ r: ReceivedMessage) {
        if registrarBacklog.loadThenWrappingIncrement(ordering: .relaxed) >= Self.registrarBacklogLimit {
            registrarBacklog.wrappingDecrement(ordering: .relaxed)
            metrics.droppedRequest(.registrarBacklog)
            sendReply(to: r, request: r.message, code: 503, reason: "Service Unavailable", extraHeaders: [("Retry-After", "5")])
            return
        }
        registrarQueue.async {
            defer { self.registrarBacklog.wrappingDecrement(ordering: .relaxed) }
            let tagged = self.logger.logLevel <= .info
            if tagged { MessageLogContext.begin(r) }
            defer { if tagged { MessageLogContext.end() } }
            self.handleRequest(r)
        }
    }

    /// An outbound connection that fails (for example a TLS 1.3 server that
    /// refuses our certificate after the handshake) fails the branches
    /// waiting on it at once, instead of after fr_timer.
    public func transport(_ transport: SIPTransport, closed connection: SIPConnection, reason: CloseReason) {
        guard connection.outbound else { return }
        switch reason {
        case .idle, .shuttingDown: return
        default: transactions.connectionFailed(connection, reason: reason)
        }
    }

    func handleRequest(_ r: ReceivedMessage) {
        let m = r.message
        let checked: SIPMessage.Checked
        do {
            checked = try m.validate()
        } catch {
            logger.info("bad request from \(r.proto.rawValue):\(r.sourceIP):\(r.sourcePort): \(error)")
            metrics.droppedRequest(.malformed)
            if m.method != .ack {
                var code = error.statusCode
                var reason = error.reasonPhrase
                if error.kind == .methodMismatch, case .other? = m.method { (code, reason) = (501, "Not Implemented") }
                sendReply(to: r, request: m, code: code, reason: reason)
            }
            return
        }
        // RFC 3261 §16.3 step 5: Proxy-Require with options we do not support
        // (modparam sanity/proxy_require lists those we do).
        if m.method != .ack && m.method != .cancel, m.headerValue(.proxyRequire) != nil {
            let unsupported = SanityCheck.unsupported(m.optionTags(.proxyRequire), supported: script.sanity.proxyRequire)
            if !unsupported.isEmpty {
                metrics.droppedRequest(.badExtension)
                sendReply(to: r, request: m, code: 420, reason: "Bad Extension", extraHeaders: [("Unsupported", unsupported.joined(separator: ", "))])
                return
            }
        }
        // Retransmissions and CANCEL/ACK of known transactions.
        if transactions.absorb(r, checked: checked) { return }
        // Draining: requests within dialogs (a To tag) and ACK/CANCEL go
        // on; a new initial request is turned away.
        if checked.toTag == nil, m.method != .ack, m.method != .cancel, draining.load(ordering: .relaxed) {
            sendReply(to: r, request: m, code: 503, reason: "Service Unavailable", extraHeaders: [("Retry-After", String(retryAfterWhileDraining))])
            return
        }
        applyAlias(r, topVia: checked.topVia)
        let ctx = MessageContext(received: r, checked: checked)
        // received/rport on the top Via (RFC 3261 §18.2.1, RFC 3581).
        stampTopVia(ctx)
        // Our own Route values off the top, a strict router's repair (§16.4).
        if m.headerValue(.route) != nil { processRoutes(ctx) }
        guard let main = script.mainRequest else { return }
        _ = run(block: main, ctx)
        if let t = ctx.transaction { transactions.requestScriptFinished(t) }
    }

    /// RFC 3261 §16.4, done by the core whatever the script does: when the
    /// Request-URI is a value this proxy put in a Record-Route, the previous
    /// hop was a strict router and the real Request-URI is the last Route
    /// value; then every Route value naming this proxy at the top is taken
    /// off (two with `r2=on`, RFC 5658).
    func processRoutes(_ ctx: MessageContext) {
        // Only the top two values decide (ours, and ours again after a
        // transport change with r2=on); the rest are counted, not parsed.
        var total = ctx.message.listValueCount(.route)
        guard total > 0, var head = try? ctx.message.routes(first: 2), !head.isEmpty else { return }
        // The Request-URI as received (processRoutes runs before the script).
        let ru = ctx.checked?.requestURI ?? ctx.message.requestURIString.flatMap { try? SIPURI.parse($0) }
        if let ru, isMyself(uri: ru), ru.isLooseRouter || ru.hasParameter("r2") {
            // Strict-router repair (§16.4): every value is needed.
            guard var routes = try? ctx.message.routes(), let last = routes.last else { return }
            ctx.message.setRequestURI(last.uri.description)
            routes.removeLast()
            ctx.message.removeHeaders(.route)
            for r in routes { ctx.message.appendHeader(SIPHeaderField(.route, value: ArraySlice(Array("<\(r.uri.description)>".utf8)))) }
            head = Array(routes.prefix(2))
            total = routes.count
        }
        ctx.hadRouteSet = true
        ctx.routesRemain = true
        guard let first = head.first, isMyself(uri: first.uri) else { return }
        ctx.message.popFirstValue(.route)
        var popped = 1
        if first.uri.parameter("r2") == "on", head.count > 1, isMyself(uri: head[1].uri) {
            ctx.message.popFirstValue(.route)
            popped = 2
        }
        ctx.routesRemain = total > popped
    }

    /// Adds `received` when the source differs from the sent-by, and fills
    /// `rport` (always on a stream, so the reply finds the connection).
    func stampTopVia(_ ctx: MessageContext) {
        guard var via = ctx.checked?.topVia ?? (try? ctx.message.topVia()) ?? nil else { return }
        let r = ctx.received
        let sentBy = via.host.hasPrefix("[") && via.host.hasSuffix("]") ? via.host.dropFirst().dropLast() : via.host[...]
        let received = sentBy.equalsIgnoringASCIICase(r.sourceIP) ? nil : (r.sourceIP.utf8.contains(0x3A) ? "[\(r.sourceIP)]" : r.sourceIP)
        let hasRport = via.rport != nil
        let rport = hasRport || r.proto != .udp ? UInt16(clamping: r.sourcePort) : nil
        guard received != nil || rport != nil else { return }
        // Usually the value is edited as text; the parsed Via is written
        // anew only when it already has received or an rport value.
        let text = ctx.checked?.topViaText ?? ctx.received.message.headerValue(.via).map(SIPHeaderField.firstListValue)
        if via.received == nil, let text, let stamped = Via.Stamp(text, received: received, rport: rport, hasRport: hasRport) {
            ctx.stampTopVia(stamped)
        } else {
            if let received { via.parameters.set("received", received) }
            if let rport { via.parameters.set("rport", String(rport)) }
            ctx.stampTopVia(Via.Stamp(text: Array(via.description.utf8)))
        }
    }

    /// RFC 5923: a TLS peer whose top Via carries `alias` may have requests
    /// for its sent-by sent over this connection — only when its verified
    /// certificate names that sent-by (RFC 5923 §5 / RFC 5922).
    func applyAlias(_ r: ReceivedMessage, topVia via: Via) {
        guard r.proto != .udp, let c = r.connection, via.hasAlias else { return }
        let host = via.hostName
        guard r.proto == .tls, let tls = r.tls, tls.peerVerified, let der = tls.peerCertificateDER,
              let cert = try? Certificate(derEncoded: der), PeerIdentity.matches(cert, domain: host, allowWildcards: false)
        else {
            logger.debug("alias from \(r.sourceIP):\(r.sourcePort) not honoured: the sent-by \(host) is not authenticated by a verified TLS certificate")
            return
        }
        guard let ip = PeerIdentity.isIPLiteral(host) ? host : resolver.hosts[host] else { return }
        let port = Int(via.port ?? r.proto.defaultPort)
        transport.addAlias(c, ip: ip, port: port)
        logger.debug("\(c) is also \(ip):\(port) (RFC 5923 alias)")
    }

    // MARK: Replies

    /// A stateless reply to the request of `ctx`: its Via as stamped, the
    /// local To tag and what validation knew of the To.
    func sendReply(_ ctx: MessageContext, code: Int, reason: String, extraHeaders: [(String, String)] = []) {
        // A 503 for a request the transaction cap refused tells when to come back.
        if code == 503, ctx.transactionRefused != nil, !extraHeaders.contains(where: { $0.0.lowercased() == "retry-after" }) {
            return sendReply(ctx, code: code, reason: reason, extraHeaders: extraHeaders + [("Retry-After", String(TransactionLimits.retryAfter))])
        }
        // A stamp not yet written into the message goes straight into the
        // reply, which then copies the rest from the request as received.
        let topVia = ctx.pendingTopVia
        sendReply(to: ctx.received, request: topVia == nil ? ctx.requestForReplies : ctx.received.message, topVia: topVia,
                  code: code, reason: reason, extraHeaders: extraHeaders, toTag: ctx.localTag, toHasTag: ctx.toHasTag)
    }

    /// Sends a reply generated here, statelessly. `topVia`: the first Via
    /// value to write instead of the request's.
    func sendReply(to r: ReceivedMessage, request: SIPMessage, topVia: Via.Stamp? = nil, code: Int, reason: String, extraHeaders: [(String, String)] = [], toTag: String? = nil, toHasTag: Bool? = nil) {
        metrics.sentReply(code)
        let headers = replyHeaders(to: r, code: code, reason: reason, extraHeaders: extraHeaders)
        let tag = toTag ?? localTag(request)
        // Nobody would read a failure below info level: no future, and the
        // reply is written straight into the transport's send buffer.
        if logger.logLevel > .info,
           SIPResponseBuilder.withResponse(to: request, code: code, reason: reason, toTag: tag, toHasTag: toHasTag, topVia: topVia, extraHeaders: headers,
                                           { size, write in transport.replyUnobserved(size: size, to: r, write) }) {
            return
        }
        let bytes = SIPResponseBuilder.response(to: request, code: code, reason: reason, toTag: tag, toHasTag: toHasTag, topVia: topVia, extraHeaders: headers)
        transport.reply(bytes, to: r).whenFailure { [logger] e in logger.info("reply \(code) to \(r.sourceIP):\(r.sourcePort) not sent: \(e)") }
    }

    /// A reply SwiftSER makes (stateless or through a transaction): the
    /// request's Via/From/To/Call-ID/CSeq, Allow on 405/501, the
    /// `server_header`, and a Warning when `sip_warning` is on.
    /// `toHasTag`: known from `validate()` (saves parsing the To again).
    func replyBytes(to r: ReceivedMessage, request: SIPMessage, topVia: Via.Stamp? = nil, code: Int, reason: String, extraHeaders: [(String, String)] = [], toTag: String? = nil, toHasTag: Bool? = nil) -> [UInt8] {
        SIPResponseBuilder.response(to: request, code: code, reason: reason, toTag: toTag ?? localTag(request), toHasTag: toHasTag, topVia: topVia,
                                    extraHeaders: replyHeaders(to: r, code: code, reason: reason, extraHeaders: extraHeaders))
    }

    /// The header fields a reply made here adds to the caller's: Allow on
    /// 405/501, the `server_header`, a Warning when `sip_warning` is on.
    private func replyHeaders(to r: ReceivedMessage, code: Int, reason: String, extraHeaders: [(String, String)]) -> [(String, String)] {
        if extraHeaders.isEmpty && code != 405 && code != 501 && !config.core.sipWarning { return plainReplyHeaders }
        var headers = extraHeaders
        if code == 405 || code == 501 { headers.append(("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, MESSAGE, INFO, NOTIFY, SUBSCRIBE, UPDATE, PRACK, REFER")) }
        if let server = serverHeaderField { headers.append(server) }
        if config.core.sipWarning {
            let l = r.listener
            headers.append(("Warning", "392 \(l.advertisedHost ?? l.host):\(l.advertisedPort ?? l.port) \"Noisy feedback tells: src=\(r.sourceIP):\(r.sourcePort) proto=\(r.proto.rawValue) reason=\(reason.replacingOccurrences(of: "\"", with: "'"))\""))
        }
        return headers
    }

    /// A To tag that is the same for retransmissions of a request.
    func localTag(_ m: SIPMessage) -> String { Self.localTag(m, checked: nil) }

    static func localTag(_ m: SIPMessage, checked: SIPMessage.Checked?) -> String {
        var h = FNV64()
        h.add(m.headerValue(.callID) ?? [])
        if let checked {
            h.add(checked.fromTag ?? "")
            h.add(checked.topVia.branch ?? "")
        } else {
            h.add((try? m.from())??.tag ?? "")
            h.add((try? m.topVia())??.branch ?? "")
        }
        // "ss" and the hash in base 32 (13 digits): one small string, no
        // radix conversion through the generic integer printer.
        var v = h.value
        return String(unsafeUninitializedCapacity: 15) { out in
            out[0] = UInt8(ascii: "s")
            out[1] = UInt8(ascii: "s")
            for i in 0..<13 {
                let d = UInt8(truncatingIfNeeded: v & 31)
                out[2 + i] = d < 10 ? 0x30 + d : 0x61 + d - 10
                v >>= 5
            }
            return 15
        }
    }

    // MARK: Drain and reload

    /// True once `beginDrain()` ran (readiness: false while draining).
    public var isDraining: Bool { draining.load(ordering: .relaxed) }

    /// Transactions still in progress (the drain waits for 0).
    public var activeTransactions: Int { transactions.activeCount }

    /// The Retry-After (seconds) of the 503 a new request gets while
    /// draining: `shutdown_timeout`, at least 1.
    var retryAfterWhileDraining: Int { max(1, config.core.shutdownTimeout) }

    /// Starts the graceful drain (SIGTERM): TCP and TLS listeners stop
    /// accepting connections (open ones stay), new initial requests get 503
    /// with Retry-After; requests within dialogs, CANCEL, ACK and responses
    /// go on; `/ready` answers 503. The caller waits for `activeTransactions`
    /// to reach 0 (or `shutdown_timeout`) and then shuts the transport down
    /// (`ProxyService` does).
    public func beginDrain() {
        guard draining.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged else { return }
        metrics.isDraining = true
        transport.stopAccepting()
    }

    /// Why a script reload was refused.
    public enum ScriptReloadError: Error, CustomStringConvertible {
        /// The config file does not load or its script fails the checks
        /// of `swiftser check`: each diagnostic with file:line:col.
        case invalid([ConfigDiagnostic])
        public var description: String {
            switch self {
            case .invalid(let d): return d.map(\.description).joined(separator: "\n")
            }
        }
    }

    /// The outcome of a script reload that worked.
    public struct ScriptReloaded: Sendable {
        /// Route blocks of the new script.
        public var blocks: Int
        /// Warnings from loading the config.
        public var warnings: [String]
    }

    /// Loads the config file again (with the definitions of the start) and, when
    /// it passes the checks of `swiftser check`, swaps in its route script
    /// atomically: messages arriving from now on run the new script; those
    /// already running, and transactions already armed with a
    /// failure_route or onreply_route, finish with the old one. A config
    /// that fails leaves the running script in place. Only the route
    /// script and the module parameters it reads while running change
    /// (see `CompiledScript`); every other parameter needs a restart, and
    /// a change to one is reported as a warning (docs/operations.md).
    public func reloadScript() -> Result<ScriptReloaded, ScriptReloadError> {
        reloadLock.withLock {
            let fresh: Config
            do throws(ConfigErrors) {
                fresh = try ConfigLoader.load(file: config.file, functions: ScriptFunctions.catalogue, defines: defines)
            } catch {
                logger.error("route script reload failed, the running script stays in use:\n\(error)")
                return .failure(.invalid(error.diagnostics))
            }
            let compiled = CompiledScript(fresh)
            scriptRef.store(compiled, ordering: .releasing)
            var warnings = fresh.warnings.map(\.description)
            for name in restartOnlyChanges(fresh) {
                warnings.append("\(name) changed in \(config.file); the change takes effect after a restart")
            }
            for w in warnings { logger.warning("\(w)") }
            logger.notice("route script reloaded from \(config.file): \(compiled.blocks.count) route block(s)")
            return .success(ScriptReloaded(blocks: compiled.blocks.count, warnings: warnings))
        }
    }

    /// The groups of settings a reload does not apply that differ in
    /// `fresh` from the running config.
    func restartOnlyChanges(_ fresh: Config) -> [String] {
        var changed: [String] = []
        if fresh.listens.map(\.description) != config.listens.map(\.description) { changed.append("listen") }
        if fresh.aliases != config.aliases { changed.append("alias") }
        if fresh.core != config.core { changed.append("a core parameter") }
        if fresh.tls != config.tls { changed.append("a TLS parameter") }
        if fresh.transactions != config.transactions { changed.append("a tm parameter") }
        if fresh.pike != config.pike { changed.append("a pike parameter") }
        if fresh.htables != config.htables { changed.append("an htable declaration (tables and their contents are kept until a restart)") }
        if fresh.permissions != config.permissions { changed.append("a permissions parameter (reload the address file itself with permissions.addressReload)") }
        if fresh.registrar.database != config.registrar.database || fresh.registrar.dbMode != config.registrar.dbMode { changed.append("usrloc db_url/db_mode") }
        var a = fresh.auth, b = config.auth
        (a.nonceExpire, a.nonceAuthMaxDrift, a.checksRegister, a.checksNoDialog, a.checksInDialog, a.calculateHA1, a.useDomain) =
            (b.nonceExpire, b.nonceAuthMaxDrift, b.checksRegister, b.checksNoDialog, b.checksInDialog, b.calculateHA1, b.useDomain)
        if a != b { changed.append("an auth parameter (secret, nc_array_size, algorithm, db_url)") }
        return changed
    }

    // MARK: Responses

    /// Most Via values a response may carry.
    static let maxResponseVias = 70

    func handleResponse(_ r: ReceivedMessage) {
        let m = r.message
        let checked: SIPMessage.Checked
        do {
            checked = try m.validate()
        } catch {
            logger.info("bad response from \(r.proto.rawValue):\(r.sourceIP):\(r.sourcePort) dropped: \(error)")
            metrics.droppedReply(.malformed)
            return
        }
        let top = checked.topVia
        guard isMyself(host: top.host, port: top.port ?? (top.transport == "TLS" ? 5061 : 5060)) else {
            logger.info("response from \(r.sourceIP):\(r.sourcePort) whose top Via is not ours dropped")
            metrics.droppedReply(.viaNotOurs)
            return
        }
        // A response passes back through at most as many hops as a request
        // can take (Max-Forwards 70): a longer Via list is forged or broken.
        if m.listValueCount(.via) > Self.maxResponseVias {
            logger.info("response from \(r.sourceIP):\(r.sourcePort) with more than \(Self.maxResponseVias) Via values dropped")
            metrics.droppedReply(.tooManyVias)
            return
        }
        if transactions.handleResponse(r, checked: checked) { return }
        let script = self.script
        // Only a response to a request we forwarded statelessly (our `f`
        // branch) goes on by its Via. One for a transaction we no longer
        // (or never) had, or with a branch we never make, is dropped: a
        // forged response must not make us a reflector.
        guard let b = top.branch, Matching.isStatelessBranch(b) else {
            logger.debug("response from \(r.sourceIP):\(r.sourcePort) matches no transaction: dropped")
            metrics.droppedReply(.noTransaction)
            return
        }
        // Stateless: pop our Via and send on by the next one.
        let ctx = MessageContext(received: r, checked: checked)
        ctx.routeKind = .reply
        ctx.status = m.statusCode
        if let idx = script.mainReply {
            if run(block: idx, ctx) == .drop {
                metrics.droppedReply(.script)
                return
            }
        }
        ctx.message.popFirstValue(.via)
        forwardResponse(ctx.message)
    }

    /// Sends a response to the address its (new) top Via names: received
    /// and rport when present (RFC 3261 §18.2.2, RFC 3581), over the
    /// connection that address has when the transport is a stream.
    func forwardResponse(_ m: SIPMessage) {
        guard let via = try? m.topVia() else { return }
        let host = via.received ?? via.host
        let port: UInt16 = (via.rport ?? nil) ?? via.port ?? (via.transport == "TLS" ? 5061 : 5060)
        let proto = TransportProtocol(rawValue: via.transport.lowercased()) ?? .udp
        let bare = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
        if bare == "255.255.255.255" || bare.hasPrefix("224.") || bare.lowercased().hasPrefix("ff") && bare.utf8.contains(0x3A) {
            logger.info("response to broadcast/multicast address \(bare) dropped")
            metrics.droppedReply(.broadcast)
            return
        }
        if isMyself(host: bare, port: port) {
            logger.info("response whose next Via is this proxy itself dropped")
            metrics.droppedReply(.loop)
            return
        }
        var dest = Destination(proto: proto, host: bare, port: port)
        if proto != .udp, let c = transport.findConnection(proto: proto, ip: bare, port: Int(port)) { dest.connectionID = c.id }
        metrics.forwardedReply(m.statusCode ?? 0)
        let bytes = m.serialized()
        if case .notApplicable = transport.sendDirect(bytes, to: dest) {
            transport.send(bytes, to: dest).whenFailure { [logger, dest] e in logger.info("response to \(dest) not sent: \(e)") }
        }
    }
}

/// 64-bit FNV-1a, for branch and tag values that must be stable.
struct FNV64 {
    var value: UInt64 = 0xcbf2_9ce4_8422_2325
    mutating func add(_ s: String) {
        var s = s
        s.withUTF8 { add(bytes: $0) }
    }
    mutating func add(_ s: ArraySlice<UInt8>) {
        s.withUnsafeBufferPointer { add(bytes: $0) }
    }
    mutating func add(_ n: UInt64) {
        var v = value
        for shift in stride(from: 0, to: 64, by: 8) {
            v ^= (n >> UInt64(shift)) & 0xff
            v = v &* 0x100_0000_01b3
        }
        value = v
    }
    private mutating func add(bytes: UnsafeBufferPointer<UInt8>) {
        var v = value
        for b in bytes {
            v ^= UInt64(b)
            v = v &* 0x100_0000_01b3
        }
        v ^= 0xff
        value = v &* 0x100_0000_01b3
    }
}

/// The running script lives in a `ManagedAtomic`: loads and stores are
/// lock-free strong references (swift-atomics).
extension CompiledScript: AtomicReference {}
