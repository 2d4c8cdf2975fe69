import Foundation
import SIPCore

/// sanity_check(): the checks of Kamailio's sanity module, with its bit
/// numbers, on a request as received. Pure: a message and the checks in,
/// the first failure (with the status the proxy answers) out.
struct SanityCheck {
    /// Which checks run (`msg_checks`, `modparam("sanity", "default_checks", …)`).
    struct Checks: OptionSet, Sendable {
        let rawValue: Int
        /// The Request-URI's SIP version is 2.0 (the parser refuses others with 505 first).
        static let requestURIVersion = Checks(rawValue: 1)
        /// The Request-URI scheme is sip, sips, tel or tels (416).
        static let requestURIScheme = Checks(rawValue: 2)
        /// Via, From, To, Call-ID and CSeq are present (400).
        static let requiredHeaders = Checks(rawValue: 4)
        /// 8 (Via version) and 16 (Via protocol): the Via parser already refuses these.
        static let viaVersion = Checks(rawValue: 8)
        static let viaProtocol = Checks(rawValue: 16)
        /// The CSeq method is the request's method (400).
        static let cseqMethod = Checks(rawValue: 32)
        /// The CSeq number is a 32-bit unsigned integer (400).
        static let cseqValue = Checks(rawValue: 64)
        /// The body is as long as Content-Length says (400).
        static let contentLength = Checks(rawValue: 128)
        /// Expires is an unsigned integer (400).
        static let expires = Checks(rawValue: 256)
        /// Every Proxy-Require option is one this proxy supports (420 with Unsupported).
        static let proxyRequire = Checks(rawValue: 512)
        /// The URIs chosen by `URIChecks` parse (400).
        static let parseURIs = Checks(rawValue: 1024)
        /// Every Authorization / Proxy-Authorization is Digest with its required parameters (400).
        static let digestCredentials = Checks(rawValue: 2048)
        /// From and To carry at most one tag each (400).
        static let duplicateTags = Checks(rawValue: 4096)
        /// As 2048, but a scheme other than Digest passes.
        static let authorization = Checks(rawValue: 8192)
    }

    /// Which URIs the parse check reads (`uri_checks`).
    struct URIChecks: OptionSet, Sendable {
        let rawValue: Int
        static let requestURI = URIChecks(rawValue: 1)
        static let from = URIChecks(rawValue: 2)
        static let to = URIChecks(rawValue: 4)
    }

    enum Header: Sendable, Equatable { case requestURI, from, to }

    /// Why a request failed.
    enum Failure: Sendable, Equatable {
        case versionNotSupported
        case unsupportedURIScheme
        case missingHeader(SIPHeaderName)
        case cseqMethodMismatch
        case badCSeqNumber
        case contentLengthMismatch
        case badExpires
        case unsupportedExtensions([String])
        case badURI(Header)
        case badCredentials
        case duplicateTag(Header)

        var status: Int {
            switch self {
            case .versionNotSupported: return 505
            case .unsupportedURIScheme: return 416
            case .unsupportedExtensions: return 420
            default: return 400
            }
        }

        var reason: String {
            switch self {
            case .versionNotSupported: return "Version Not Supported"
            case .unsupportedURIScheme: return "Unsupported URI Scheme"
            case .missingHeader(let h): return "Missing \(h.canonicalName) Header"
            case .cseqMethodMismatch: return "CSeq Method Does Not Match"
            case .badCSeqNumber: return "Bad CSeq Number"
            case .contentLengthMismatch: return "Content-Length Does Not Match Body"
            case .badExpires: return "Bad Expires Value"
            case .unsupportedExtensions: return "Bad Extension"
            case .badURI(.requestURI): return "Bad Request-URI"
            case .badURI(.from): return "Bad From URI"
            case .badURI(.to): return "Bad To URI"
            case .badCredentials: return "Bad Credentials"
            case .duplicateTag(.from): return "Duplicate From Tag"
            case .duplicateTag(_): return "Duplicate To Tag"
            }
        }

        /// Headers the reply carries (420: the options not supported).
        var extraHeaders: [(String, String)] {
            if case .unsupportedExtensions(let tags) = self { return [("Unsupported", tags.joined(separator: ", "))] }
            return []
        }
    }

    /// Runs `checks` on a request as it was received; nil when it passes.
    /// Responses pass (the checks are about requests).
    static func check(_ m: SIPMessage, checks: Checks, uris: URIChecks, supported: [String]) -> Failure? {
        guard case .request(let method, _) = m.startLine else { return nil }
        if checks.contains(.requiredHeaders) {
            for name in [SIPHeaderName.via, .from, .to, .callID, .cseq] where m.headerValue(name).map({ $0.isEmpty }) ?? true {
                return .missingHeader(name)
            }
        }
        if checks.contains(.requestURIScheme) {
            guard let uri = try? m.requestURI() else { return .badURI(.requestURI) }
            switch uri.scheme {
            case .sip, .sips, .tel: break
            case .other(let s) where s == "tels": break
            case .other: return .unsupportedURIScheme
            }
        }
        if checks.contains(.cseqValue) || checks.contains(.cseqMethod) {
            guard let cseq = try? m.cseq() else { return .badCSeqNumber }
            if checks.contains(.cseqMethod) && cseq.method != method { return .cseqMethodMismatch }
        }
        if checks.contains(.contentLength), let declared = m.contentLength {
            // A datagram may carry octets after the body Content-Length
            // declares (RFC 3261 §18.3 lets a receiver drop them); Kamailio's
            // check counts them as a mismatch, and so does this one.
            let body = m.body
            if declared != body.count || m.storage.count - body.startIndex != declared { return .contentLengthMismatch }
        }
        if checks.contains(.expires), let v = m.headerValue(.expires) {
            let text = v.drop { $0 == 0x20 || $0 == 0x09 }.reversed().drop { $0 == 0x20 || $0 == 0x09 }
            if text.isEmpty || text.count > 10 || !text.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) { return .badExpires }
            if UInt64(String(decoding: text.reversed(), as: UTF8.self)).map({ $0 > UInt64(UInt32.max) }) ?? true { return .badExpires }
        }
        if checks.contains(.proxyRequire), method != .ack, method != .cancel {
            let unsupported = SanityCheck.unsupported(m.optionTags(.proxyRequire), supported: supported)
            if !unsupported.isEmpty { return .unsupportedExtensions(unsupported) }
        }
        if checks.contains(.parseURIs) {
            if uris.contains(.requestURI), (try? m.requestURI()) == nil { return .badURI(.requestURI) }
            if uris.contains(.from), ((try? m.from()) ?? nil) == nil { return .badURI(.from) }
            if uris.contains(.to), ((try? m.to()) ?? nil) == nil { return .badURI(.to) }
        }
        if checks.contains(.digestCredentials) || checks.contains(.authorization) {
            let strict = checks.contains(.digestCredentials)
            for name in [SIPHeaderName.authorization, .proxyAuthorization] {
                for v in m.headerValues(name) {
                    switch DigestCredentials.parse(v) {
                    case .success, .failure(.unsupportedAlgorithm): break
                    case .failure(.notDigest): if strict { return .badCredentials }
                    case .failure(.malformed): return .badCredentials
                    }
                }
            }
        }
        if checks.contains(.duplicateTags) {
            if tagCount(m, .from) > 1 { return .duplicateTag(.from) }
            if tagCount(m, .to) > 1 { return .duplicateTag(.to) }
        }
        return nil
    }

    /// The options of `required` not in `supported` (compared without case).
    static func unsupported(_ required: [String], supported: [String]) -> [String] {
        required.filter { tag in !supported.contains { $0.caseInsensitiveCompare(tag) == .orderedSame } }
    }

    /// How many `tag` parameters a From or To carries.
    static func tagCount(_ m: SIPMessage, _ name: SIPHeaderName) -> Int {
        guard let value = m.headerValue(name) else { return 0 }
        // Parameters follow the URI: after the closing '>' of a name-addr,
        // or after the first ';' of a bare addr-spec.
        let text = String(decoding: value, as: UTF8.self)
        var pieces = text.split(separator: ";")
        if let close = text.lastIndex(of: ">") {
            pieces = text[text.index(after: close)...].split(separator: ";")
        } else {
            pieces = Array(pieces.dropFirst())
        }
        return pieces.filter { piece in
            piece.prefix { $0 != "=" }.trimmingCharacters(in: .whitespaces).lowercased() == "tag"
        }.count
    }
}
