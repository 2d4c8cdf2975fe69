/// `CSeq: number method` (RFC 3261 §20.16); the number is at most 2^32-1.
public struct CSeq: Sendable, Equatable, CustomStringConvertible {
    public var number: UInt32
    public var method: SIPMethod

    public init(number: UInt32, method: SIPMethod) {
        self.number = number
        self.method = method
    }

    public var description: String { "\(number) \(method.name)" }

    public static func parse(_ b: ArraySlice<UInt8>) throws(SIPParseError) -> CSeq {
        var i = b.startIndex
        let ds = i
        while i < b.endIndex, ASCII.isDigit(b[i]) { i += 1 }
        guard i > ds else { throw SIPParseError(.malformedHeader, header: "CSeq", offset: ds, "CSeq does not start with a number") }
        guard let n = ASCII.parseDecimal(b[ds..<i], max: UInt64(UInt32.max)) else {
            throw SIPParseError(.valueOutOfRange, header: "CSeq", offset: ds, "CSeq number larger than 2^32-1")
        }
        let ws = i
        while i < b.endIndex, ASCII.isWSP(b[i]) { i += 1 }
        guard i > ws else { throw SIPParseError(.malformedHeader, header: "CSeq", offset: i, "CSeq needs a space before the method") }
        let ms = i
        while i < b.endIndex, ASCII.isToken(b[i]) { i += 1 }
        guard i > ms, i == b.endIndex else { throw SIPParseError(.malformedHeader, header: "CSeq", offset: ms, "CSeq method is not a token") }
        return CSeq(number: UInt32(n), method: SIPMethod(bytes: b[ms..<i]))
    }
}

/// One Contact value: either `*` or an address with parameters
/// (`expires`, `q`, `+sip.instance`, `reg-id`, …).
public enum ContactValue: Sendable {
    case wildcard
    case address(NameAddress)

    public var address: NameAddress? {
        if case .address(let a) = self { return a }
        return nil
    }

    /// The `expires` parameter; nil when absent or out of range.
    public var expires: UInt32? {
        guard let v = address?.parameters["expires"] else { return nil }
        return ASCII.parseDecimal(v.utf8, max: UInt64(UInt32.max)).map(UInt32.init)
    }

    /// The `q` parameter, 0…1.
    public var q: Double? {
        guard let v = address?.parameters["q"], let d = Double(v), (0...1).contains(d) else { return nil }
        return d
    }

    /// The `+sip.instance` parameter without its quotes.
    public var instance: String? {
        guard var v = address?.parameters["+sip.instance"] else { return nil }
        if v.hasPrefix("\""), v.hasSuffix("\""), v.count >= 2 { v = String(v.dropFirst().dropLast()) }
        return v
    }

    /// The `reg-id` parameter (RFC 5626).
    public var regID: UInt32? {
        address?.parameters["reg-id"].flatMap { UInt32($0) }
    }
}

extension SIPMessage {
    /// A value's parse error, naming its header and the header's line.
    func parseError(_ e: SIPParseError, for entry: HeaderEntry) -> SIPParseError {
        var e = e
        e.header = e.header ?? entry.name.canonicalName
        if entry.isOriginal { e.offset = Int(entry.lineStart) }
        return e
    }

    /// Every Via value, top first.
    public func vias() throws(SIPParseError) -> [Via] {
        var out: [Via] = []
        try eachVia { via, _ in out.append(via) }
        return out
    }

    /// Parses every Via value (each must be well-formed) without keeping
    /// them: returns the topmost, with its text, or nil when there is none.
    func checkVias() throws(SIPParseError) -> (via: Via, text: ArraySlice<UInt8>)? {
        var top: (via: Via, text: ArraySlice<UInt8>)? = nil
        try eachVia { via, text in if top == nil { top = (via, text) } }
        return top
    }

    /// Parses the Via values in order and hands each, with its text, to
    /// `body`; the first malformed one throws, naming its line.
    @inline(__always)
    private func eachVia(_ body: (Via, ArraySlice<UInt8>) -> Void) throws(SIPParseError) {
        for e in entries where e.name == .via {
            do {
                try SIPHeaderField.forEachListValue(value(e)) { (v) throws(SIPParseError) in body(try Via.parse(v), v) }
            } catch { throw parseError(error, for: e) }
        }
    }

    /// The topmost Via value.
    public func topVia() throws(SIPParseError) -> Via? {
        guard let e = firstEntry(.via) else { return nil }
        do { return try Via.parse(SIPHeaderField.firstListValue(value(e))) } catch { throw parseError(error, for: e) }
    }

    func nameAddress(_ name: SIPHeaderName) throws(SIPParseError) -> NameAddress? {
        guard let e = firstEntry(name) else { return nil }
        do { return try NameAddress.parse(value(e), header: name.canonicalName) } catch { throw parseError(error, for: e) }
    }

    public func from() throws(SIPParseError) -> NameAddress? { try nameAddress(.from) }

    /// Checks the first field `name` (From, To) and returns its tag (nil
    /// when it has none or the field is absent).
    func checkedTag(_ name: SIPHeaderName) throws(SIPParseError) -> String? {
        guard let e = firstEntry(name) else { return nil }
        do { return try NameAddress.checkedTag(value(e), header: name.canonicalName) } catch { throw parseError(error, for: e) }
    }
    public func to() throws(SIPParseError) -> NameAddress? { try nameAddress(.to) }

    /// The Call-ID value as text.
    public var callID: String? { header(.callID).map { ASCII.string($0.value) } }

    public func cseq() throws(SIPParseError) -> CSeq? {
        guard let e = firstEntry(.cseq) else { return nil }
        do { return try CSeq.parse(value(e)) } catch { throw parseError(error, for: e) }
    }

    /// Max-Forwards (0…255); nil when absent. Leading zeros are allowed.
    public func maxForwards() throws(SIPParseError) -> UInt8? {
        guard let e = firstEntry(.maxForwards) else { return nil }
        guard let v = ASCII.parseDecimal(value(e), max: 255) else {
            throw SIPParseError(.valueOutOfRange, header: "Max-Forwards", offset: offset(e), "Max-Forwards is not a number from 0 to 255")
        }
        return UInt8(v)
    }

    /// Every Contact value in order.
    public func contacts() throws(SIPParseError) -> [ContactValue] { try contacts(build: true) }

    /// `build: false`: only checks them, returns nothing.
    func contacts(build: Bool) throws(SIPParseError) -> [ContactValue] {
        var out: [ContactValue] = []
        for e in entries where e.name == .contact {
            do {
                try SIPHeaderField.forEachListValue(value(e)) { (v) throws(SIPParseError) in
                    if v.count == 1, v.first == ASCII.star {
                        if build { out.append(.wildcard) }
                    } else if build {
                        out.append(.address(try NameAddress.parse(v, header: "Contact")))
                    } else {
                        try NameAddress.check(v, header: "Contact")
                    }
                }
            } catch { throw parseError(error, for: e) }
        }
        return out
    }

    func addressList(_ name: SIPHeaderName, build: Bool = true, limit: Int = .max) throws(SIPParseError) -> [NameAddress] {
        var out: [NameAddress] = []
        for e in entries where e.name == name {
            do {
                try SIPHeaderField.forEachListValue(value(e)) { (v) throws(SIPParseError) in
                    guard out.count < limit else { return }
                    if build { out.append(try NameAddress.parse(v, header: name.canonicalName)) } else { try NameAddress.check(v, header: name.canonicalName) }
                }
            } catch { throw parseError(error, for: e) }
            if out.count >= limit { break }
        }
        return out
    }

    public func routes() throws(SIPParseError) -> [NameAddress] { try addressList(.route) }
    /// The first `n` Route values, parsed; the rest are not read.
    public func routes(first n: Int) throws(SIPParseError) -> [NameAddress] { try addressList(.route, limit: n) }
    public func recordRoutes() throws(SIPParseError) -> [NameAddress] { try addressList(.recordRoute) }
    public func paths() throws(SIPParseError) -> [NameAddress] { try addressList(.path) }

    /// The declared Content-Length, nil when absent.
    public var contentLength: Int? {
        header(.contentLength).flatMap { ASCII.parseDecimal($0.value, max: UInt64(Int32.max)).map(Int.init) }
    }

    /// Content-Type as text (media type and parameters).
    public var contentType: String? { header(.contentType)?.valueString }

    /// The Expires header (seconds); nil when absent or out of range.
    public var expires: UInt32? {
        header(.expires).flatMap { ASCII.parseDecimal($0.value, max: UInt64(UInt32.max)).map(UInt32.init) }
    }

    /// Option tags of Supported, Require or Proxy-Require.
    public func optionTags(_ name: SIPHeaderName) -> [String] {
        headerValues(name).filter { !$0.isEmpty }.map { ASCII.string($0) }
    }

    /// The Request-URI, parsed.
    public func requestURI() throws(SIPParseError) -> SIPURI? {
        guard let b = requestURIBytes else { return nil }
        var e: SIPParseError
        do { return try SIPURI.parse(b) } catch { e = error }
        if case .request(_, let r) = startLine, uriOverride == nil { e.offset = r.lowerBound }
        e.kind = .malformedRequestURI
        e.detail = "Request-URI: " + e.detail
        throw e
    }
}

extension SIPHeaderField {
    /// The first value of a list, without splitting the rest.
    public static func firstListValue(_ v: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        let comma = nextListComma(v, from: v.startIndex)
        return comma == v.endIndex ? v : v[v.startIndex..<comma].trimmingWSP()
    }
}
