/// A URI as SIP uses it: `sip:`, `sips:` and `tel:` parsed into parts,
/// any other absolute URI kept opaque (RFC 3261 §19.1, RFC 3966).
///
/// Parts keep their escaped form as written; `%HH` is decoded only when
/// comparing (RFC 3261 §19.1.4) or when asked with `unescaped(_:)`, and never
/// twice. A URI re-serialises to the octets it was parsed from unless a part
/// is changed.
public struct SIPURI: Sendable, CustomStringConvertible {
    public enum Scheme: Sendable, Equatable, Hashable {
        case sip, sips, tel
        case other(String)

        public var name: String {
            switch self {
            case .sip: return "sip"
            case .sips: return "sips"
            case .tel: return "tel"
            case .other(let s): return s
            }
        }
    }

    /// One `;name=value` parameter; `value` is nil for a bare `;name`.
    public struct Parameter: Sendable, Equatable {
        public var name: String
        public var value: String?
        public init(_ name: String, _ value: String? = nil) {
            self.name = name
            self.value = value
        }
    }

    public var scheme: Scheme
    /// User part as written (escapes kept); for `tel:` the number.
    public var user: String?
    public var password: String?
    /// Host as written; an IPv6 reference keeps its brackets.
    public var host: String
    public var port: UInt16?
    public var parameters: [Parameter]
    /// `?name=value&…` headers, as written.
    public var headers: [Parameter]
    /// Everything after `scheme:` for a scheme SwiftSER does not parse.
    public var opaque: String?

    public init(scheme: Scheme = .sip, user: String? = nil, host: String, port: UInt16? = nil, parameters: [Parameter] = []) {
        self.scheme = scheme
        self.user = user
        self.password = nil
        self.host = host
        self.port = port
        self.parameters = parameters
        self.headers = []
        self.opaque = nil
    }

    /// Every part at once (the parser's way of making one).
    init(scheme: Scheme, user: String?, password: String?, host: String, port: UInt16?, parameters: [Parameter], headers: [Parameter]) {
        self.scheme = scheme
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.parameters = parameters
        self.headers = headers
        self.opaque = nil
    }

    /// True for `sip:` and `sips:`.
    public var isSIP: Bool { scheme == .sip || scheme == .sips }

    /// The host without IPv6 brackets, lower-cased.
    public var hostName: String {
        var h = host
        if h.hasPrefix("[") && h.hasSuffix("]") { h = String(h.dropFirst().dropLast()) }
        return h.lowercased()
    }

    /// The value of a parameter (`""` for a bare one), nil when absent.
    public func parameter(_ name: String) -> String? {
        for p in parameters where ASCII.equalsIgnoringCase(p.name.utf8, name.utf8) { return p.value ?? "" }
        return nil
    }

    public func hasParameter(_ name: String) -> Bool { parameter(name) != nil }

    /// The `transport` parameter, lower-cased.
    public var transport: String? { parameter("transport")?.lowercased() }

    /// True when the URI has the `lr` parameter (a loose router).
    public var isLooseRouter: Bool { hasParameter("lr") }

    public mutating func setParameter(_ name: String, _ value: String?) {
        if let i = parameters.firstIndex(where: { ASCII.equalsIgnoringCase($0.name.utf8, name.utf8) }) {
            parameters[i].value = value
        } else {
            parameters.append(Parameter(name, value))
        }
    }

    public mutating func removeParameter(_ name: String) {
        parameters.removeAll { ASCII.equalsIgnoringCase($0.name.utf8, name.utf8) }
    }

    public var description: String {
        var s = scheme.name + ":"
        if let opaque { return s + opaque }
        if let user {
            s += user
            if let password { s += ":" + password }
            if scheme != .tel { s += "@" }
        }
        if scheme != .tel { s += host }
        if let port { s += ":" + String(port) }
        for p in parameters {
            s += ";" + p.name
            if let v = p.value { s += "=" + v }
        }
        if !headers.isEmpty {
            s += "?" + headers.map { $0.name + "=" + ($0.value ?? "") }.joined(separator: "&")
        }
        return s
    }

    // MARK: Parsing

    public static func parse(_ text: String) throws(SIPParseError) -> SIPURI {
        try parse(Array(text.utf8)[...])
    }

    /// Parses an absolute URI. Errors name the offending part.
    public static func parse(_ b: ArraySlice<UInt8>) throws(SIPParseError) -> SIPURI {
        try scan(b, build: true)!
    }

    /// `parse`; with `build: false` a sip:/sips: URI is only checked (the
    /// same errors, no strings built) and nil is returned — validation of
    /// values nobody reads afterwards.
    static func scan(_ b: ArraySlice<UInt8>, build: Bool) throws(SIPParseError) -> SIPURI? {
        guard let colon = b.firstIndex(of: ASCII.colon), colon > b.startIndex else {
            throw uriError("URI has no scheme", b.startIndex)
        }
        let schemeBytes = b[b.startIndex..<colon]
        guard let first = schemeBytes.first, ASCII.isAlpha(first),
              schemeBytes.allSatisfy({ ASCII.isAlpha($0) || ASCII.isDigit($0) || $0 == 0x2B || $0 == ASCII.dash || $0 == ASCII.dot })
        else { throw uriError("invalid URI scheme", b.startIndex) }
        let rest = b[(colon + 1)...]
        let clean = rest.withUnsafeBufferPointer { p in
            for c in p where !isURIOctet(c) { return false }
            return true
        }
        guard clean else { throw uriError("white space, control character or <>\" in URI", colon) }
        if ASCII.equalsLower(schemeBytes, "sip") { return try parseSIP(rest, scheme: .sip, build: build) }
        if ASCII.equalsLower(schemeBytes, "sips") { return try parseSIP(rest, scheme: .sips, build: build) }
        if ASCII.equalsLower(schemeBytes, "tel") { return try parseTel(rest) }
        guard !rest.isEmpty else { throw uriError("empty URI after scheme", colon) }
        var u = SIPURI(scheme: .other(ASCII.string(schemeBytes).lowercased()), host: "")
        u.opaque = ASCII.string(rest)
        return u
    }

    static func uriError(_ what: String, _ offset: Int) -> SIPParseError {
        SIPParseError(.malformedRequestURI, offset: offset, what)
    }

    /// Checks that every octet is allowed by `allowed` or is a valid `%HH`.
    @inline(__always)
    static func checkEscaped(_ s: ArraySlice<UInt8>, what: String, allowed: (UInt8) -> Bool) throws(SIPParseError) {
        var i = s.startIndex
        while i < s.endIndex {
            let c = s[i]
            if c == ASCII.percent {
                guard i + 2 < s.endIndex, ASCII.isHex(s[i + 1]), ASCII.isHex(s[i + 2]) else {
                    throw uriError("bad %-escape in \(what)", i)
                }
                i += 3
                continue
            }
            guard allowed(c) else { throw uriError("character '\(Character(Unicode.Scalar(c)))' not allowed in \(what)", i) }
            i += 1
        }
    }

    // Character classes of RFC 3261 §25.1 as 128-bit masks (unreserved
    // plus the listed marks), tested with a shift like `ASCII.isToken`.

    /// user: unreserved / escaped / `& = + $ , ; ? /` (and UTF-8 octets).
    static func isUserChar(_ c: UInt8) -> Bool {
        c >= 0x80 || ASCII.inMask(c, 0xABFF_FFD2_0000_0000, 0x47FF_FFFE_87FF_FFFE)
    }

    /// password: unreserved / escaped / `& = + $ ,` (and UTF-8 octets).
    static func isPasswordChar(_ c: UInt8) -> Bool {
        c >= 0x80 || ASCII.inMask(c, 0x23FF_7FD2_0000_0000, 0x47FF_FFFE_87FF_FFFE)
    }

    /// paramchar: unreserved / escaped / `[ ] / : & + $`.
    static func isParamChar(_ c: UInt8) -> Bool {
        ASCII.inMask(c, 0x07FF_EFD2_0000_0000, 0x47FF_FFFE_AFFF_FFFE)
    }

    /// Any octet a URI may hold: printable ASCII except `<`, `>` and `"`
    /// (no white space or control characters), and octets from 0x80.
    static func isURIOctet(_ c: UInt8) -> Bool {
        c >= 0x80 || ASCII.inMask(c, 0xAFFF_FFFA_0000_0000, 0x7FFF_FFFF_FFFF_FFFF)
    }

    /// A host name or IPv4 octet: letters, digits, `-`, `.` and `_`.
    static func isHostChar(_ c: UInt8) -> Bool {
        ASCII.inMask(c, 0x03FF_6000_0000_0000, 0x07FF_FFFE_87FF_FFFE)
    }

    /// hnv-unreserved / unreserved / escaped: `[ ] / ? : + $`.
    static func isHeaderChar(_ c: UInt8) -> Bool {
        ASCII.inMask(c, 0x87FF_EF92_0000_0000, 0x47FF_FFFE_AFFF_FFFE)
    }

    static func parseSIP(_ b: ArraySlice<UInt8>, scheme: Scheme, build: Bool) throws(SIPParseError) -> SIPURI? {
        // Parts gathered in locals; the URI is made once at the end (a
        // SIPURI is large, and each copy of a half-built one costs).
        var user: String? = nil, password: String? = nil, host = "", port: UInt16? = nil
        var parameters: [Parameter] = [], headers: [Parameter] = []
        var hostStart = b.startIndex
        if let at = b.firstIndex(of: ASCII.at) {
            let userinfo = b[b.startIndex..<at]
            if let pc = userinfo.firstIndex(of: ASCII.colon) {
                let userPart = userinfo[userinfo.startIndex..<pc]
                let pw = userinfo[(pc + 1)...]
                try checkEscaped(userPart, what: "URI user part", allowed: isUserChar)
                try checkEscaped(pw, what: "URI password", allowed: isPasswordChar)
                guard !userPart.isEmpty else { throw uriError("empty user part before '@'", b.startIndex) }
                if build {
                    user = ASCII.string(userPart)
                    password = ASCII.string(pw)
                }
            } else {
                try checkEscaped(userinfo, what: "URI user part", allowed: isUserChar)
                guard !userinfo.isEmpty else { throw uriError("empty user part before '@'", b.startIndex) }
                if build { user = ASCII.string(userinfo) }
            }
            hostStart = at + 1
        }
        // host
        var i = hostStart
        if i < b.endIndex, b[i] == ASCII.openBracket {
            guard let close = b[i...].firstIndex(of: ASCII.closeBracket) else { throw uriError("unterminated IPv6 reference", i) }
            let inner = b[(i + 1)..<close]
            guard !inner.isEmpty, inner.allSatisfy({ ASCII.isHex($0) || $0 == ASCII.colon || $0 == ASCII.dot }) else {
                throw uriError("invalid IPv6 reference", i)
            }
            i = close + 1
        } else {
            while i < b.endIndex, isHostChar(b[i]) { i += 1 }
        }
        guard i > hostStart else { throw uriError("URI has no host", hostStart) }
        if build { host = ASCII.string(b[hostStart..<i]) }
        if i < b.endIndex, b[i] == ASCII.colon {
            let ps = i + 1
            i = ps
            while i < b.endIndex, ASCII.isDigit(b[i]) { i += 1 }
            guard let p = ASCII.parseDecimal(b[ps..<i], max: 65535) else { throw uriError("invalid port", ps) }
            port = UInt16(p)
        }
        // parameters
        while i < b.endIndex, b[i] == ASCII.semicolon {
            let ps = i + 1
            i = ps
            while i < b.endIndex, b[i] != ASCII.semicolon, b[i] != ASCII.question { i += 1 }
            let param = b[ps..<i]
            let eq = param.firstIndex(of: ASCII.equals)
            let name = param[param.startIndex..<(eq ?? param.endIndex)]
            guard !name.isEmpty else { throw uriError("empty URI parameter", ps) }
            try checkEscaped(name, what: "URI parameter name", allowed: isParamChar)
            var value: String? = nil
            if let eq {
                let v = param[(eq + 1)...]
                guard !v.isEmpty else { throw uriError("empty URI parameter value", eq) }
                try checkEscaped(v, what: "URI parameter value", allowed: isParamChar)
                if build { value = ASCII.string(v) }
            }
            if build { parameters.append(Parameter(ASCII.word(name), value)) }
        }
        // headers
        if i < b.endIndex, b[i] == ASCII.question {
            let hs = b[(i + 1)...]
            for h in hs.split(separator: ASCII.ampersand, omittingEmptySubsequences: false) {
                guard let eq = h.firstIndex(of: ASCII.equals), eq > h.startIndex else { throw uriError("URI header without name=value", h.startIndex) }
                try checkEscaped(h[h.startIndex..<eq], what: "URI header name", allowed: isHeaderChar)
                try checkEscaped(h[(eq + 1)...], what: "URI header value", allowed: isHeaderChar)
                if build { headers.append(Parameter(ASCII.string(h[h.startIndex..<eq]), ASCII.string(h[(eq + 1)...]))) }
            }
            i = b.endIndex
        }
        guard i == b.endIndex else { throw uriError("unexpected character in URI", i) }
        guard build else { return nil }
        return SIPURI(scheme: scheme, user: user, password: password, host: host, port: port, parameters: parameters, headers: headers)
    }

    static func parseTel(_ b: ArraySlice<UInt8>) throws(SIPParseError) -> SIPURI {
        let parts = b.split(separator: ASCII.semicolon, omittingEmptySubsequences: false)
        guard let number = parts.first, !number.isEmpty else { throw uriError("tel: URI without a number", b.startIndex) }
        guard number.allSatisfy({ ASCII.isHex($0) || "+-.()*#".utf8.contains($0) }) else {
            throw uriError("invalid tel: number", b.startIndex)
        }
        var u = SIPURI(scheme: .tel, user: ASCII.string(number), host: "")
        for p in parts.dropFirst() {
            guard !p.isEmpty else { throw uriError("empty tel: parameter", p.startIndex) }
            if let eq = p.firstIndex(of: ASCII.equals) {
                u.parameters.append(Parameter(ASCII.string(p[p.startIndex..<eq]), ASCII.string(p[(eq + 1)...])))
            } else {
                u.parameters.append(Parameter(ASCII.string(p)))
            }
        }
        return u
    }

    // MARK: Escapes and comparison

    /// Decodes `%HH` escapes once. NUL octets are kept (RFC 4475 §3.1.1.4).
    public static func unescaped(_ s: String) -> [UInt8] {
        let b = Array(s.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(b.count)
        var i = 0
        while i < b.count {
            if b[i] == ASCII.percent, i + 2 < b.count, ASCII.isHex(b[i + 1]), ASCII.isHex(b[i + 2]) {
                out.append(ASCII.hexValue(b[i + 1]) << 4 | ASCII.hexValue(b[i + 2]))
                i += 3
            } else {
                out.append(b[i])
                i += 1
            }
        }
        return out
    }

    static func unescapedLower(_ s: String?) -> [UInt8]? {
        s.map { unescaped($0).map(ASCII.lower) }
    }

    /// URI equivalence per RFC 3261 §19.1.4: scheme, unescaped user and
    /// password (case-sensitive), host (case-insensitive), port (present in
    /// both or neither), the parameters user/ttl/method/maddr/transport (must
    /// agree if either has them), other parameters (compared where both
    /// have them), and headers (must all agree).
    public func isEquivalent(to o: SIPURI) -> Bool {
        guard scheme == o.scheme else { return false }
        if let opaque {
            return o.opaque.map { SIPURI.unescaped($0) == SIPURI.unescaped(opaque) } ?? false
        }
        guard user.map(SIPURI.unescaped) == o.user.map(SIPURI.unescaped),
              password.map(SIPURI.unescaped) == o.password.map(SIPURI.unescaped),
              hostName == o.hostName, port == o.port
        else { return false }
        let strict: Set<String> = ["user", "ttl", "method", "maddr", "transport"]
        var names = Set(parameters.map { $0.name.lowercased() })
        names.formUnion(o.parameters.map { $0.name.lowercased() })
        for n in names {
            let a = parameter(n), b = o.parameter(n)
            if a == nil || b == nil {
                if strict.contains(n) { return false }
                continue
            }
            if SIPURI.unescapedLower(a) != SIPURI.unescapedLower(b) { return false }
        }
        guard headers.count == o.headers.count else { return false }
        for h in headers {
            guard let m = o.headers.first(where: { SIPURI.unescapedLower($0.name) == SIPURI.unescapedLower(h.name) }),
                  SIPURI.unescaped(m.value ?? "") == SIPURI.unescaped(h.value ?? "")
            else { return false }
        }
        return true
    }
}
