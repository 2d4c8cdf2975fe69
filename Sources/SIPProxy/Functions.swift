import Foundation
import Logging
import SIPConfig
import SIPCore
import SIPTLS
import SIPTransport
import X509

extension ProxyCore {
    /// Runs a script function through the implementation its call was
    /// bound to at compile time.
    @inline(__always)
    func call(_ c: CompiledScript.Call, _ ctx: MessageContext) -> Int {
        c.run(self, c, ctx)
    }

    /// Argument `i` of a call, evaluated ("" when not given).
    func arg(_ c: CompiledScript.Call, _ i: Int, _ ctx: MessageContext) -> String {
        i < c.args.count ? eval(c.args[i], ctx).string : ""
    }

    // The implementations of the rows of `ScriptFunctions.table` that need
    // more than a line. Each returns Kamailio's convention: > 0 true,
    // < 0 false, 0 stop the script.

    func slSendReply(_ c: CompiledScript.Call, _ ctx: MessageContext) -> Int {
        guard ctx.received.message.isRequest else { return -1 }
        reply(ctx, code: Int(arg(c, 0, ctx)) ?? 500, reason: arg(c, 1, ctx))
        return 1
    }

    func slReplyError(_ ctx: MessageContext) -> Int {
        let (code, reason) = ctx.lastError ?? (500, "Server Internal Error")
        reply(ctx, code: code, reason: reason)
        return 1
    }

    func tReply(_ c: CompiledScript.Call, _ ctx: MessageContext) -> Int {
        reply(ctx, code: Int(arg(c, 0, ctx)) ?? 500, reason: arg(c, 1, ctx), stateful: true)
        return 1
    }

    enum TransportChoice { case any, udp, tcp, tls, send }

    /// forward(), forward_udp/tcp/tls(), send(): stateless forwarding, to
    /// the arguments' host and port when given.
    func forward(_ c: CompiledScript.Call, _ ctx: MessageContext, _ choice: TransportChoice) -> Int {
        var proto: TransportProtocol?
        switch choice {
        case .udp: proto = .udp
        case .tcp: proto = .tcp
        case .tls: proto = .tls
        case .any, .send: proto = nil
        }
        var forced: (TransportProtocol?, String, UInt16?)? = nil
        if !c.args.isEmpty {
            forced = (proto, arg(c, 0, ctx), c.args.count > 1 ? UInt16(arg(c, 1, ctx)) : nil)
        } else if let proto {
            forced = (proto, "", nil)
        }
        return forwardStateless(ctx, forced: forced) ? 1 : -1
    }

    /// route(NAME): runs a request route; its `return` value is the result.
    func callRoute(_ c: CompiledScript.Call, _ ctx: MessageContext) -> Int {
        guard let idx = c.routeIndex, let script = ctx.script else { return -1 }
        switch run(block: RouteBlock(script: script, index: idx), ctx) {
        case .drop, .exit: return 0
        case .returned(let v): return v
        default: return 1
        }
    }

    func setFlag(_ c: CompiledScript.Call, _ ctx: MessageContext, _ on: Bool) -> Int {
        if let n = Int(arg(c, 0, ctx)), (0..<64).contains(n) {
            if on { ctx.flags |= 1 << UInt64(n) } else { ctx.flags &= ~(1 << UInt64(n)) }
        }
        return 1
    }

    func isFlag(_ c: CompiledScript.Call, _ ctx: MessageContext) -> Int {
        if let n = Int(arg(c, 0, ctx)), (0..<64).contains(n) { return ctx.flags & (1 << UInt64(n)) != 0 ? 1 : -1 }
        return -1
    }

    func tCheckStatus(_ c: CompiledScript.Call, _ ctx: MessageContext) -> Int {
        guard let status = ctx.status else { return -1 }
        let s = String(status)
        guard let re = c.regex ?? runtimeRegex(arg(c, 0, ctx)) else { return -1 }
        return re.firstMatch(in: s, range: NSRange(s.startIndex..., in: s)) != nil ? 1 : -1
    }

    /// registered(table): the Request-URI's AOR has bindings.
    func registered(_ ctx: MessageContext) -> Int {
        guard let s = ctx.message.requestURIString, let u = try? SIPURI.parse(s) else { return -1 }
        return location.bindings(for: LocationService.aor(u)).isEmpty ? -1 : 1
    }

    func processMaxForwards(_ c: CompiledScript.Call, _ ctx: MessageContext) -> Int {
        guard ctx.received.message.isRequest else { return -1 }
        let limit = UInt8(clamping: Int(arg(c, 0, ctx)) ?? 70)
        guard let current = try? ctx.message.maxForwards() else {
            ctx.message.setMaxForwards(limit)
            ctx.maxForwardsDone = true
            return 1
        }
        if current == 0 { return -1 }
        ctx.message.setMaxForwards(min(current - 1, limit))
        ctx.maxForwardsDone = true
        return 1
    }

    func appendHeader(_ c: CompiledScript.Call, _ ctx: MessageContext) -> Int {
        var text = arg(c, 0, ctx)
        while text.hasSuffix("\n") || text.hasSuffix("\r") { text.removeLast() }
        guard let colon = text.firstIndex(of: ":") else { return -1 }
        ctx.message.appendHeader(String(text[..<colon]).trimmingCharacters(in: .whitespaces),
                                 text[text.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        return 1
    }

    func uriParam(_ c: CompiledScript.Call, _ ctx: MessageContext) -> Int {
        guard let s = ctx.message.requestURIString, let u = try? SIPURI.parse(s), let v = u.parameter(arg(c, 0, ctx)) else { return -1 }
        if c.args.count > 1 { return v == arg(c, 1, ctx) ? 1 : -1 }
        return 1
    }

    func xlog(_ c: CompiledScript.Call, _ ctx: MessageContext) -> Int {
        let levelName = c.args.count == 2 ? arg(c, 0, ctx) : "L_ERR"
        // Values from the message are escaped (LogText): a header cannot forge or hide log lines.
        let text = c.format.map { format($0, ctx, escaped: true) } ?? LogText.escaped(arg(c, c.args.count - 1, ctx))
        let msg = Logger.Message(stringLiteral: text.hasSuffix("\n") ? String(text.dropLast()) : text)
        switch levelName {
        case "L_ALERT", "L_CRIT": logger.critical(msg)
        case "L_ERR": logger.error(msg)
        case "L_WARN": logger.warning(msg)
        case "L_NOTICE": logger.notice(msg)
        case "L_INFO": logger.info(msg)
        default: logger.debug(msg)
        }
        return 1
    }

    /// www_challenge / proxy_challenge / auth_challenge.
    func challenge(_ c: CompiledScript.Call, _ ctx: MessageContext, _ kind: AuthKind) -> Int {
        let flags = Int(arg(c, 1, ctx)) ?? 0
        let r = authChallenge(ctx, kind, realm: arg(c, 0, ctx), flags: flags, algorithms: c.args.count > 2 ? arg(c, 2, ctx) : nil)
        if r < 0 && flags & 4 == 0, let method = ctx.received.message.method, method != .ack && method != .cancel {
            reply(ctx, code: 500, reason: "Server Internal Error")
        }
        return r
    }

    /// www_authorize / www_authenticate (with its method argument) / proxy_authorize.
    func authorize(_ c: CompiledScript.Call, _ ctx: MessageContext, _ kind: AuthKind) -> Int {
        let method = kind == .www && c.args.count > 2 ? arg(c, 2, ctx) : nil
        let r = counted(authAuthorize(ctx, kind, realm: arg(c, 0, ctx), table: arg(c, 1, ctx), method: method).rawValue)
        if r > 0 { ctx.authenticated = true }
        return r
    }

    /// tls_peer_verified_from(): the request came over a TLS connection
    /// whose peer certificate verified and names the From URI's domain
    /// (RFC 5922 §7.2: a `sip:` URI in the subjectAltName, else a DNS name
    /// there, else — with no subjectAltName — the subject CN; no
    /// wildcards). A trusted peer proxy or PBX is then authenticated by
    /// its certificate instead of digest.
    func tlsPeerVerifiedFrom(_ ctx: MessageContext) -> Int {
        guard let tls = ctx.received.tls, tls.peerVerified, let der = tls.peerCertificateDER,
              let cert = try? Certificate(derEncoded: der),
              let from = (try? ctx.received.message.from()) ?? nil, from.uri.isSIP, !from.uri.host.isEmpty else { return -1 }
        guard PeerIdentity.matches(cert, domain: from.uri.host, allowWildcards: false) else { return -1 }
        ctx.authenticated = true
        return 1
    }

    /// sanity_check([msg_checks[, uri_checks]]): Kamailio's sanity checks
    /// on the request as received; a failure is answered here (400, 416,
    /// 420 with Unsupported, 505; never an ACK) and then stops the script
    /// (autodrop=1, the default) or returns false.
    func sanityCheck(_ c: CompiledScript.Call, _ ctx: MessageContext) -> Int {
        let settings = ctx.script?.sanity ?? script.sanity
        let checks = c.args.isEmpty ? settings.defaultChecks : Int(arg(c, 0, ctx)) ?? settings.defaultChecks
        let uris = c.args.count > 1 ? Int(arg(c, 1, ctx)) ?? settings.uriChecks : settings.uriChecks
        guard let failure = SanityCheck.check(ctx.received.message, checks: .init(rawValue: checks), uris: .init(rawValue: uris),
                                              supported: settings.proxyRequire) else { return 1 }
        metrics.droppedRequest(.sanity)
        reply(ctx, code: failure.status, reason: failure.reason, extraHeaders: failure.extraHeaders)
        return settings.autodrop ? 0 : -1
    }

    /// allow_source_address([group]): the source address and port match an
    /// entry of the address table in `group` (default 1).
    func allowSourceAddress(_ c: CompiledScript.Call, _ ctx: MessageContext) -> Int {
        let group = c.args.isEmpty ? 1 : Int(arg(c, 0, ctx)) ?? -1
        guard group > 0 else { return -1 }
        return permissions.table.match(ip: ctx.received.sourceIP, port: ctx.received.sourcePort, group: group) != nil ? 1 : -1
    }

    /// pike_check_req(): Kamailio's -1 when the source is flooding, 1 otherwise.
    func pikeCheck(_ ctx: MessageContext) -> Int {
        if pike.hit(ctx.received.sourceIP, now: DispatchTime.now().uptimeNanoseconds / 1_000_000) {
            metrics.pikeBlockedRequest()
            return -1
        }
        return 1
    }

    /// True when `name` is one of the `|`-separated entries of `list`
    /// (is_method("INVITE|BYE")), without splitting into an array.
    static func listContains(_ list: String, _ name: String) -> Bool {
        var list = list, name = name
        return list.withUTF8 { l in
            name.withUTF8 { n in
                var start = 0
                for i in 0...l.count where i == l.count || l[i] == UInt8(ascii: "|") {
                    if i - start == n.count && (n.isEmpty || memcmp(l.baseAddress! + start, n.baseAddress!, n.count) == 0) { return true }
                    start = i + 1
                }
                return false
            }
        }
    }

    /// Replies to the request being processed, through its transaction
    /// when there is one (`extraHeaders` go only into a stateless reply).
    func reply(_ ctx: MessageContext, code: Int, reason: String, stateful: Bool = false, extraHeaders: [(String, String)] = []) {
        guard ctx.received.message.isRequest, ctx.received.message.method != .ack, !ctx.duplicate else { return }
        ctx.replied = true
        if stateful || ctx.transaction != nil {
            if let t = ctx.transaction ?? transactions.newServerTransaction(ctx) {
                transactions.reply(t, code: code, reason: reason)
                return
            }
        }
        sendReply(ctx, code: code, reason: reason, extraHeaders: extraHeaders)
    }

    /// loose_route(): true when the request came with a route set. The
    /// core already took this proxy's own Route values off and repaired a
    /// strict-routed Request-URI before the script ran (RFC 3261 §16.4),
    /// whatever the script does; this reports it, as Kamailio's does.
    /// As Kamailio's, an initial request (no To tag) whose only Route
    /// values named this proxy (a phone's preloaded outbound proxy) is not
    /// loose-routed: false, and the script routes it like any new request.
    func looseRoute(_ ctx: MessageContext) -> Bool {
        guard ctx.hadRouteSet else { return false }
        let hasToTag = ctx.checked.map { $0.toTag != nil } ?? ((((try? ctx.received.message.to()) ?? nil)?.tag) != nil)
        return hasToTag || ctx.routesRemain
    }
}
