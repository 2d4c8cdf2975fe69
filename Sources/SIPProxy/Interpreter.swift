import Foundation
import SIPConfig
import SIPCore
import SIPTransport

/// How a block of statements ended.
enum Flow: Equatable {
    case next
    case drop
    case exit
    case returned(Int)
    case breakLoop
}

extension ProxyCore {
    static let maxSteps = 100_000
    static let maxDepth = 100

    /// Runs a route block; `drop` and `exit` end the whole script run.
    @discardableResult
    func run(block: RouteBlock, _ ctx: MessageContext) -> Flow {
        ctx.depth += 1
        defer { ctx.depth -= 1 }
        guard ctx.depth <= ProxyCore.maxDepth else {
            if metrics.scriptFault(.depthLimit) {
                logger.error("route nesting deeper than \(ProxyCore.maxDepth); stopping the script (logged once; swiftser_script_faults_total{reason=\"max_depth\"} counts them)")
            }
            return .exit
        }
        let script = block.script
        guard script.blocks.indices.contains(block.index) else { return .exit }
        let previous = ctx.routeKind
        let previousScript = ctx.script
        ctx.routeKind = script.blocks[block.index].kind
        ctx.script = script
        defer {
            ctx.routeKind = previous
            ctx.script = previousScript
        }
        return exec(script.blocks[block.index].body, ctx)
    }

    func exec(_ stmts: [CompiledScript.Stmt], _ ctx: MessageContext) -> Flow {
        for s in stmts {
            ctx.steps += 1
            if ctx.steps > ProxyCore.maxSteps { return stepLimit() }
            let f = execOne(s, ctx)
            if f != .next { return f }
        }
        return .next
    }

    /// One message ran more than `maxSteps` statements (and loop rounds): the script stops.
    func stepLimit() -> Flow {
        if metrics.scriptFault(.stepLimit) {
            logger.error("route script ran more than \(ProxyCore.maxSteps) steps on one message; stopping it (logged once; swiftser_script_faults_total{reason=\"max_steps\"} counts them)")
        }
        return .exit
    }

    func execOne(_ s: CompiledScript.Stmt, _ ctx: MessageContext) -> Flow {
        switch s {
        case .call(let c):
            let r = call(c, ctx)
            return r == 0 ? .exit : .next
        case .ifElse(let cond, let then, let els):
            switch condition(cond, ctx) {
            case .none: return .exit
            case .some(true): return exec(then, ctx)
            case .some(false): return exec(els, ctx)
            }
        case .switchCase(let subject, let cases):
            let v = eval(subject, ctx)
            var matched = false
            for (value, body) in cases {
                if !matched {
                    if let value { matched = equal(v, eval(value, ctx)) } else { matched = true }
                }
                if matched {
                    let f = exec(body, ctx)
                    if f == .breakLoop { return .next }
                    if f != .next { return f }
                }
            }
            return .next
        case .whileLoop(let cond, let body, let location):
            // Every round counts, an empty body included: a loop stops after
            // max_while_loops rounds (as Kamailio's does) and the script goes
            // on after it; all rounds of all loops count towards maxSteps.
            let limit = ctx.script?.maxWhileLoops ?? 100
            var rounds = 0
            while true {
                guard let go = condition(cond, ctx) else { return .exit }
                if !go { break }
                if rounds >= limit {
                    if metrics.scriptFault(.whileLoopLimit) {
                        logger.error("while loop at \(location.file):\(location.line):\(location.column) reached max_while_loops (\(limit)) and was stopped (logged once; swiftser_script_faults_total{reason=\"max_while_loops\"} counts them)")
                    }
                    break
                }
                rounds += 1
                ctx.steps += 1
                if ctx.steps > ProxyCore.maxSteps { return stepLimit() }
                let f = exec(body, ctx)
                if f == .breakLoop { break }
                if f != .next { return f }
            }
            return .next
        case .assign(let pv, let e):
            assign(pv, eval(e, ctx), ctx)
            return .next
        case .drop: return .drop
        case .exit: return .exit
        case .breakLoop: return .breakLoop
        case .returnValue(let e): return .returned(e.map { eval($0, ctx).int } ?? 1)
        case .block(let b): return exec(b, ctx)
        }
    }

    /// A condition; nil when a function in it returned 0 (exit).
    func condition(_ e: CompiledScript.Expr, _ ctx: MessageContext) -> Bool? {
        switch e {
        case .call(let c):
            let r = call(c, ctx)
            if r == 0 { return nil }
            return r > 0
        case .not(let x):
            return condition(x, ctx).map { !$0 }
        case .and(let a, let b):
            guard let l = condition(a, ctx) else { return nil }
            return l ? condition(b, ctx) : false
        case .or(let a, let b):
            guard let l = condition(a, ctx) else { return nil }
            return l ? true : condition(b, ctx)
        case .compare(let op, let a, let b):
            return compare(op, a, b, ctx)
        default:
            return eval(e, ctx).truthy
        }
    }

    func equal(_ a: Value, _ b: Value) -> Bool {
        switch (a, b) {
        case (.int(let x), .int(let y)): return x == y
        case (.null, .null): return true
        case (.null, _), (_, .null): return false
        default: return a.string == b.string
        }
    }

    func compare(_ op: CompiledScript.CompareOp, _ a: CompiledScript.Expr, _ b: CompiledScript.Expr, _ ctx: MessageContext) -> Bool {
        // `x == myself`
        if case .keyword(.myself) = b {
            let is_: Bool
            if case .keyword(.uri) = a, !ctx.requestURIRewritten, let u = ctx.checked?.requestURI {
                is_ = isMyself(uri: u)   // parsed by validate(), not rewritten since
            } else {
                is_ = myself(eval(a, ctx).string, lhs: a, ctx)
            }
            if case .ne = op { return !is_ }
            return is_
        }
        let l = eval(a, ctx)
        let r = eval(b, ctx)
        switch op {
        case .eq: return equal(l, r)
        case .ne: return !equal(l, r)
        case .lt, .gt, .le, .ge:
            let (x, y) = (l.int, r.int)
            switch op {
            case .lt: return x < y
            case .gt: return x > y
            case .le: return x <= y
            default: return x >= y
            }
        case .inNetwork(let net, let negated):
            return net.contains(l.string) != negated
        case .match(let re), .notMatch(let re):
            // A literal pattern was compiled at load; one from a variable is
            // compiled now, and one that does not compile makes the
            // comparison false (=~ and !~ alike), counted.
            guard let regex = re ?? runtimeRegex(r.string) else { return false }
            let s = l.string
            let found = regex.firstMatch(in: s, range: NSRange(s.startIndex..., in: s)) != nil
            if case .match = op { return found }
            return !found
        }
    }

    /// A regular expression from a value known only at run time; nil (and
    /// counted, logged the first time with the pattern escaped) when it
    /// does not compile.
    func runtimeRegex(_ pattern: String) -> NSRegularExpression? {
        if let re = try? NSRegularExpression(pattern: pattern) { return re }
        if metrics.scriptFault(.invalidRegex) {
            logger.error("regular expression '\(LogText(String(pattern.prefix(256))))' made at run time does not compile; the test is false (logged once; swiftser_script_faults_total{reason=\"invalid_regex\"} counts them)")
        }
        return nil
    }

    /// `uri == myself`, `$fd == myself`, `src_ip == myself`, …
    func myself(_ value: String, lhs: CompiledScript.Expr, _ ctx: MessageContext) -> Bool {
        if let u = try? SIPURI.parse(value) { return isMyself(uri: u) }
        if let hp = ProxyCore.splitHostPort(value) { return isMyself(host: hp.0, port: hp.1) }
        return false
    }

    func eval(_ e: CompiledScript.Expr, _ ctx: MessageContext) -> Value {
        switch e {
        case .string(let s): return .str(s)
        case .number(let n): return .int(n)
        case .pv(let pv): return get(pv, ctx)
        case .keyword(let k): return keyword(k, ctx)
        case .call(let c): return .int(call(c, ctx))
        case .format(let parts): return .str(format(parts, ctx))
        case .not(let x): return .int(condition(x, ctx) == true ? 0 : 1)
        case .and, .or, .compare: return .int(condition(e, ctx) == true ? 1 : 0)
        case .arithmetic(let op, let a, let b):
            let l = eval(a, ctx), r = eval(b, ctx)
            if op == "+", case .str = l { return .str(l.string + r.string) }
            if op == "+", case .str = r { return .str(l.string + r.string) }
            return .int(arithmetic(op, l.int, r.int))
        }
    }

    /// Integer arithmetic that cannot trap, whatever a message brings:
    /// + - * wrap around (two's complement, as C's int does in Kamailio in
    /// practice); `/` and `%` by zero give 0, counted as
    /// `division_by_zero` (Kamailio logs an error and fails the
    /// expression); `Int.min / -1` wraps to Int.min and `Int.min % -1`
    /// gives 0, counted as `overflow`.
    func arithmetic(_ op: String, _ x: Int, _ y: Int) -> Int {
        switch op {
        case "+": return x &+ y
        case "-": return x &- y
        case "*": return x &* y
        case "/", "%":
            if y == 0 {
                if metrics.scriptFault(.divisionByZero) {
                    logger.error("division by zero in the route script; the result is 0 (logged once; swiftser_script_faults_total{reason=\"division_by_zero\"} counts them)")
                }
                return 0
            }
            let r = op == "/" ? x.dividedReportingOverflow(by: y) : x.remainderReportingOverflow(dividingBy: y)
            if r.overflow, metrics.scriptFault(.overflow) {
                logger.error("integer overflow in the route script (\(x) \(op) \(y)); the result wraps (logged once; swiftser_script_faults_total{reason=\"overflow\"} counts them)")
            }
            return r.partialValue
        case "|": return x | y
        default: return x & y
        }
    }

    func keyword(_ k: CompiledScript.Keyword, _ ctx: MessageContext) -> Value {
        let r = ctx.received
        switch k {
        case .method: return .str(methodName(ctx.received.message))
        case .uri: return .str(requestURIText(ctx.message) ?? "")
        case .srcIP: return .str(r.sourceIP)
        case .srcPort: return .int(r.sourcePort)
        case .dstIP: return .str(r.listener.host)
        case .dstPort: return .int(Int(r.listener.port))
        case .proto: return .str(r.proto.rawValue)
        case .af: return .str(r.source.protocol == .inet6 ? "INET6" : "INET")
        case .status: return ctx.status.map { .int($0) } ?? (statusOf(ctx.message).map { .int($0) } ?? .null)
        case .myself: return .str("")
        }
    }

    // MARK: Pseudo-variables

    func get(_ pv: CompiledScript.PV, _ ctx: MessageContext) -> Value {
        let m = ctx.message
        func uriPart(_ s: String?, _ part: (SIPURI) -> String?) -> Value {
            guard let s, let u = try? SIPURI.parse(s) else { return .null }
            return part(u).map { .str($0) } ?? .null
        }
        switch pv {
        case .ru: return requestURIText(m).map { .str($0) } ?? .null
        case .rU: return uriPart(requestURIText(m)) { $0.user }
        case .rd: return uriPart(requestURIText(m)) { $0.host }
        case .rp: return uriPart(requestURIText(m)) { u in u.port.map(String.init) ?? "5060" }
        case .fu: return ((try? m.from()) ?? nil).map { .str($0.uri.description) } ?? .null
        case .fU: return ((try? m.from()) ?? nil)?.uri.user.map { .str($0) } ?? .null
        case .fd: return ((try? m.from()) ?? nil).map { .str($0.uri.host) } ?? .null
        case .tu: return ((try? m.to()) ?? nil).map { .str($0.uri.description) } ?? .null
        case .tU: return ((try? m.to()) ?? nil)?.uri.user.map { .str($0) } ?? .null
        case .td: return ((try? m.to()) ?? nil).map { .str($0.uri.host) } ?? .null
        case .ci: return m.callID.map { .str($0) } ?? .null
        case .cs: return ((try? m.cseq()) ?? nil).map { .int(Int($0.number)) } ?? .null
        case .rm: return .str(methodName(m))
        case .rs: return ctx.status.map { .int($0) } ?? (statusOf(m).map { .int($0) } ?? .null)
        case .rr: return reasonOf(m).map { .str($0) } ?? .null
        case .si: return .str(ctx.received.sourceIP)
        case .sp: return .int(ctx.received.sourcePort)
        case .Ri: return .str(ctx.received.listener.host)
        case .Rp: return .int(Int(ctx.received.listener.port))
        case .pr: return .str(ctx.received.proto.rawValue)
        case .du: return ctx.destinationURI.map { .str($0) } ?? .null
        case .ua: return m.header(.userAgent).map { .str($0.valueString) } ?? .null
        case .mb: return .str(ASCII_string(m.serialized()))
        case .ml: return .int(m.serialized().count)
        case .hdr(let name): return m.header(named: name).map { .str($0.valueString) } ?? .null
        case .variable(let n): return ctx.vars[n] ?? .int(0)
        case .avp(let n): return ctx.avps[n] ?? .null
        case .tlsVersion: return ctx.received.tls?.version.map { .str($0) } ?? .null
        case .tlsCipher: return ctx.received.tls?.cipher.map { .str($0) } ?? .null
        case .tlsPeerSubject: return ctx.received.tls?.peerSubject.map { .str($0) } ?? .null
        case .tlsPeerSubjectCN: return ctx.received.tls?.peerSubjectCN.map { .str($0) } ?? .null
        case .tlsPeerIssuer: return ctx.received.tls?.peerIssuer.map { .str($0) } ?? .null
        case .tlsPeerVerified: return .int(ctx.received.tls?.peerVerified == true ? 1 : 0)
        case .tlsPeerServerName: return ctx.received.tls?.serverName.map { .str($0) } ?? .null
        case .null: return .null
        case .af: return .str(ctx.received.source.protocol == .inet6 ? "INET6" : "INET")
        case .au: return authPV(ctx) { $0.user }
        case .ad: return authPV(ctx) { $0.domain ?? $0.realm }
        case .ar: return authPV(ctx) { $0.realm }
        case .adu: return authPV(ctx) { $0.uri }
        case .aa: return authPV(ctx) { $0.algorithm.rawValue }
        case .sht(let table, let key): return htables[table]?.get(format(key, ctx)) ?? .null
        }
    }

    @inline(never)
    func authPV(_ ctx: MessageContext, _ part: (DigestCredentials) -> String) -> Value {
        credentialsForPV(ctx).map { .str(part($0)) } ?? .null
    }

    func assign(_ pv: CompiledScript.PV, _ v: Value, _ ctx: MessageContext) {
        switch pv {
        case .variable(let n): ctx.vars[n] = v
        case .avp(let n): ctx.avps[n] = v
        case .du: ctx.destinationURI = v == .null ? nil : v.string
        case .sht(let table, let key):
            guard let t = htables[table] else { return }
            let k = format(key, ctx)
            if v == .null {
                t.remove(k)
            } else if !t.set(k, v) {
                logger.warning("htable \(table) is full (\(t.capacity) entries); a key was not stored")
            }
        case .ru:
            if ctx.message.isRequest { ctx.message.setRequestURI(v.string) }
        case .rU, .rd, .rp:
            guard ctx.message.isRequest, let s = ctx.message.requestURIString, var u = try? SIPURI.parse(s) else { return }
            switch pv {
            case .rU: u.user = v == .null ? nil : v.string
            case .rd: u.host = v.string
            default: u.port = UInt16(v.string)
            }
            ctx.message.setRequestURI(u.description)
        default:
            logger.warning("assignment to a read-only pseudo-variable ignored")
        }
    }

    /// Expands a format (an xlog line, a `$sht` key, an argument with
    /// pseudo-variables). `escaped`: for a log line, the values (from the
    /// message, the peer, the script's variables) have CR, LF, ESC and the
    /// other control characters written as `\xHH` (`LogText`); the
    /// script's own text is kept as written.
    func format(_ parts: [CompiledScript.FormatPart], _ ctx: MessageContext, escaped: Bool = false) -> String {
        var s = ""
        for p in parts {
            switch p {
            case .text(let t): s += t
            case .pv(let pv): s += escaped ? LogText.escaped(get(pv, ctx).printable) : get(pv, ctx).printable
            }
        }
        return s
    }
}

func ASCII_string(_ b: [UInt8]) -> String { String(decoding: b, as: UTF8.self) }

// Start-line accessors kept out of line: inlined into the large switch of
// `get`, they crashed the release compiler's ownership verifier (Swift 6.3.1).

/// The request method, or for a response the method of its CSeq.
@inline(never)
func requestURIText(_ m: SIPMessage) -> String? { m.requestURIString }

@inline(never)
func statusOf(_ m: SIPMessage) -> Int? { m.statusCode }

@inline(never)
func reasonOf(_ m: SIPMessage) -> String? { m.reasonPhrase }

@inline(never)
func methodName(_ m: SIPMessage) -> String {
    if case .request(let method, _) = m.startLine { return method.name }
    if let cseq = try? m.cseq() { return cseq.method.name }
    return ""
}
