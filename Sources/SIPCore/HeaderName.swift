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

    /// Finds the known header for a field name as spelled on the wire.
    @inlinable
    public static func lookup<C: Collection>(_ raw: C) -> SIPHeaderName where C.Element == UInt8 {
        if let r = raw.withContiguousStorageIfAvailable({ lookup(buffer: $0) }) { return r }
        return Array(raw).withUnsafeBufferPointer { lookup(buffer: $0) }
    }

    /// Lookup over contiguous octets: a switch on the length, then one
    /// case-folded comparison per candidate.
    @usableFromInline
    static func lookup(buffer raw: UnsafeBufferPointer<UInt8>) -> SIPHeaderName {
        @inline(__always) func eq(_ lit: StaticString) -> Bool { ASCII.equalsLower(raw, lit) }
        switch raw.count {
        case 1:
            switch ASCII.lower(raw[0]) {
            case UInt8(ascii: "i"): return .callID
            case UInt8(ascii: "m"): return .contact
            case UInt8(ascii: "e"): return .contentEncoding
            case UInt8(ascii: "f"): return .from
            case UInt8(ascii: "l"): return .contentLength
            case UInt8(ascii: "t"): return .to
            case UInt8(ascii: "v"): return .via
            case UInt8(ascii: "k"): return .supported
            case UInt8(ascii: "s"): return .subject
            case UInt8(ascii: "c"): return .contentType
            case UInt8(ascii: "o"): return .event
            case UInt8(ascii: "u"): return .allowEvents
            case UInt8(ascii: "r"): return .referTo
            case UInt8(ascii: "x"): return .sessionExpires
            case UInt8(ascii: "y"): return .identity
            case UInt8(ascii: "b"): return .referredBy
            case UInt8(ascii: "a"): return .acceptContact
            case UInt8(ascii: "j"): return .rejectContact
            case UInt8(ascii: "d"): return .requestDisposition
            case UInt8(ascii: "n"): return .identityInfo
            default: return .other
            }
        case 2:
            if eq("to") { return .to }
        case 3:
            if eq("via") { return .via }
        case 4:
            if eq("from") { return .from }
            if eq("cseq") { return .cseq }
            if eq("path") { return .path }
            if eq("date") { return .date }
        case 5:
            if eq("route") { return .route }
            if eq("event") { return .event }
            if eq("allow") { return .allow }
        case 6:
            if eq("server") { return .server }
        case 7:
            if eq("call-id") { return .callID }
            if eq("contact") { return .contact }
            if eq("expires") { return .expires }
            if eq("require") { return .require }
            if eq("subject") { return .subject }
            if eq("warning") { return .warning }
        case 8:
            if eq("refer-to") { return .referTo }
            if eq("identity") { return .identity }
        case 9:
            if eq("supported") { return .supported }
        case 10:
            if eq("user-agent") { return .userAgent }
        case 11:
            if eq("referred-by") { return .referredBy }
            if eq("min-expires") { return .minExpires }
            if eq("unsupported") { return .unsupported }
            if eq("retry-after") { return .retryAfter }
        case 12:
            if eq("max-forwards") { return .maxForwards }
            if eq("record-route") { return .recordRoute }
            if eq("content-type") { return .contentType }
            if eq("allow-events") { return .allowEvents }
        case 13:
            if eq("proxy-require") { return .proxyRequire }
            if eq("identity-info") { return .identityInfo }
            if eq("authorization") { return .authorization }
        case 14:
            if eq("content-length") { return .contentLength }
            if eq("accept-contact") { return .acceptContact }
            if eq("reject-contact") { return .rejectContact }
        case 15:
            if eq("session-expires") { return .sessionExpires }
        case 16:
            if eq("content-encoding") { return .contentEncoding }
            if eq("www-authenticate") { return .wwwAuthenticate }
        case 18:
            if eq("proxy-authenticate") { return .proxyAuthenticate }
        case 19:
            if eq("request-disposition") { return .requestDisposition }
            if eq("proxy-authorization") { return .proxyAuthorization }
        default: break
        }
        return .other
    }
}
