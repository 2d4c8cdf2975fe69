import SIPConfig

/// One script function in one row: the signature `swiftser check` and the
/// parser read (name, argument counts, module, allowed route kinds, the
/// argument naming a route, literal-argument rules, roles) and the
/// implementation the compiler binds each call to.
struct ScriptFunction: Sendable {
    /// Runs one call: Kamailio's convention, > 0 true, < 0 false, 0 stop
    /// the script. Rows give non-capturing closures, so a call costs one
    /// indirect call and nothing is allocated per message.
    typealias Implementation = @Sendable (ProxyCore, CompiledScript.Call, MessageContext) -> Int

    /// What the compiler prepares once from a literal argument.
    enum Preparation: Sendable {
        case none
        /// The last argument is an xlog format: split into text and pseudo-variables.
        case formatLast
        /// The first argument is a regular expression: compiled.
        case regexFirst
    }

    let signature: FunctionSignature
    let prepare: Preparation
    let run: Implementation

    init(_ name: String, _ args: ClosedRange<Int>, _ module: String, routes: Set<RouteScript.Kind>? = nil,
         routeArgument: FunctionSignature.RouteArgument? = nil, rules: [FunctionSignature.ArgumentRule] = [],
         roles: FunctionSignature.Roles = [], prepare: Preparation = .none, _ run: @escaping Implementation) {
        signature = FunctionSignature(name, args: args, module: module, routes: routes, routeArgument: routeArgument,
                                      rules: rules, roles: roles)
        self.prepare = prepare
        self.run = run
    }

    var name: String { signature.name }
}

/// The table of every script function. Adding a function is adding a row
/// here (and its implementation, usually a method of `ProxyCore`).
public enum ScriptFunctions {
    /// Kamailio's xlog levels.
    static let logLevels = ["L_ALERT", "L_CRIT", "L_ERR", "L_WARN", "L_NOTICE", "L_INFO", "L_DBG"]

    static let table: [ScriptFunction] = [
        // core
        ScriptFunction("forward", 0...2, "core", roles: .relays) { $0.forward($1, $2, .any) },
        ScriptFunction("forward_udp", 0...2, "core", roles: .relays) { $0.forward($1, $2, .udp) },
        ScriptFunction("forward_tcp", 0...2, "core", roles: .relays) { $0.forward($1, $2, .tcp) },
        ScriptFunction("forward_tls", 0...2, "core", roles: .relays) { $0.forward($1, $2, .tls) },
        ScriptFunction("send", 0...2, "core", roles: .relays) { $0.forward($1, $2, .send) },
        ScriptFunction("route", 1...1, "core", routeArgument: .init(0, .request)) { $0.callRoute($1, $2) },
        ScriptFunction("setflag", 1...1, "core") { $0.setFlag($1, $2, true) },
        ScriptFunction("resetflag", 1...1, "core") { $0.setFlag($1, $2, false) },
        ScriptFunction("isflag", 1...1, "core") { $0.isFlag($1, $2) },
        // tls
        ScriptFunction("is_peer_verified", 0...0, "tls", roles: .authenticates) { _, _, ctx in
            ctx.received.tls?.peerVerified == true ? 1 : -1
        },
        ScriptFunction("tls_peer_verified_from", 0...0, "tls", roles: .authenticates) { $0.tlsPeerVerifiedFrom($2) },
        // sl
        ScriptFunction("sl_send_reply", 2...2, "sl", rules: [.replyCode(0)]) { $0.slSendReply($1, $2) },
        ScriptFunction("sl_reply_error", 0...0, "sl") { $0.slReplyError($2) },
        // tm
        ScriptFunction("t_relay", 0...2, "tm", routes: [.request, .failure], roles: .relays) { p, _, ctx in
            p.transactions.relay(ctx) ? 1 : -1
        },
        ScriptFunction("t_reply", 2...2, "tm", routes: [.request, .failure], rules: [.replyCode(0)]) { $0.tReply($1, $2) },
        ScriptFunction("t_on_failure", 1...1, "tm", routeArgument: .init(0, .failure)) { _, c, ctx in
            ctx.failureRoute = ctx.script.flatMap { s in c.routeIndex.map { RouteBlock(script: s, index: $0) } }
            return 1
        },
        ScriptFunction("t_on_reply", 1...1, "tm", routeArgument: .init(0, .reply)) { _, c, ctx in
            ctx.replyRoute = ctx.script.flatMap { s in c.routeIndex.map { RouteBlock(script: s, index: $0) } }
            return 1
        },
        ScriptFunction("t_on_branch", 1...1, "tm", routeArgument: .init(0, .branch)) { _, c, ctx in
            ctx.branchRoute = ctx.script.flatMap { s in c.routeIndex.map { RouteBlock(script: s, index: $0) } }
            return 1
        },
        ScriptFunction("t_check_trans", 0...0, "tm") { p, _, ctx in p.transactions.exists(for: ctx.message) ? 1 : -1 },
        ScriptFunction("t_newtran", 0...0, "tm") { p, _, ctx in p.transactions.newServerTransaction(ctx) != nil ? 1 : -1 },
        ScriptFunction("t_is_canceled", 0...0, "tm") { p, _, ctx in
            guard let t = ctx.transaction else { return -1 }
            return p.transactions.isCanceled(t) ? 1 : -1
        },
        ScriptFunction("t_check_status", 1...1, "tm", rules: [.regex(0)], prepare: .regexFirst) { $0.tCheckStatus($1, $2) },
        // rr
        ScriptFunction("record_route", 0...1, "rr") { p, c, ctx in
            ctx.recordRoute = true
            if !c.args.isEmpty { ctx.recordRouteParams = p.arg(c, 0, ctx) }
            return 1
        },
        ScriptFunction("loose_route", 0...0, "rr") { p, _, ctx in p.looseRoute(ctx) ? 1 : -1 },
        // registrar
        ScriptFunction("save", 1...2, "registrar") { p, c, ctx in p.registrarSave(ctx, table: p.arg(c, 0, ctx)) ? 1 : -1 },
        ScriptFunction("lookup", 1...2, "registrar") { p, c, ctx in p.registrarLookup(ctx, table: p.arg(c, 0, ctx)) },
        ScriptFunction("registered", 1...2, "registrar") { p, _, ctx in p.registered(ctx) },
        // maxfwd
        ScriptFunction("mf_process_maxfwd_header", 1...1, "maxfwd") { $0.processMaxForwards($1, $2) },
        // textops
        ScriptFunction("append_hf", 1...2, "textops") { $0.appendHeader($1, $2) },
        ScriptFunction("remove_hf", 1...1, "textops") { p, c, ctx in ctx.message.removeHeaders(named: p.arg(c, 0, ctx)) > 0 ? 1 : -1 },
        ScriptFunction("is_present_hf", 1...1, "textops") { p, c, ctx in ctx.message.header(named: p.arg(c, 0, ctx)) != nil ? 1 : -1 },
        ScriptFunction("is_method", 1...1, "textops") { p, c, ctx in
            ProxyCore.listContains(p.arg(c, 0, ctx), methodName(ctx.received.message)) ? 1 : -1
        },
        // siputils
        ScriptFunction("has_totag", 0...0, "siputils") { _, _, ctx in
            if let checked = ctx.checked { return checked.toTag != nil ? 1 : -1 }
            return ((try? ctx.message.to()) ?? nil)?.tag != nil ? 1 : -1
        },
        ScriptFunction("uri_param", 1...2, "siputils") { $0.uriParam($1, $2) },
        // xlog
        ScriptFunction("xlog", 1...2, "xlog", rules: [.oneOf(index: 0, values: logLevels, whenCount: 2)], prepare: .formatLast) {
            $0.xlog($1, $2)
        },
        // sanity
        ScriptFunction("sanity_check", 0...2, "sanity") { $0.sanityCheck($1, $2) },
        // auth
        ScriptFunction("www_challenge", 2...3, "auth") { $0.challenge($1, $2, .www) },
        ScriptFunction("proxy_challenge", 2...3, "auth") { $0.challenge($1, $2, .proxy) },
        ScriptFunction("auth_challenge", 2...3, "auth") { p, c, ctx in
            p.challenge(c, ctx, ctx.received.message.method == .register ? .www : .proxy)
        },
        ScriptFunction("consume_credentials", 0...0, "auth") { p, _, ctx in p.consumeCredentials(ctx) },
        ScriptFunction("has_credentials", 1...1, "auth") { p, c, ctx in p.hasCredentials(ctx, realm: p.arg(c, 0, ctx)) },
        // auth_db
        ScriptFunction("www_authorize", 2...2, "auth_db", roles: .authenticates) { $0.authorize($1, $2, .www) },
        ScriptFunction("www_authenticate", 2...3, "auth_db", roles: .authenticates) { $0.authorize($1, $2, .www) },
        ScriptFunction("proxy_authorize", 2...2, "auth_db", roles: .authenticates) { $0.authorize($1, $2, .proxy) },
        ScriptFunction("proxy_authenticate", 2...2, "auth_db", roles: .authenticates) { $0.authorize($1, $2, .proxy) },
        ScriptFunction("auth_check", 3...3, "auth_db", roles: .authenticates) { p, c, ctx in
            let r = p.counted(p.authCheck(ctx, realm: p.arg(c, 0, ctx), table: p.arg(c, 1, ctx), flags: Int(p.arg(c, 2, ctx)) ?? 0))
            if r > 0 { ctx.authenticated = true }
            return r
        },
        // permissions
        ScriptFunction("allow_source_address", 0...1, "permissions", roles: .authenticates) { $0.allowSourceAddress($1, $2) },
        ScriptFunction("allow_source_address_group", 0...0, "permissions", roles: .authenticates) { p, _, ctx in
            p.permissions.table.match(ip: ctx.received.sourceIP, port: ctx.received.sourcePort)?.group ?? -1
        },
        // htable
        ScriptFunction("sht_rm", 2...2, "htable") { p, c, ctx in
            guard let t = p.htables[p.arg(c, 0, ctx)] else { return -1 }
            t.remove(p.arg(c, 1, ctx))
            return 1
        },
        ScriptFunction("sht_reset", 1...1, "htable") { p, c, ctx in
            guard let t = p.htables[p.arg(c, 0, ctx)] else { return -1 }
            t.reset()
            return 1
        },
        // pike
        ScriptFunction("pike_check_req", 0...0, "pike") { p, _, ctx in p.pikeCheck(ctx) },
    ]

    /// The rows by name, for the compiler.
    static let byName: [String: ScriptFunction] = {
        var m: [String: ScriptFunction] = [:]
        for row in table where m[row.name] == nil { m[row.name] = row }
        return m
    }()

    /// The signatures of every row, for `ConfigLoader` (`swiftser check`,
    /// the proxy's start and reload).
    public static let catalogue = FunctionCatalogue(table.map(\.signature))
}
