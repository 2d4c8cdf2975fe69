/// Finds a script that relays requests without ever authenticating them or
/// checking where they come from: an open relay. `swiftser check` and the
/// proxy's start print the warning; `Config.openRelay` records it.
/// Which functions relay and which authenticate comes from their
/// signatures' roles.
struct RelayCheck {
    /// Operands that check the source of a request.
    static let sourceKeywords: Set<String> = ["src_ip"]
    static let sourceVariables: Set<String> = ["si", "tls_peer_verified"]

    /// The first relaying call when nothing in the script authenticates or
    /// checks a source; nil otherwise.
    static func openRelay(_ script: RouteScript, functions: FunctionCatalogue) -> SourceLocation? {
        var relay: SourceLocation?
        var guarded = false
        func visitExpr(_ e: Expression) {
            switch e {
            case .call(let c): visitCall(c)
            case .keyword(let k, _): if sourceKeywords.contains(k) { guarded = true }
            case .variable(let v): if sourceVariables.contains(v.name) { guarded = true }
            case .not(let x): visitExpr(x)
            case .and(let a, let b), .or(let a, let b), .compare(_, let a, let b, _), .arithmetic(_, let a, let b, _):
                visitExpr(a)
                visitExpr(b)
            case .string, .number: break
            }
        }
        func visitCall(_ c: Call) {
            let roles = functions[c.name]?.roles ?? []
            if roles.contains(.authenticates) { guarded = true }
            if roles.contains(.relays), relay == nil { relay = c.location }
            for a in c.arguments { visitExpr(a) }
        }
        func visitBody(_ body: [Statement]) {
            for s in body {
                switch s {
                case .call(let c): visitCall(c)
                case .ifElse(let cond, let then, let els):
                    visitExpr(cond)
                    visitBody(then)
                    if let els { visitBody(els) }
                case .switchCase(let subject, let cases, _):
                    visitExpr(subject)
                    for c in cases {
                        if let v = c.value { visitExpr(v) }
                        visitBody(c.body)
                    }
                case .whileLoop(let cond, let body, _):
                    visitExpr(cond)
                    visitBody(body)
                case .assign(_, let e): visitExpr(e)
                case .returnValue(let e, _): if let e { visitExpr(e) }
                case .block(let b): visitBody(b)
                case .drop, .exit, .breakLoop: break
                }
            }
        }
        for b in script.blocks where b.kind == .request || b.kind == .branch { visitBody(b.body) }
        return guarded ? nil : relay
    }
}
