import Foundation

/// Checks the route script at load: functions exist and get the right
/// number of arguments, their module is loaded, pseudo-variables exist and
/// are assignable where assigned, named routes exist, route() calls do not
/// recurse, `break` stands in a loop or switch, literal reply codes are
/// valid, and literal regular expressions compile. What it knows of each
/// function comes from `functions` (SIPProxy's table of script functions).
struct ScriptChecker {
    let config: Config
    let functions: FunctionCatalogue
    let sourceLine: (SourceLocation) -> String?

    func check(into diagnostics: inout [ConfigDiagnostic]) {
        var out: [ConfigDiagnostic] = []
        func error(_ loc: SourceLocation, _ message: String) {
            out.append(ConfigDiagnostic(.error, loc, message, sourceLine: sourceLine(loc)))
        }
        let script = config.script
        if script.main == nil {
            error(SourceLocation(file: config.file, line: 1, column: 1), "no request route: add 'request_route { … }' (or 'route { … }')")
        }
        let loaded = Set(config.modules)
        let enforceModules = !loaded.isEmpty
        var calls: [String: [(String, SourceLocation)]] = [:]

        func checkVariable(_ v: PseudoVariable, assigning: Bool) {
            guard let spec = Builtins.pseudoVariables[v.name] else {
                error(v.location, "unknown pseudo-variable '$\(v.name)'")
                return
            }
            if spec.argument && (v.argument ?? "").isEmpty {
                error(v.location, "$\(v.name) needs a name in parentheses, e.g. $\(v.name)(x)")
            } else if !spec.argument && v.argument != nil {
                error(v.location, "$\(v.name) takes no argument")
            }
            if assigning && !spec.assignable {
                error(v.location, "$\(v.name) cannot be assigned; assignable are $ru, $rU, $rd, $rp, $du, $var(…), $avp(…), $sht(…)")
            }
            if v.name == "sht", let a = v.argument, !a.isEmpty {
                if let arrow = a.range(of: "=>"), !a[arrow.upperBound...].isEmpty {
                    let table = String(a[..<arrow.lowerBound])
                    if !config.htables.contains(where: { $0.name == table }) {
                        error(v.location, "$sht(\(a)): there is no htable '\(table)'; declare it with modparam(\"htable\", \"htable\", \"\(table)=>size=8;\")")
                    }
                } else {
                    error(v.location, "$sht needs table=>key, e.g. $sht(ipban=>$si)")
                }
            }
        }

        // The engine the proxy matches with (ICU, through Foundation): a
        // pattern accepted here is one the proxy can use.
        func checkRegex(_ pattern: String, _ loc: SourceLocation) {
            if (try? NSRegularExpression(pattern: pattern)) == nil {
                error(loc, "regular expression '\(pattern)' does not compile")
            }
        }

        func checkCall(_ c: Call, in block: RouteScript.Block) {
            guard let f = functions[c.name] else {
                error(c.location, "unknown function '\(c.name)'")
                return
            }
            if c.arguments.count < f.minArgs || c.arguments.count > f.maxArgs {
                let want = f.minArgs == f.maxArgs ? "\(f.minArgs)" : "\(f.minArgs) to \(f.maxArgs)"
                error(c.location, "\(c.name) takes \(want) argument\(f.maxArgs == 1 ? "" : "s"), given \(c.arguments.count)")
            }
            // A request-route block may be called from any kind (route(X));
            // a call written in another kind of block is checked here.
            if let allowed = f.routes, block.kind != .request, !allowed.contains(block.kind) {
                let names = RouteScript.Kind.allCases.filter { allowed.contains($0) }.map(\.rawValue).joined(separator: ", ")
                error(c.location, "\(c.name) cannot be used in \(block.kind.rawValue); it may be used in \(names)")
            }
            if enforceModules && f.module != "core" && !loaded.contains(f.module) {
                error(c.location, "\(c.name) needs loadmodule \"\(f.module).so\"")
            }
            if let ra = f.routeArgument, ra.index < c.arguments.count {
                var name: String? = nil
                switch c.arguments[ra.index] {
                case .string(let s, _): name = s
                case .number(let n, _): name = String(n)
                case .keyword(let k, _): name = k
                default: error(c.arguments[ra.index].location, "\(c.name) needs a route name")
                }
                if let name {
                    if script.block(ra.kind, name) == nil {
                        error(c.location, "\(c.name)(\(name)): there is no \(ra.kind.rawValue)[\(name)]")
                    } else if ra.kind == .request {
                        calls[block.name, default: []].append((name, c.location))
                    }
                }
            }
            for rule in f.rules {
                switch rule {
                case .replyCode(let i) where i < c.arguments.count:
                    var code: Int? = nil
                    if case .number(let n, _) = c.arguments[i] { code = n }
                    if case .string(let s, _) = c.arguments[i] { code = Int(s) ?? -1 }
                    if let code, !(100...699).contains(code) {
                        error(c.arguments[i].location, "reply code must be between 100 and 699")
                    }
                case .oneOf(let i, let values, let count) where c.arguments.count == count && i < count:
                    if case .string(let v, let loc) = c.arguments[i], !values.contains(v) {
                        error(loc, "\(c.name) argument \(i + 1) must be one of \(values.joined(separator: ", "))")
                    }
                case .regex(let i) where i < c.arguments.count:
                    if case .string(let pattern, let loc) = c.arguments[i], !Builtins.mentionsPseudoVariable(pattern) {
                        checkRegex(pattern, loc)
                    }
                default: break
                }
            }
            for a in c.arguments { checkExpression(a, in: block) }
        }

        func checkExpression(_ e: Expression, in block: RouteScript.Block) {
            switch e {
            case .variable(let v): checkVariable(v, assigning: false)
            case .call(let c): checkCall(c, in: block)
            case .not(let x): checkExpression(x, in: block)
            case .and(let a, let b), .or(let a, let b), .arithmetic(_, let a, let b, _):
                checkExpression(a, in: block)
                checkExpression(b, in: block)
            case .compare(let op, let a, let b, let loc):
                checkExpression(a, in: block)
                checkExpression(b, in: block)
                if op == "=~" || op == "!~", case .string(let pattern, let ploc) = b {
                    checkRegex(pattern, ploc)
                }
                _ = loc
            case .string, .number, .keyword: break
            }
        }

        func checkStatements(_ body: [Statement], in block: RouteScript.Block, loopDepth: Int) {
            for s in body {
                switch s {
                case .call(let c): checkCall(c, in: block)
                case .ifElse(let cond, let then, let els):
                    checkExpression(cond, in: block)
                    checkStatements(then, in: block, loopDepth: loopDepth)
                    if let els { checkStatements(els, in: block, loopDepth: loopDepth) }
                case .switchCase(let subject, let cases, _):
                    checkExpression(subject, in: block)
                    for c in cases {
                        if let v = c.value { checkExpression(v, in: block) }
                        checkStatements(c.body, in: block, loopDepth: loopDepth + 1)
                    }
                case .whileLoop(let cond, let body, _):
                    checkExpression(cond, in: block)
                    checkStatements(body, in: block, loopDepth: loopDepth + 1)
                case .assign(let v, let e):
                    checkVariable(v, assigning: true)
                    checkExpression(e, in: block)
                case .breakLoop(let loc):
                    if loopDepth == 0 { error(loc, "'break' outside a while loop or switch") }
                case .block(let inner): checkStatements(inner, in: block, loopDepth: loopDepth)
                case .drop, .exit, .returnValue: break
                }
            }
        }

        for b in script.blocks { checkStatements(b.body, in: b, loopDepth: 0) }

        // route() recursion: a cycle in the call graph between request routes.
        var state: [String: Int] = [:] // 1 visiting, 2 done
        func visit(_ name: String) {
            state[name] = 1
            for (callee, loc) in calls[name] ?? [] {
                if state[callee] == 1 {
                    error(loc, "route(\(callee)) recurses: route[\(callee)] is already being run on this path")
                } else if state[callee] == nil {
                    visit(callee)
                }
            }
            state[name] = 2
        }
        for b in script.blocks where b.kind == .request && state[b.name] == nil { visit(b.name) }
        diagnostics.append(contentsOf: out)
    }
}
