/// A `name-addr` or `addr-spec` with header parameters: the value of From,
/// To, Contact, Route, Record-Route, Path, Refer-To (RFC 3261 §20).
public struct NameAddress: Sendable, CustomStringConvertible {
    /// The display name as written: a quoted string keeps its quotes.
    public var displayName: String?
    /// The URI (its parts as written).
    public var uri: SIPURI { didSet { uriOctets = nil } }
    /// The URI's octets as parsed, until `uri` is changed.
    private var uriOctets: ArraySlice<UInt8>?

    /// The URI as text: the parsed octets when unchanged (nothing
    /// re-serialised), else `uri.description` (the same text).
    public var uriText: String { uriOctets.map { ASCII.string($0) } ?? uri.description }
    /// True when the URI was enclosed in `<>`.
    public var bracketed: Bool
    /// Header parameters (after the URI; for an unbracketed URI, every
    /// `;param` is a header parameter — RFC 4475 §3.3.12).
    public var parameters: GenericParameters

    public init(uri: SIPURI, displayName: String? = nil, parameters: GenericParameters = GenericParameters()) {
        self.displayName = displayName
        self.uri = uri
        self.bracketed = true
        self.parameters = parameters
    }

    init(uri: SIPURI, displayName: String?, parameters: GenericParameters, bracketed: Bool, uriOctets: ArraySlice<UInt8>?) {
        self.displayName = displayName
        self.uri = uri
        self.bracketed = bracketed
        self.parameters = parameters
        self.uriOctets = uriOctets
    }

    /// The `tag` parameter.
    public var tag: String? { parameters["tag"] }

    public var description: String {
        var s = ""
        if let displayName { s += displayName + " " }
        s += "<" + uri.description + ">"
        s += parameters.description
        return s
    }

    /// Parses one value. `header` names the field for error messages.
    public static func parse(_ b: ArraySlice<UInt8>, header: String) throws(SIPParseError) -> NameAddress {
        let p = try scan(b, header: header, build: true)
        let params = try GenericParameters.parse(b, from: p.paramsStart, header: header)
        return NameAddress(uri: p.uri!, displayName: p.display, parameters: params, bracketed: p.bracketed, uriOctets: p.uriText)
    }

    /// Checks one value and returns its `tag` parameter; the URI and the
    /// display name are checked but not built (From and To of requests
    /// that only need the tags).
    static func checkedTag(_ b: ArraySlice<UInt8>, header: String) throws(SIPParseError) -> String? {
        let p = try scan(b, header: header, build: false)
        return try GenericParameters.check(b, from: p.paramsStart, header: header, find: "tag").map { ASCII.string($0) }
    }

    /// Checks one value; nothing is built.
    static func check(_ b: ArraySlice<UInt8>, header: String) throws(SIPParseError) {
        let p = try scan(b, header: header, build: false)
        _ = try GenericParameters.check(b, from: p.paramsStart, header: header, find: "")
    }

    /// Scans up to the header parameters, which start at `paramsStart`.
    private static func scan(_ b: ArraySlice<UInt8>, header: String, build: Bool) throws(SIPParseError)
        -> (uri: SIPURI?, display: String?, paramsStart: Int, bracketed: Bool, uriText: ArraySlice<UInt8>) {
        var i = b.startIndex
        func err(_ what: String, _ at: Int) -> SIPParseError {
            SIPParseError(.malformedHeader, header: header, offset: at, what)
        }
        while i < b.endIndex, ASCII.isWSP(b[i]) { i += 1 }
        guard i < b.endIndex else { throw err("empty value", i) }
        var display: String? = nil
        var hasAngle = false
        if b[i] == ASCII.quote {
            let end = try GenericParameters.skipQuoted(b, from: i, header: header)
            if build { display = ASCII.string(b[i..<end]) }
            i = end
            while i < b.endIndex, ASCII.isWSP(b[i]) { i += 1 }
            guard i < b.endIndex, b[i] == ASCII.lessThan else { throw err("quoted display name not followed by <URI>", i) }
            hasAngle = true
        } else if let lt = b[i...].firstIndex(of: ASCII.lessThan) {
            // Unquoted display name: tokens separated by LWS (RFC 4475 §3.1.1.6
            // also admits a token directly followed by '<').
            let dn = b[i..<lt].trimmingWSP()
            if !dn.isEmpty {
                guard dn.allSatisfy({ ASCII.isToken($0) || ASCII.isWSP($0) }) else {
                    throw err("display name has characters that must be quoted", i)
                }
                if build { display = ASCII.string(dn) }
            }
            i = lt
            hasAngle = true
        }
        let uriText: ArraySlice<UInt8>
        var paramsStart: Int
        if hasAngle {
            let open = i
            guard let close = b[open...].firstIndex(of: ASCII.greaterThan) else { throw err("'<' without '>'", open) }
            uriText = b[(open + 1)..<close]
            if let f = uriText.first, ASCII.isWSP(f) { throw err("white space after '<'", open) }
            if let l = uriText.last, ASCII.isWSP(l) { throw err("white space before '>'", close) }
            paramsStart = close + 1
        } else {
            // addr-spec: the URI ends at ';' or white space; it may not
            // contain ',', ';' or '?' (RFC 3261 §20: those need <>).
            var j = i
            while j < b.endIndex, b[j] != ASCII.semicolon, !ASCII.isWSP(b[j]) { j += 1 }
            uriText = b[i..<j]
            if uriText.contains(ASCII.question) || uriText.contains(ASCII.comma) {
                throw err("URI with '?' or ',' must be enclosed in <>", i)
            }
            paramsStart = j
        }
        let uri: SIPURI?
        do {
            uri = try SIPURI.scan(uriText, build: build)
        } catch {
            throw SIPParseError(.malformedHeader, header: header, offset: uriText.startIndex, error.detail)
        }
        while paramsStart < b.endIndex, ASCII.isWSP(b[paramsStart]) { paramsStart += 1 }
        return (uri, display, paramsStart, hasAngle, uriText)
    }
}
