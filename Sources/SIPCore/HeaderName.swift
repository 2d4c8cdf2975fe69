/// The header fields SwiftSER knows by name. Every other field is `.other`
/// and is carried byte-exact.
///
/// Lookup folds case and maps the compact forms of RFC 3261 §7.3.3 and its
/// extensions (RFC 3265, 3515, 3841, 3892, 4028, 4474) to their long names.
public enum SIPHeaderName: UInt8, Sendable, CaseIterable {
    case other = 0
    case via, from, to, callID, cseq, maxForwards, contact, route, recordRoute, path
    case contentLength, contentType, contentEncoding, expires, supported, require, proxyRequire
    case subject, event, allowEvents, referTo, sessionExpires, identity, referredBy
    case acceptContact, rejectContact, requestDisposition, identityInfo
    case minExpires, unsupported, allow, date, authorization, proxyAuthorization
    case wwwAuthenticate, proxyAuthenticate, userAgent, server, warning, retryAfter

    /// The canonical (long) spelling used when SwiftSER writes the field.
    public var canonicalName: String {
        switch self {
        case .other: return ""
        case .via: return "Via"
        case .from: return "From"
        case .to: return "To"
        case .callID: return "Call-ID"
        case .cseq: return "CSeq"
        case .maxForwards: return "Max-Forwards"
        case .contact: return "Contact"
        case .route: return "Route"
        case .recordRoute: return "Record-Route"
        case .path: return "Path"
        case .contentLength: return "Content-Length"
        case .contentType: return "Content-Type"
        case .contentEncoding: return "Content-Encoding"
        case .expires: return "Expires"
        case .supported: return "Supported"
        case .require: return "Require"
        case .proxyRequire: return "Proxy-Require"
        case .subject: return "Subject"
        case .event: return "Event"
        case .allowEvents: return "Allow-Events"
        case .referTo: return "Refer-To"
        case .sessionExpires: return "Session-Expires"
        case .identity: return "Identity"
        case .referredBy: return "Referred-By"
        case .acceptContact: return "Accept-Contact"
        case .rejectContact: return "Reject-Contact"
        case .requestDisposition: return "Request-Disposition"
        case .identityInfo: return "Identity-Info"
        case .minExpires: return "Min-Expires"
        case .unsupported: return "Unsupported"
        case .allow: return "Allow"
        case .date: return "Date"
        case .authorization: return "Authorization"
        case .proxyAuthorization: return "Proxy-Authorization"
        case .wwwAuthenticate: return "WWW-Authenticate"
        case .proxyAuthenticate: return "Proxy-Authenticate"
        case .userAgent: return "User-Agent"
        case .server: return "Server"
        case .warning: return "Warning"
        case .retryAfter: return "Retry-After"
        }
    }

    /// Fields that RFC 3261 §7.3 allows to carry a comma-separated list of
    /// values in one line (and so to be split on commas outside quotes and
    /// angle brackets).
    public var isMultiValued: Bool {
        switch self {
        case .via, .contact, .route, .recordRoute, .path, .supported, .require, .proxyRequire,
             .allow, .allowEvents, .unsupported, .acceptContact, .rejectContact, .warning:
            return true
        default:
            return false
        }
    }

    /// Fields that may occur at most once (RFC 3261 §20 and RFC 4475 §3.3.8).
    public var isSingleValued: Bool {
        switch self {
        case .callID, .cseq, .from, .to, .maxForwards, .contentLength, .contentType, .expires, .date,
             .minExpires:
            return true
        default:
            return false
        }
    }

    private static let compact: [UInt8: SIPHeaderName] = [
        UInt8(ascii: "i"): .callID, UInt8(ascii: "m"): .contact, UInt8(ascii: "e"): .contentEncoding,
        UInt8(ascii: "f"): .from, UInt8(ascii: "l"): .contentLength, UInt8(ascii: "t"): .to,
        UInt8(ascii: "v"): .via, UInt8(ascii: "k"): .supported, UInt8(ascii: "s"): .subject,
        UInt8(ascii: "c"): .contentType, UInt8(ascii: "o"): .event, UInt8(ascii: "u"): .allowEvents,
        UInt8(ascii: "r"): .referTo, UInt8(ascii: "x"): .sessionExpires, UInt8(ascii: "y"): .identity,
        UInt8(ascii: "b"): .referredBy, UInt8(ascii: "a"): .acceptContact, UInt8(ascii: "j"): .rejectContact,
        UInt8(ascii: "d"): .requestDisposition, UInt8(ascii: "n"): .identityInfo,
    ]

    /// Long names in lower case, bucketed by length for a cheap first cut.
    private static let byLength: [[(lower: [UInt8], name: SIPHeaderName)]] = {
        var buckets = [[(lower: [UInt8], name: SIPHeaderName)]](repeating: [], count: 24)
        for n in SIPHeaderName.allCases where n != .other {
            let l = Array(n.canonicalName.lowercased().utf8)
            buckets[l.count].append((l, n))
        }
        return buckets
    }()

    /// Finds the known header for a field name as spelled on the wire.
    @inlinable
    public static func lookup<C: Collection>(_ raw: C) -> SIPHeaderName where C.Element == UInt8 {
        lookupImpl(raw)
    }

    @usableFromInline
    static func lookupImpl<C: Collection>(_ raw: C) -> SIPHeaderName where C.Element == UInt8 {
        let n = raw.count
        if n == 1 { return compact[ASCII.lower(raw.first!)] ?? .other }
        guard n < byLength.count else { return .other }
        outer: for entry in byLength[n] {
            var i = 0
            for b in raw {
                if ASCII.lower(b) != entry.lower[i] { continue outer }
                i += 1
            }
            return entry.name
        }
        return .other
    }
}
