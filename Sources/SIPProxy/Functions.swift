import Foundation
import Logging
import SIPConfig
import SIPCore
import SIPTransport

extension ProxyCore {
    /// Runs a script function. Returns Kamailio's convention: > 0 true,
    /// < 0 false, 0 stop the script.
    func call(_ c: CompiledScript.Call, _ ctx: MessageContext) -> Int {
        func arg(_ i: Int) -> String { i < c.args.count ? eval(c.args[i], ctx).string : "" }
        switch c.function {
        case .slSendReply:
            guard ctx.received.message.isRequest else { return -1 }
            let code = Int(arg(0)) ?? 500
            reply(ctx, code: code, reason: arg(1))
            return 1
        case .slReplyError:
            let (code, reason) = ctx.lastError ?? (500, "Server Internal Error")
            reply(ctx, code: code, reason: reason)
            return 1
        case .tReply:
            let code = Int(arg(0)) ?? 500
            reply(ctx, code: code, reason: arg(1), stateful: true)
            return 1
        case .forward(let choice):
            var forced: (TransportProtocol?, String, UInt16?)? = nil
            if !c.args.isEmpty {
                let proto: TransportProtocol? = {
                    switch choice {
                    case .udp: return .udp
                    case .tcp: return .tcp
                    case .tls: return .tls
                    default: return nil
                    }
                }()
                forced = (proto, arg(0), c.args.count > 1 ? UInt16(arg(1)) : nil)
            } else if case .udp = choice {
                forced = (.udp, "", nil)
            } else if case .tcp = choice {
                forced = (.tcp, "", nil)
            } else if case .tls = choice {
                forced = (.tls, "", nil)
            }
            return forwardStateless(ctx, forced: forced) ? 1 : -1
        case .tRelay:
            return transactions.relay(ctx) ? 1 : -1
        case .route:
            guard let idx = c.routeIndex, let script = ctx.script else { return -1 }
            switch run(block: RouteBlock(script: script, index: idx), ctx) {
            case .drop, .exit: return 0
            case .returned(let v): return v
            default: return 1
            }
        case .setflag:
            if let n = Int(arg(0)), (0..<64).contains(n) { ctx.flags |= 1 << UInt64(n) }
            return 1
        case .resetflag:
            if let n = Int(arg(0)), (0..<64).contains(n) { ctx.flags &= ~(1 << UInt64(n)) }
            return 1
        case .isflag:
            if let n = Int(arg(0)), (0..<64).contains(n) { return ctx.flags & (1 << UInt64(n)) != 0 ? 1 : -1 }
            return -1
        case .isPeerVerified:
            return ctx.received.tls?.peerVerified == true ? 1 : -1
        case .tOnFailure:
            ctx.failureRoute = ctx.script.flatMap { s in c.routeIndex.map { RouteBlock(script: s, index: $0) } }
            return 1
        case .tOnReply:
            ctx.replyRoute = ctx.script.flatMap { s in c.routeIndex.map { RouteBlock(script: s, index: $0) } }
            return 1
        case .tOnBranch:
            ctx.branchRoute = ctx.script.flatMap { s in c.routeIndex.map { RouteBlock(script: s, index: $0) } }
            return 1
        case .tCheckTrans:
            return transactions.exists(for: ctx.message) ? 1 : -1
        case .tNewTran:
            return transactions.newServerTransaction(ctx) != nil ? 1 : -1
        case .tIsCanceled:
            guard let t = ctx.transaction else { return -1 }
            return transactions.isCanceled(t) ? 1 : -1
        case .tCheckStatus:
            guard let status = ctx.status else { return -1 }
            let s = String(status)
            let re = c.regex ?? (try? NSRegularExpression(pattern: arg(0)))
            return re?.firstMatch(in: s, range: NSRange(s.startIndex..., in: s)) != nil ? 1 : -1
        case .recordRoute:
            ctx.recordRoute = true
            if !c.args.isEmpty { ctx.recordRouteParams = arg(0) }
            return 1
        case .looseRoute:
            return looseRoute(ctx) ? 1 : -1
        case .save:
            return registrarSave(ctx, table: arg(0)) ? 1 : -1
        case .lookup:
            return registrarLookup(ctx, table: arg(0))
        case .registered:
            guard let s = ctx.message.requestURIString, let u = try? SIPURI.parse(s) else { return -1 }
            return location.bindings(for: LocationService.aor(u)).isEmpty ? -1 : 1
        case .maxfwd:
            guard ctx.received.message.isRequest else { return -1 }
            let limit = UInt8(clamping: Int(arg(0)) ?? 70)
            guard let current = try? ctx.message.maxForwards() else {
                ctx.message.setMaxForwards(limit)
                ctx.maxForwardsDone = true
                return 1
            }
            if current == 0 { return -1 }
            ctx.message.setMaxForwards(min(current - 1, limit))
            ctx.maxForwardsDone = true
            return 1
        case .appendHF:
            var text = arg(0)
            while text.hasSuffix("\n") || text.hasSuffix("\r") { text.removeLast() }
            guard let colon = text.firstIndex(of: ":") else { return -1 }
            ctx.message.appendHeader(String(text[..<colon]).trimmingCharacters(in: .whitespaces),
                                     text[text.index(after: colon)...].trimmingCharacters(in: .whitespaces))
            return 1
        case .removeHF:
            return ctx.message.removeHeaders(named: arg(0)) > 0 ? 1 : -1
        case .isPresentHF:
            return ctx.message.header(named: arg(0)) != nil ? 1 : -1
        case .isMethod:
            return Self.listContains(arg(0), methodName(ctx.received.message)) ? 1 : -1
        case .hasTotag:
            if let checked = ctx.checked { return checked.toTag != nil ? 1 : -1 }
            return ((try? ctx.message.to()) ?? nil)?.tag != nil ? 1 : -1
        case .uriParam:
            guard let s = ctx.message.requestURIString, let u = try? SIPURI.parse(s), let v = u.parameter(arg(0)) else { return -1 }
            if c.args.count > 1 { return v == arg(1) ? 1 : -1 }
            return 1
        case .xlog:
            let levelName = c.args.count == 2 ? arg(0) : "L_ERR"
            let text = c.format.map { format($0, ctx) } ?? arg(c.args.count - 1)
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
        case .wwwChallenge, .proxyChallenge, .authChallenge:
            var kind: AuthKind = .www
            if case .proxyChallenge = c.function { kind = .proxy }
            if case .authChallenge = c.function, ctx.received.message.method != .register { kind = .proxy }
            let flags = Int(arg(1)) ?? 0
            let r = authChallenge(ctx, kind, realm: arg(0), flags: flags, algorithms: c.args.count > 2 ? arg(2) : nil)
            if r < 0 && flags & 4 == 0, let method = ctx.received.message.method, method != .ack && method != .cancel {
                reply(ctx, code: 500, reason: "Server Internal Error")
            }
            return r
        case .wwwAuthorize:
            return counted(authAuthorize(ctx, .www, realm: arg(0), table: arg(1), method: c.args.count > 2 ? arg(2) : nil).rawValue)
        case .proxyAuthorize:
            return counted(authAuthorize(ctx, .proxy, realm: arg(0), table: arg(1)).rawValue)
        case .authCheck:
            return counted(authCheck(ctx, realm: arg(0), table: arg(1), flags: Int(arg(2)) ?? 0))
        case .consumeCredentials:
            return consumeCredentials(ctx)
        case .hasCredentials:
            return hasCredentials(ctx, realm: arg(0))
        case .pikeCheckReq:
            // Kamailio: -1 when the source is flooding, 1 otherwise.
            if pike.hit(ctx.received.sourceIP, now: DispatchTime.now().uptimeNanoseconds / 1_000_000) {
                metrics.pikeBlockedRequest()
                return -1
            }
            return 1
        case .sanityCheck:
            return (try? ctx.message.validate()) != nil ? 1 : -1
        }
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
    /// when there is one.
    func reply(_ ctx: MessageContext, code: Int, reason: String, stateful: Bool = false) {
        guard ctx.received.message.isRequest, ctx.received.message.method != .ack, !ctx.duplicate else { return }
        ctx.replied = true
        if stateful || ctx.transaction != nil {
            if let t = ctx.transaction ?? transactions.newServerTransaction(ctx) {
                transactions.reply(t, code: code, reason: reason)
                return
            }
        }
        sendReply(ctx, code: code, reason: reason)
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
