/// What the checker knows of one script function: its name, how many
/// arguments it takes, the module that provides it, where it may be called
/// and which argument names a route. SIPConfig only defines the type; the
/// rows live with their implementations in SIPProxy (`ScriptFunctions`),
/// which hands them to `ConfigLoader` as a `FunctionCatalogue`.
public struct FunctionSignature: Sendable {
    /// An argument that names a route block of a kind (`route(X)`,
    /// `t_on_failure(X)`): a bare word there is the route's name.
    public struct RouteArgument: Sendable {
        public var index: Int
        public var kind: RouteScript.Kind
        public init(_ index: Int, _ kind: RouteScript.Kind) {
            self.index = index
            self.kind = kind
        }
    }

    /// A check of a literal argument made when the config loads.
    public enum ArgumentRule: Sendable {
        /// The argument at this index is a reply code, 100…699.
        case replyCode(Int)
        /// With exactly `whenCount` arguments, the one at `index` is one of `values`.
        case oneOf(index: Int, values: [String], whenCount: Int)
        /// The argument at this index is a regular expression; a literal one
        /// (no pseudo-variable in it) must compile.
        case regex(Int)
    }

    /// What a function does that script-wide checks look for.
    public struct Roles: OptionSet, Sendable {
        public let rawValue: Int
        public init(rawValue: Int) { self.rawValue = rawValue }
        /// Sends the request on (the open-relay check).
        public static let relays = Roles(rawValue: 1)
        /// Authenticates the request or its peer, or checks its source.
        public static let authenticates = Roles(rawValue: 2)
    }

    public var name: String
    public var minArgs: Int
    public var maxArgs: Int
    public var module: String
    /// The kinds of route block it may be called from (nil: any), as
    /// Kamailio's module docs list them; `swiftser check` refuses a call
    /// elsewhere.
    public var routes: Set<RouteScript.Kind>?
    public var routeArgument: RouteArgument?
    public var rules: [ArgumentRule]
    public var roles: Roles

    public init(_ name: String, args: ClosedRange<Int>, module: String, routes: Set<RouteScript.Kind>? = nil,
                routeArgument: RouteArgument? = nil, rules: [ArgumentRule] = [], roles: Roles = []) {
        self.name = name
        self.minArgs = args.lowerBound
        self.maxArgs = args.upperBound
        self.module = module
        self.routes = routes
        self.routeArgument = routeArgument
        self.rules = rules
        self.roles = roles
    }
}

/// The script functions a config may call, by name: what the parser (route
/// name arguments), the checker and the open-relay check read.
public struct FunctionCatalogue: Sendable {
    public let byName: [String: FunctionSignature]
    /// Names given by more than one row (the first row is kept).
    public let duplicates: [String]

    public init(_ rows: [FunctionSignature]) {
        var byName: [String: FunctionSignature] = [:]
        var duplicates: [String] = []
        for r in rows {
            if byName[r.name] != nil { duplicates.append(r.name) } else { byName[r.name] = r }
        }
        self.byName = byName
        self.duplicates = duplicates
    }

    public subscript(name: String) -> FunctionSignature? { byName[name] }
}

/// The keywords and pseudo-variables the route script may use, and the
/// modules a config may load.
public enum Builtins {
    /// Bare keywords usable as operands.
    public static let keywords: Set<String> = ["method", "uri", "src_ip", "src_port", "dst_ip", "dst_port", "proto", "af", "status", "myself"]

    /// Pseudo-variables: name → (takes an argument, assignable).
    public static let pseudoVariables: [String: (argument: Bool, assignable: Bool)] = [
        "ru": (false, true), "rU": (false, true), "rd": (false, true), "rp": (false, true),
        "fu": (false, false), "fU": (false, false), "fd": (false, false),
        "tu": (false, false), "tU": (false, false), "td": (false, false),
        "ci": (false, false), "cs": (false, false), "rm": (false, false), "rs": (false, false), "rr": (false, false),
        "si": (false, false), "sp": (false, false), "Ri": (false, false), "Rp": (false, false), "pr": (false, false),
        "du": (false, true), "hdr": (true, false), "var": (true, true), "avp": (true, true),
        "ua": (false, false), "mb": (false, false), "ml": (false, false),
        "tls_version": (false, false), "tls_cipher_info": (false, false),
        "tls_peer_subject": (false, false), "tls_peer_subject_cn": (false, false),
        "tls_peer_issuer": (false, false), "tls_peer_verified": (false, false),
        "tls_peer_server_name": (false, false),
        "null": (false, false), "af": (false, false),
        "au": (false, false), "ad": (false, false), "ar": (false, false), "adu": (false, false), "aa": (false, false),
        "sht": (true, true),
    ]

    /// True when `text` names a pseudo-variable (`$ru`, `$(ru)`,
    /// `$var(x)`): a function argument holding one is expanded per message,
    /// so it is not a literal.
    public static func mentionsPseudoVariable(_ text: String) -> Bool {
        let u = Array(text.utf8)
        var i = 0
        while i + 1 < u.count {
            defer { i += 1 }
            guard u[i] == UInt8(ascii: "$") else { continue }
            var j = i + 1
            var name: [UInt8] = []
            if u[j] == UInt8(ascii: "(") {
                j += 1
                while j < u.count, u[j] != UInt8(ascii: ")") { name.append(u[j]); j += 1 }
            } else {
                while j < u.count, u[j] == UInt8(ascii: "_") || (u[j] | 0x20 >= 0x61 && u[j] | 0x20 <= 0x7A) || (u[j] >= 0x30 && u[j] <= 0x39) {
                    name.append(u[j]); j += 1
                }
            }
            if pseudoVariables[String(decoding: name, as: UTF8.self)] != nil { return true }
        }
        return false
    }

    /// Modules a config may load: each is provided natively by SwiftSER.
    public static let modules: Set<String> = [
        "tls", "sl", "tm", "tmx", "rr", "maxfwd", "registrar", "usrloc", "textops", "siputils",
        "xlog", "pv", "kex", "corex", "sanity", "ctl", "jsonrpcs", "auth", "auth_db", "pike",
        "permissions", "htable",
    ]
}
