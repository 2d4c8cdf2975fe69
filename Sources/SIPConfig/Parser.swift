/// A global or domain assignment as written: `name = value`.
struct Assignment {
    var name: String
    var nameLocation: SourceLocation
    /// The value tokens (one line, up to `;`).
    var tokens: [Token]
    var valueLocation: SourceLocation

    /// The value as text: quoted strings unquoted, tokens joined as written.
    var text: String {
        var s = ""
        for (i, t) in tokens.enumerated() {
            if i > 0 && t.spaceBefore { s += " " }
            switch t.kind {
            case .string(let v): s += v
            case .identifier(let v): s += v
            case .number(let n): s += String(n)
            case .punct(let p): s += p
            case .pseudoVariable: s += t.description
            case .end: break
            }
        }
        return s
    }

    var isQuotedString: Bool {
        if tokens.count == 1, case .string = tokens[0].kind { return true }
        return false
    }
}

/// A `tls_domain[…] { … }` block or a `[server:…]` profile section.
struct DomainBlock {
    var role: TLSDomainRole
    var address: HostPort?
    var location: SourceLocation
    var assignments: [Assignment]
}

/// Recursive-descent parser over the token stream. It records errors and
/// resynchronises, so one run reports every syntax error it can.
struct Parser {
    var tokens: [Token]
    var pos = 0
    var diagnostics: [ConfigDiagnostic] = []
    /// The script functions: which argument of each names a route.
    let functions: FunctionCatalogue
    let sourceLine: (SourceLocation) -> String?

    // Results
    var globals: [Assignment] = []
    var domains: [DomainBlock] = []
    var modules: [(String, SourceLocation)] = []
    var modparams: [(module: String, name: String, value: Assignment)] = []
    var script = RouteScript()

    init(tokens: [Token], functions: FunctionCatalogue, sourceLine: @escaping (SourceLocation) -> String?) {
        self.tokens = tokens
        self.functions = functions
        self.sourceLine = sourceLine
    }

    struct Bail: Error {}

    var current: Token { tokens[pos] }
    var previous: Token { tokens[max(0, pos - 1)] }

    mutating func advance() { if pos < tokens.count - 1 { pos += 1 } }
    /// The kind of the token `k` places ahead, if any.
    func peekKind(_ k: Int) -> Token.Kind? { pos + k < tokens.count ? tokens[pos + k].kind : nil }

    /// Four dot-separated decimal numbers 0–255: an IPv4 address the lexer
    /// made into one identifier.
    static func isIPv4Literal(_ w: String) -> Bool {
        let parts = w.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts.allSatisfy { p in !p.isEmpty && p.count <= 3 && p.allSatisfy(\.isASCII) && p.allSatisfy(\.isNumber) && (Int(p) ?? 256) <= 255 }
    }

    mutating func error(_ loc: SourceLocation, _ message: String) -> Bail {
        diagnostics.append(ConfigDiagnostic(.error, loc, message, sourceLine: sourceLine(loc)))
        return Bail()
    }

    mutating func expectPunct(_ p: String, _ what: String) throws(Bail) {
        guard current.isPunct(p) else { throw error(current.location, "expected '\(p)' \(what), found '\(current)'") }
        advance()
    }

    mutating func acceptPunct(_ p: String) -> Bool {
        if current.isPunct(p) { advance(); return true }
        return false
    }

    // MARK: Top level

    mutating func parseConfig() {
        while current.kind != .end {
            let start = pos
            do {
                try topLevel()
            } catch {
                // Resynchronise: skip to the next line start or statement end.
                if pos == start { advance() }
                let line = tokens[start].location.line
                while current.kind != .end, current.location.line == line || !(current.spaceBefore), !current.isPunct("}") {
                    if current.isPunct(";") { advance(); break }
                    advance()
                }
                if current.isPunct("}") { advance() }
            }
        }
    }

    mutating func topLevel() throws(Bail) {
        let tok = current
        guard case .identifier(let word) = tok.kind else {
            if tok.isPunct(";") { advance(); return }
            throw error(tok.location, "expected a parameter, loadmodule, modparam or a route block, found '\(tok)'")
        }
        switch word {
        case "loadmodule":
            advance()
            guard case .string(let path) = current.kind else { throw error(current.location, "loadmodule needs a module name in quotes") }
            let loc = current.location
            advance()
            _ = acceptPunct(";")
            var name = path.split(separator: "/").last.map(String.init) ?? path
            if name.hasSuffix(".so") { name.removeLast(3) }
            guard Builtins.modules.contains(name) else {
                throw error(loc, "module '\(name)' is not provided by SwiftSER; the modules it provides natively are: \(Builtins.modules.sorted().joined(separator: ", "))")
            }
            modules.append((name, loc))
        case "loadpath", "mpath":
            advance()
            if current.isPunct("=") { advance() }
            guard case .string = current.kind else { throw error(current.location, "\(word) needs a folder in quotes") }
            advance()
            _ = acceptPunct(";")
        case "modparam":
            try parseModparam()
        case "tls_domain", "tls_server_domain", "tls_client_domain":
            try parseDomain(word)
        case "route", "request_route", "onreply_route", "reply_route", "failure_route", "branch_route":
            try parseRouteBlock(word)
        case "event_route":
            throw error(tok.location, "event_route is not supported by SwiftSER")
        default:
            advance()
            guard current.isPunct("=") else {
                throw error(current.location, "expected '=' after '\(word)', found '\(current)'")
            }
            let eq = current
            advance()
            globals.append(try parseValue(name: word, nameLocation: tok.location, after: eq))
        }
    }

    /// Reads value tokens up to `;` or the end of the line.
    mutating func parseValue(name: String, nameLocation: SourceLocation, after eq: Token) throws(Bail) -> Assignment {
        var toks: [Token] = []
        let line = eq.location.line
        let file = eq.location.file
        while current.kind != .end, current.location.line == line, current.location.file == file, !current.isPunct(";"), !current.isPunct("}") {
            toks.append(current)
            advance()
        }
        _ = acceptPunct(";")
        guard let first = toks.first else { throw error(eq.location, "'\(name) =' needs a value") }
        return Assignment(name: name, nameLocation: nameLocation, tokens: toks, valueLocation: first.location)
    }

    mutating func parseModparam() throws(Bail) {
        advance()
        try expectPunct("(", "after modparam")
        guard case .string(let module) = current.kind else { throw error(current.location, "modparam needs the module name in quotes") }
        let moduleLoc = current.location
        advance()
        try expectPunct(",", "after the module name")
        guard case .string(let name) = current.kind else { throw error(current.location, "modparam needs the parameter name in quotes") }
        let nameLoc = current.location
        advance()
        try expectPunct(",", "after the parameter name")
        let valueTok = current
        switch valueTok.kind {
        case .string, .number: advance()
        default: throw error(valueTok.location, "modparam value must be a string in quotes or a number")
        }
        try expectPunct(")", "to close modparam")
        _ = acceptPunct(";")
        guard Builtins.modules.contains(module) else {
            throw error(moduleLoc, "modparam for module '\(module)', which SwiftSER does not provide")
        }
        modparams.append((module, name, Assignment(name: name, nameLocation: nameLoc, tokens: [valueTok], valueLocation: valueTok.location)))
    }

    /// `[host:port]` with an IPv4 address, a name or a bracketed IPv6 address.
    mutating func parseBracketedHostPort() throws(Bail) -> HostPort {
        try expectPunct("[", "before the domain address")
        var toks: [Token] = []
        var depth = 1
        while current.kind != .end {
            if current.isPunct("[") { depth += 1 }
            if current.isPunct("]") { depth -= 1; if depth == 0 { break } }
            toks.append(current)
            advance()
        }
        let loc = toks.first?.location ?? current.location
        try expectPunct("]", "after the domain address")
        let text = Assignment(name: "", nameLocation: loc, tokens: toks, valueLocation: loc).text.replacingOccurrences(of: " ", with: "")
        guard let hp = HostPortParser.parse(text, defaultPort: nil), let port = hp.port else {
            throw error(loc, "expected IP:port inside [], found '\(text)'")
        }
        return HostPort(host: hp.host, port: port)
    }

    mutating func parseDomain(_ word: String) throws(Bail) {
        let loc = current.location
        advance()
        let role: TLSDomainRole = word == "tls_client_domain" ? .client : .server
        var address: HostPort? = nil
        if current.isPunct("[") {
            address = try parseBracketedHostPort()
        } else if word == "tls_domain" {
            throw error(current.location, "tls_domain needs an address: tls_domain[IP:port] { … }")
        }
        try expectPunct("{", "to open the \(word) block")
        var assignments: [Assignment] = []
        while !current.isPunct("}") {
            if current.kind == .end { throw error(loc, "\(word) block is never closed with '}'") }
            if acceptPunct(";") { continue }
            guard case .identifier(let name) = current.kind else {
                throw error(current.location, "expected a TLS parameter in the \(word) block, found '\(current)'")
            }
            let nameLoc = current.location
            advance()
            guard current.isPunct("=") else { throw error(current.location, "expected '=' after '\(name)'") }
            let eq = current
            advance()
            assignments.append(try parseValue(name: name, nameLocation: nameLoc, after: eq))
        }
        advance()
        domains.append(DomainBlock(role: role, address: address, location: loc, assignments: assignments))
    }

    // MARK: Routes

    mutating func parseRouteBlock(_ word: String) throws(Bail) {
        let loc = current.location
        advance()
        let kind: RouteScript.Kind
        switch word {
        case "route", "request_route": kind = .request
        case "onreply_route", "reply_route": kind = .reply
        case "failure_route": kind = .failure
        default: kind = .branch
        }
        var name = ""
        if current.isPunct("[") {
            advance()
            switch current.kind {
            case .identifier(let s), .string(let s): name = s
            case .number(let n): name = n == 0 ? "" : String(n)
            default: throw error(current.location, "expected a route name inside []")
            }
            advance()
            try expectPunct("]", "after the route name")
        }
        if (kind == .failure || kind == .branch) && name.isEmpty {
            throw error(loc, "\(word) needs a name: \(word)[NAME] { … }")
        }
        if script.block(kind, name) != nil {
            throw error(loc, "\(word)\(name.isEmpty ? "" : "[\(name)]") is defined twice")
        }
        let body = try parseBlockBody()
        script.blocks.append(RouteScript.Block(kind: kind, name: name, body: body, location: loc))
    }

    /// `{ statements }`
    mutating func parseBlockBody() throws(Bail) -> [Statement] {
        let open = current.location
        try expectPunct("{", "to open a block")
        var out: [Statement] = []
        while !current.isPunct("}") {
            if current.kind == .end { throw error(open, "block is never closed with '}'") }
            let start = pos
            do {
                if let s = try parseStatement() { out.append(s) }
            } catch {
                // Skip to the end of the statement and go on.
                if pos == start { advance() }
                while current.kind != .end, !current.isPunct(";"), !current.isPunct("}") { advance() }
                _ = acceptPunct(";")
            }
        }
        advance()
        return out
    }

    /// A statement, or a block in braces for `if`/`else` bodies.
    mutating func parseBody() throws(Bail) -> [Statement] {
        if current.isPunct("{") { return try parseBlockBody() }
        return try parseStatement().map { [$0] } ?? []
    }

    mutating func parseStatement() throws(Bail) -> Statement? {
        let tok = current
        if acceptPunct(";") { return nil }
        if tok.isPunct("{") { return .block(try parseBlockBody()) }
        if case .pseudoVariable(let name, let arg) = tok.kind {
            advance()
            let v = PseudoVariable(name: name, argument: arg, location: tok.location)
            try expectPunct("=", "in an assignment to \(v)")
            let e = try parseExpression()
            try expectStatementEnd()
            return .assign(v, e)
        }
        guard case .identifier(let word) = tok.kind else {
            throw error(tok.location, "expected a statement, found '\(tok)'")
        }
        switch word {
        case "if":
            advance()
            try expectPunct("(", "after if")
            let cond = try parseExpression()
            try expectPunct(")", "to close the if condition")
            let then = try parseBody()
            var els: [Statement]? = nil
            if current.isIdentifier("else") {
                advance()
                els = try parseBody()
            }
            return .ifElse(cond, then, els)
        case "while":
            advance()
            try expectPunct("(", "after while")
            let cond = try parseExpression()
            try expectPunct(")", "to close the while condition")
            return .whileLoop(cond, try parseBody(), tok.location)
        case "switch":
            advance()
            try expectPunct("(", "after switch")
            let subject = try parseExpression()
            try expectPunct(")", "to close the switch subject")
            try expectPunct("{", "to open the switch")
            var cases: [SwitchCase] = []
            while !current.isPunct("}") {
                if current.kind == .end { throw error(tok.location, "switch is never closed with '}'") }
                var value: Expression? = nil
                if current.isIdentifier("case") {
                    advance()
                    value = try parsePrimary()
                } else if current.isIdentifier("default") {
                    advance()
                } else {
                    throw error(current.location, "expected 'case' or 'default' in switch, found '\(current)'")
                }
                try expectPunct(":", "after the case value")
                var body: [Statement] = []
                while !current.isIdentifier("case"), !current.isIdentifier("default"), !current.isPunct("}") {
                    if current.kind == .end { break }
                    if let s = try parseStatement() { body.append(s) }
                }
                cases.append(SwitchCase(value: value, body: body))
            }
            advance()
            return .switchCase(subject, cases, tok.location)
        case "drop":
            advance()
            try expectStatementEnd(optional: true)
            return .drop(tok.location)
        case "exit":
            advance()
            try expectStatementEnd(optional: true)
            return .exit(tok.location)
        case "break":
            advance()
            try expectStatementEnd(optional: true)
            return .breakLoop(tok.location)
        case "return":
            advance()
            var value: Expression? = nil
            if !current.isPunct(";") && !current.isPunct("}") { value = try parseExpression() }
            try expectStatementEnd(optional: true)
            return .returnValue(value, tok.location)
        default:
            advance()
            guard current.isPunct("(") else {
                throw error(current.location, "expected '(' after function name '\(word)'")
            }
            let call = try parseCallArguments(name: word, location: tok.location)
            try expectStatementEnd()
            return .call(call)
        }
    }

    mutating func expectStatementEnd(optional: Bool = false) throws(Bail) {
        if acceptPunct(";") { return }
        if current.isPunct("}") { return }
        if optional && current.location.line != previous.location.line { return }
        throw error(current.location, "expected ';' after the statement, found '\(current)'")
    }

    mutating func parseCallArguments(name: String, location: SourceLocation) throws(Bail) -> Call {
        try expectPunct("(", "after \(name)")
        var args: [Expression] = []
        let routeArg = functions[name]?.routeArgument?.index
        if !current.isPunct(")") {
            repeat {
                // route(NAME), t_on_failure(NAME): a bare name is the route's name.
                if args.count == routeArg, case .identifier(let word) = current.kind,
                   tokens[pos + 1].isPunct(")") || tokens[pos + 1].isPunct(",") {
                    args.append(.string(word, current.location))
                    advance()
                } else {
                    args.append(try parseExpression())
                }
            } while acceptPunct(",")
        }
        try expectPunct(")", "to close the arguments of \(name)")
        return Call(name: name, arguments: args, location: location)
    }

    // MARK: Expressions (lowest precedence first)

    mutating func parseExpression() throws(Bail) -> Expression { try parseOr() }

    mutating func parseOr() throws(Bail) -> Expression {
        var e = try parseAnd()
        while acceptPunct("||") { e = .or(e, try parseAnd()) }
        return e
    }

    mutating func parseAnd() throws(Bail) -> Expression {
        var e = try parseNot()
        while acceptPunct("&&") { e = .and(e, try parseNot()) }
        return e
    }

    mutating func parseNot() throws(Bail) -> Expression {
        if acceptPunct("!") { return .not(try parseNot()) }
        return try parseComparison()
    }

    mutating func parseComparison() throws(Bail) -> Expression {
        let e = try parseAdditive()
        for op in ["==", "!=", "=~", "!~", "<=", ">=", "<", ">"] where current.isPunct(op) {
            let loc = current.location
            advance()
            // `uri == myself` and friends
            return .compare(op, e, try parseAdditive(), loc)
        }
        // A single '=' in a condition is a common mistake: say so.
        if current.isPunct("=") {
            throw error(current.location, "'=' is an assignment; compare with '=='")
        }
        return e
    }

    mutating func parseAdditive() throws(Bail) -> Expression {
        var e = try parseMultiplicative()
        while let op = ["+", "-", "|", "&"].first(where: { current.isPunct($0) }) {
            let loc = current.location
            advance()
            e = .arithmetic(op, e, try parseMultiplicative(), loc)
        }
        return e
    }

    mutating func parseMultiplicative() throws(Bail) -> Expression {
        var e = try parsePrimary()
        while let op = ["*", "/", "%"].first(where: { current.isPunct($0) }) {
            let loc = current.location
            advance()
            e = .arithmetic(op, e, try parsePrimary(), loc)
        }
        return e
    }

    mutating func parsePrimary() throws(Bail) -> Expression {
        let tok = current
        switch tok.kind {
        case .string(let s):
            advance()
            return .string(s, tok.location)
        case .number(let n):
            advance()
            return .number(n, tok.location)
        case .punct("-"):
            advance()
            guard case .number(let n) = current.kind else { throw error(current.location, "expected a number after '-'") }
            advance()
            return .number(-n, tok.location)
        case .pseudoVariable(let name, let arg):
            advance()
            return .variable(PseudoVariable(name: name, argument: arg, location: tok.location))
        case .punct("("):
            advance()
            let e = try parseExpression()
            try expectPunct(")", "to close '('")
            return e
        case .identifier(let word) where Parser.isIPv4Literal(word):
            // `src_ip == 10.0.0.1` or `10.0.0.0/8`: an address operand.
            advance()
            var text = word
            if current.isPunct("/"), case .number(let bits)? = peekKind(1) {
                advance()
                advance()
                text += "/\(bits)"
            }
            return .string(text, tok.location)
        case .identifier(let word):
            advance()
            if current.isPunct("(") {
                return .call(try parseCallArguments(name: word, location: tok.location))
            }
            if Builtins.keywords.contains(word) { return .keyword(word, tok.location) }
            // An unquoted word used as a value (e.g. `case INVITE:` is not
            // valid; strings must be quoted) is an error with a hint.
            throw error(tok.location, "unknown keyword '\(word)'; quote strings (\"\(word)\") or call a function with ()")
        default:
            throw error(tok.location, "expected a value, found '\(tok)'")
        }
    }
}

/// `host[:port]` with IPv6 in brackets.
enum HostPortParser {
    static func parse(_ text: String, defaultPort: UInt16?) -> (host: String, port: UInt16?)? {
        var host: String
        var rest: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            host = String(text[text.index(after: text.startIndex)..<close])
            rest = text[text.index(after: close)...]
            guard host.utf8.contains(0x3A) else { return nil }
        } else {
            let parts = text.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count <= 2 else { return nil }
            host = String(parts[0])
            rest = parts.count == 2 ? ":" + parts[1] : ""
        }
        guard !host.isEmpty, host.allSatisfy({ $0.isLetter || $0.isNumber || "-._:*".contains($0) }) else { return nil }
        if rest.isEmpty { return (host, defaultPort) }
        guard rest.hasPrefix(":"), let p = UInt16(rest.dropFirst()) else { return nil }
        return (host, p)
    }
}
