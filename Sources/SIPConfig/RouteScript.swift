/// The route script: named blocks of statements, as parsed. SIPProxy
/// compiles it once into its executable form.
public struct RouteScript: Sendable {
    public enum Kind: String, Sendable, CaseIterable {
        case request = "route"
        case reply = "onreply_route"
        case failure = "failure_route"
        case branch = "branch_route"
    }

    public struct Block: Sendable {
        public var kind: Kind
        /// "" for the main request route (`route {}` / `request_route {}`) and the main reply route.
        public var name: String
        public var body: [Statement]
        public var location: SourceLocation
    }

    public var blocks: [Block] = []

    public func block(_ kind: Kind, _ name: String) -> Block? {
        blocks.first { $0.kind == kind && $0.name == name }
    }

    public var main: Block? { block(.request, "") }
}

/// A pseudo-variable reference such as `$ru`, `$hdr(From)`, `$var(x)`.
public struct PseudoVariable: Sendable, Equatable, CustomStringConvertible {
    public var name: String
    public var argument: String?
    public var location: SourceLocation

    public init(name: String, argument: String?, location: SourceLocation) {
        self.name = name
        self.argument = argument
        self.location = location
    }

    public var description: String { argument.map { "$\(name)(\($0))" } ?? "$\(name)" }
}

/// A function call: `t_relay()`, `sl_send_reply("404", "Not Found")`.
public struct Call: Sendable {
    public var name: String
    public var arguments: [Expression]
    public var location: SourceLocation
}

public indirect enum Expression: Sendable {
    case string(String, SourceLocation)
    case number(Int, SourceLocation)
    case variable(PseudoVariable)
    /// `method`, `uri`, `src_ip`, `src_port`, `dst_ip`, `dst_port`, `proto`, `af`, `status`, `myself`.
    case keyword(String, SourceLocation)
    case call(Call)
    case not(Expression)
    case and(Expression, Expression)
    case or(Expression, Expression)
    /// `==`, `!=`, `=~`, `!~`, `<`, `>`, `<=`, `>=`.
    case compare(String, Expression, Expression, SourceLocation)
    /// `+`, `-`, `*`, `/`, `%`, `|`, `&`.
    case arithmetic(String, Expression, Expression, SourceLocation)

    public var location: SourceLocation {
        switch self {
        case .string(_, let l), .number(_, let l), .keyword(_, let l): return l
        case .variable(let v): return v.location
        case .call(let c): return c.location
        case .not(let e): return e.location
        case .and(let a, _), .or(let a, _): return a.location
        case .compare(_, _, _, let l), .arithmetic(_, _, _, let l): return l
        }
    }
}

public indirect enum Statement: Sendable {
    case call(Call)
    case ifElse(Expression, [Statement], [Statement]?)
    case switchCase(Expression, [SwitchCase], SourceLocation)
    case whileLoop(Expression, [Statement], SourceLocation)
    case assign(PseudoVariable, Expression)
    case drop(SourceLocation)
    case exit(SourceLocation)
    case returnValue(Expression?, SourceLocation)
    case breakLoop(SourceLocation)
    case block([Statement])
}

public struct SwitchCase: Sendable {
    /// nil for `default:`.
    public var value: Expression?
    public var body: [Statement]
}
