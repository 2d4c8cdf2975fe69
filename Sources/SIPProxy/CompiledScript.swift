import Foundation
import SIPConfig

/// One route block of one compiled script. The script travels with the
/// index: a transaction armed (t_on_failure, t_on_reply) before a script
/// reload runs the blocks of the script it started with.
struct RouteBlock {
    let script: CompiledScript
    let index: Int
}

/// The route script in executable form: names resolved to enum cases,
/// route references to indices, regular expressions compiled. Built once
/// at load; running a message never looks at script text again.
final class CompiledScript: @unchecked Sendable { // built once at load, read-only afterwards (NSRegularExpression is not marked Sendable)
    enum Keyword { case method, uri, srcIP, srcPort, dstIP, dstPort, proto, af, status, myself }

    enum PV {
        case ru, rU, rd, rp, fu, fU, fd, tu, tU, td, ci, cs, rm, rs, rr, si, sp, Ri, Rp, pr, du, ua, mb, ml, af
        case hdr(String), variable(String), avp(String)
        case tlsVersion, tlsCipher, tlsPeerSubject, tlsPeerSubjectCN, tlsPeerIssuer, tlsPeerVerified, tlsPeerServerName, null
        case au, ad, ar, adu, aa
        /// `$sht(table=>key)`: the key may hold pseudo-variables.
        case sht(table: String, key: [FormatPart])
    }

    indirect enum Expr {
        case string(String)
        case number(Int)
        case pv(PV)
        case keyword(Keyword)
        case call(Call)
        case not(Expr)
        case and(Expr, Expr)
        case or(Expr, Expr)
        case compare(CompareOp, Expr, Expr)
        case arithmetic(String, Expr, Expr)
        /// A string argument with pseudo-variables in it ("to $ru").
        case format([FormatPart])
    }

    enum CompareOp {
        case eq, ne, lt, gt, le, ge, match(NSRegularExpression?), notMatch(NSRegularExpression?)
        /// `src_ip == 10.0.0.0/8`, `dst_ip != "::1"`: the address is (not) in the range.
        case inNetwork(IPNetwork, negated: Bool)
    }

    struct Call {
        /// The implementation of the function's row in `ScriptFunctions.table`,
        /// bound once here: running a call looks no name up.
        var run: ScriptFunction.Implementation
        var args: [Expr]
        /// Index of the route block a route/t_on_* argument names.
        var routeIndex: Int?
        /// A precompiled xlog format or regex argument where the function uses one.
        var format: [FormatPart]?
        var regex: NSRegularExpression?
        var location: SourceLocation
    }

    enum FormatPart { case text(String), pv(PV) }

    indirect enum Stmt {
        case call(Call)
        case ifElse(Expr, [Stmt], [Stmt])
        case switchCase(Expr, [(Expr?, [Stmt])])
        /// The location names the loop in the log line when it reaches `max_while_loops`.
        case whileLoop(Expr, [Stmt], SourceLocation)
        case assign(PV, Expr)
        case drop, exit, breakLoop
        case returnValue(Expr?)
        case block([Stmt])
    }

    struct Block {
        var kind: RouteScript.Kind
        var name: String
        var body: [Stmt]
    }

    var blocks: [Block] = []
    var mainRequestIndex: Int?
    var mainReplyIndex: Int?
    /// The main request route, with this script.
    var mainRequest: RouteBlock? { mainRequestIndex.map { RouteBlock(script: self, index: $0) } }
    /// The main onreply_route, with this script.
    var mainReply: RouteBlock? { mainReplyIndex.map { RouteBlock(script: self, index: $0) } }

    /// The module parameters the script's functions read while a message
    /// runs; they are reloaded with the script (`cfg.reload`, SIGUSR1).
    /// registrar: expires limits and max_contacts.
    let registrar: RegistrarSettings
    /// rr: enable_double_rr.
    let recordRoute: RecordRouteSettings
    /// auth / auth_db: nonce_expire, nonce_auth_max_drift, the nonce checks,
    /// calculate_ha1, use_domain (the secret, the nonce-count table, the
    /// default algorithms and the database are fixed at start).
    let auth: AuthSettings
    /// sanity: default_checks, uri_checks, proxy_require, autodrop.
    let sanity: SanitySettings
    /// core: max_while_loops, iterations one `while` loop may run on one message.
    let maxWhileLoops: Int

    func index(_ kind: RouteScript.Kind, _ name: String) -> Int? {
        blocks.firstIndex { $0.kind == kind && $0.name == name }
    }

    /// Compiles the route script of `config` and keeps the module
    /// parameters it reads at run time.
    init(_ config: Config) {
        let script = config.script
        registrar = config.registrar
        recordRoute = config.recordRoute
        auth = config.auth
        sanity = config.sanity
        maxWhileLoops = config.core.maxWhileLoops
        // Indices first so references resolve in any order.
        blocks = script.blocks.map { Block(kind: $0.kind, name: $0.name, body: []) }
        for (i, b) in script.blocks.enumerated() { blocks[i].body = b.body.map(compile) }
        mainRequestIndex = index(.request, "")
        mainReplyIndex = index(.reply, "")
    }

    static func pv(_ v: PseudoVariable) -> PV {
        switch v.name {
        case "ru": return .ru
        case "rU": return .rU
        case "rd": return .rd
        case "rp": return .rp
        case "fu": return .fu
        case "fU": return .fU
        case "fd": return .fd
        case "tu": return .tu
        case "tU": return .tU
        case "td": return .td
        case "ci": return .ci
        case "cs": return .cs
        case "rm": return .rm
        case "rs": return .rs
        case "rr": return .rr
        case "si": return .si
        case "sp": return .sp
        case "Ri": return .Ri
        case "Rp": return .Rp
        case "pr": return .pr
        case "du": return .du
        case "ua": return .ua
        case "mb": return .mb
        case "ml": return .ml
        case "hdr": return .hdr(v.argument ?? "")
        case "var": return .variable(v.argument ?? "")
        case "avp": return .avp(v.argument ?? "")
        case "tls_version": return .tlsVersion
        case "tls_cipher_info": return .tlsCipher
        case "tls_peer_subject": return .tlsPeerSubject
        case "tls_peer_subject_cn": return .tlsPeerSubjectCN
        case "tls_peer_issuer": return .tlsPeerIssuer
        case "tls_peer_verified": return .tlsPeerVerified
        case "tls_peer_server_name": return .tlsPeerServerName
        case "null": return .null
        case "af": return .af
        case "au": return .au
        case "ad": return .ad
        case "ar": return .ar
        case "adu": return .adu
        case "aa": return .aa
        case "sht":
            let a = v.argument ?? ""
            guard let arrow = a.range(of: "=>") else { return .sht(table: a, key: []) }
            return .sht(table: String(a[..<arrow.lowerBound]), key: parseFormat(String(a[arrow.upperBound...])))
        default: return .variable(v.name) // unreachable: the checker refused unknown names
        }
    }

    static func keyword(_ k: String) -> Keyword {
        switch k {
        case "method": return .method
        case "uri": return .uri
        case "src_ip": return .srcIP
        case "src_port": return .srcPort
        case "dst_ip": return .dstIP
        case "dst_port": return .dstPort
        case "proto": return .proto
        case "af": return .af
        case "status": return .status
        default: return .myself
        }
    }

    func compile(_ e: SIPConfig.Expression) -> Expr {
        switch e {
        case .string(let s, _): return .string(s)
        case .number(let n, _): return .number(n)
        case .variable(let v): return .pv(CompiledScript.pv(v))
        case .keyword(let k, _): return .keyword(CompiledScript.keyword(k))
        case .call(let c): return .call(compile(c))
        case .not(let x): return .not(compile(x))
        case .and(let a, let b): return .and(compile(a), compile(b))
        case .or(let a, let b): return .or(compile(a), compile(b))
        case .arithmetic(let op, let a, let b, _): return .arithmetic(op, compile(a), compile(b))
        case .compare(let op, let a, let b, _):
            let rhs = compile(b)
            var regex: NSRegularExpression? = nil
            // A literal pattern was checked at load with this same engine
            // (ScriptChecker): nil here only when the right side is not literal.
            if op == "=~" || op == "!~", case .string(let p) = rhs { regex = try? NSRegularExpression(pattern: p) }
            let cop: CompareOp
            switch op {
            case "==": cop = .eq
            case "!=": cop = .ne
            case "<": cop = .lt
            case ">": cop = .gt
            case "<=": cop = .le
            case ">=": cop = .ge
            case "=~": cop = .match(regex)
            default: cop = .notMatch(regex)
            }
            // An address or range compared with src_ip / dst_ip / $si / $Ri.
            if op == "==" || op == "!=", case .string(let text) = rhs, CompiledScript.isAddressOperand(a), let net = IPNetwork(text) {
                return .compare(.inNetwork(net, negated: op == "!="), compile(a), rhs)
            }
            return .compare(cop, compile(a), rhs)
        }
    }

    static func isAddressOperand(_ e: SIPConfig.Expression) -> Bool {
        switch e {
        case .keyword(let k, _): return k == "src_ip" || k == "dst_ip"
        case .variable(let v): return v.name == "si" || v.name == "Ri"
        default: return false
        }
    }

    /// A call of a function the checker did not know (it refused the
    /// config before this is reached): false.
    static let unknownFunction = ScriptFunction("", 0...0, "core") { _, _, _ in -1 }

    func compile(_ c: SIPConfig.Call) -> Call {
        let row = ScriptFunctions.byName[c.name] ?? CompiledScript.unknownFunction
        var args = c.arguments.map(compile)
        let routeArg = row.signature.routeArgument
        for i in args.indices where i != routeArg?.index {
            if case .string(let text) = args[i], text.contains("$") {
                let parts = CompiledScript.parseFormat(text)
                if parts.contains(where: { if case .pv = $0 { return true }; return false }) { args[i] = .format(parts) }
            }
        }
        var call = Call(run: row.run, args: args, routeIndex: nil, format: nil, regex: nil, location: c.location)
        if let ra = routeArg, ra.index < c.arguments.count {
            var name = ""
            switch c.arguments[ra.index] {
            case .string(let s, _): name = s
            case .number(let n, _): name = String(n)
            case .keyword(let k, _): name = k
            default: break
            }
            call.routeIndex = index(ra.kind, name)
        }
        switch row.prepare {
        case .formatLast:
            if case .string(let fmt, _)? = c.arguments.last { call.format = CompiledScript.parseFormat(fmt) }
        case .regexFirst:
            // Compiled here only when literal (no pseudo-variable in it, so
            // checked at load); otherwise made per message from its value.
            if case .string(let p)? = args.first { call.regex = try? NSRegularExpression(pattern: p) }
        case .none: break
        }
        return call
    }

    func compile(_ s: Statement) -> Stmt {
        switch s {
        case .call(let c): return .call(compile(c))
        case .ifElse(let cond, let then, let els): return .ifElse(compile(cond), then.map(compile), (els ?? []).map(compile))
        case .switchCase(let subject, let cases, _): return .switchCase(compile(subject), cases.map { ($0.value.map(compile), $0.body.map(compile)) })
        case .whileLoop(let cond, let body, let loc): return .whileLoop(compile(cond), body.map(compile), loc)
        case .assign(let v, let e): return .assign(CompiledScript.pv(v), compile(e))
        case .drop: return .drop
        case .exit: return .exit
        case .breakLoop: return .breakLoop
        case .returnValue(let e, _): return .returnValue(e.map(compile))
        case .block(let b): return .block(b.map(compile))
        }
    }

    /// Splits an xlog format into text and pseudo-variables (`$ru`, `$hdr(X)`, `$var(y)`).
    static func parseFormat(_ s: String) -> [FormatPart] {
        var parts: [FormatPart] = []
        var text = ""
        let chars = Array(s)
        var i = 0
        while i < chars.count {
            if chars[i] == "$", i + 1 < chars.count, chars[i + 1].isLetter || chars[i + 1] == "(" {
                var j = i + 1
                var name = ""
                var arg: String? = nil
                if chars[j] == "(" {
                    j += 1
                    while j < chars.count, chars[j] != ")" { name.append(chars[j]); j += 1 }
                    j += 1
                } else {
                    while j < chars.count, chars[j].isLetter || chars[j].isNumber || chars[j] == "_" { name.append(chars[j]); j += 1 }
                    if j < chars.count, chars[j] == "(", Builtins.pseudoVariables[name]?.argument == true {
                        j += 1
                        var a = ""
                        while j < chars.count, chars[j] != ")" { a.append(chars[j]); j += 1 }
                        j += 1
                        arg = a
                    }
                }
                if Builtins.pseudoVariables[name] != nil {
                    if !text.isEmpty { parts.append(.text(text)); text = "" }
                    parts.append(.pv(pv(PseudoVariable(name: name, argument: arg, location: SourceLocation(file: "", line: 0, column: 0)))))
                    i = j
                    continue
                }
            }
            text.append(chars[i])
            i += 1
        }
        if !text.isEmpty { parts.append(.text(text)) }
        return parts
    }
}
