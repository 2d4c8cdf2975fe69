/// The functions, keywords and pseudo-variables the route script may use:
/// what `swiftser check` knows, and what SIPProxy implements.
public enum Builtins {
    /// Argument count range and the module that provides each function.
    public struct Function: Sendable {
        public var minArgs: Int
        public var maxArgs: Int
        public var module: String
        /// Arguments that name a route block of this kind (by index).
        public var routeArgument: (index: Int, kind: RouteScript.Kind)?
        /// The kinds of route block it may be called from (nil: any), as
        /// Kamailio's module docs list them; `swiftser check` refuses a call
        /// elsewhere.
        public var routes: Set<RouteScript.Kind>? = nil
    }

    public static let functions: [String: Function] = [
        "forward": Function(minArgs: 0, maxArgs: 2, module: "core"),
        "forward_udp": Function(minArgs: 0, maxArgs: 2, module: "core"),
        "forward_tcp": Function(minArgs: 0, maxArgs: 2, module: "core"),
        "forward_tls": Function(minArgs: 0, maxArgs: 2, module: "core"),
        "send": Function(minArgs: 0, maxArgs: 2, module: "core"),
        "route": Function(minArgs: 1, maxArgs: 1, module: "core", routeArgument: (0, .request)),
        "setflag": Function(minArgs: 1, maxArgs: 1, module: "core"),
        "resetflag": Function(minArgs: 1, maxArgs: 1, module: "core"),
        "isflag": Function(minArgs: 1, maxArgs: 1, module: "core"),
        "is_peer_verified": Function(minArgs: 0, maxArgs: 0, module: "tls"),
        "sl_send_reply": Function(minArgs: 2, maxArgs: 2, module: "sl"),
        "sl_reply_error": Function(minArgs: 0, maxArgs: 0, module: "sl"),
        "t_relay": Function(minArgs: 0, maxArgs: 2, module: "tm", routes: [.request, .failure]),
        "t_reply": Function(minArgs: 2, maxArgs: 2, module: "tm", routes: [.request, .failure]),
        "t_on_failure": Function(minArgs: 1, maxArgs: 1, module: "tm", routeArgument: (0, .failure)),
        "t_on_reply": Function(minArgs: 1, maxArgs: 1, module: "tm", routeArgument: (0, .reply)),
        "t_on_branch": Function(minArgs: 1, maxArgs: 1, module: "tm", routeArgument: (0, .branch)),
        "t_check_trans": Function(minArgs: 0, maxArgs: 0, module: "tm"),
        "t_newtran": Function(minArgs: 0, maxArgs: 0, module: "tm"),
        "t_is_canceled": Function(minArgs: 0, maxArgs: 0, module: "tm"),
        "t_check_status": Function(minArgs: 1, maxArgs: 1, module: "tm"),
        "record_route": Function(minArgs: 0, maxArgs: 1, module: "rr"),
        "loose_route": Function(minArgs: 0, maxArgs: 0, module: "rr"),
        "save": Function(minArgs: 1, maxArgs: 2, module: "registrar"),
        "lookup": Function(minArgs: 1, maxArgs: 2, module: "registrar"),
        "registered": Function(minArgs: 1, maxArgs: 2, module: "registrar"),
        "mf_process_maxfwd_header": Function(minArgs: 1, maxArgs: 1, module: "maxfwd"),
        "append_hf": Function(minArgs: 1, maxArgs: 2, module: "textops"),
        "remove_hf": Function(minArgs: 1, maxArgs: 1, module: "textops"),
        "is_present_hf": Function(minArgs: 1, maxArgs: 1, module: "textops"),
        "is_method": Function(minArgs: 1, maxArgs: 1, module: "textops"),
        "has_totag": Function(minArgs: 0, maxArgs: 0, module: "siputils"),
        "uri_param": Function(minArgs: 1, maxArgs: 2, module: "siputils"),
        "xlog": Function(minArgs: 1, maxArgs: 2, module: "xlog"),
        "sanity_check": Function(minArgs: 0, maxArgs: 2, module: "sanity"),
        "www_challenge": Function(minArgs: 2, maxArgs: 3, module: "auth"),
        "proxy_challenge": Function(minArgs: 2, maxArgs: 3, module: "auth"),
        "auth_challenge": Function(minArgs: 2, maxArgs: 3, module: "auth"),
        "consume_credentials": Function(minArgs: 0, maxArgs: 0, module: "auth"),
        "has_credentials": Function(minArgs: 1, maxArgs: 1, module: "auth"),
        "www_authorize": Function(minArgs: 2, maxArgs: 2, module: "auth_db"),
        "www_authenticate": Function(minArgs: 2, maxArgs: 3, module: "auth_db"),
        "proxy_authorize": Function(minArgs: 2, maxArgs: 2, module: "auth_db"),
        "proxy_authenticate": Function(minArgs: 2, maxArgs: 2, module: "auth_db"),
        "auth_check": Function(minArgs: 3, maxArgs: 3, module: "auth_db"),
        "pike_check_req": Function(minArgs: 0, maxArgs: 0, module: "pike"),
    ]

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
    ]

    /// Modules a config may load: each is provided natively by SwiftSER.
    public static let modules: Set<String> = [
        "tls", "sl", "tm", "tmx", "rr", "maxfwd", "registrar", "usrloc", "textops", "siputils",
        "xlog", "pv", "kex", "corex", "sanity", "ctl", "jsonrpcs", "auth", "auth_db", "pike",
    ]
}
