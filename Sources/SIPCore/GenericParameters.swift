/// `;name=value` parameters of a header value (RFC 3261 `generic-param`),
/// kept as written. Values may be tokens, hosts or quoted strings.
public struct GenericParameters: Sendable, Equatable {
    public var items: [SIPURI.Parameter]

    public init(_ items: [SIPURI.Parameter] = []) { self.items = items }

    /// The value of a parameter (`""` for a bare one), nil when absent.
    /// Names compare case-insensitively.
    public subscript(_ name: String) -> String? {
        guard let i = index(of: name) else { return nil }
        return items[i].value ?? ""
    }

    /// The position of a parameter; names compare case-insensitively.
    /// Names that differ in length are skipped without comparing octets,
    /// and the usual case (the same interned spelling) is an identity test.
    func index(of name: String) -> Int? {
        let n = name.utf8.count
        for i in items.indices where items[i].name.utf8.count == n {
            if items[i].name == name || items[i].name.equalsIgnoringASCIICase(name) { return i }
        }
        return nil
    }

    public func contains(_ name: String) -> Bool { index(of: name) != nil }

    public mutating func set(_ name: String, _ value: String?) {
        if let i = index(of: name) {
            items[i].value = value
        } else {
            items.append(SIPURI.Parameter(name, value))
        }
    }

    public mutating func remove(_ name: String) {
        items.removeAll { ASCII.equalsIgnoringCase($0.name.utf8, name.utf8) }
    }

    /// `;a=b;c` as text.
    public var description: String {
        var s = ""
        for p in items {
            s += ";" + p.name
            if let v = p.value { s += "=" + v }
        }
        return s
    }

    /// Parses `*( SWS ";" SWS name [ SWS "=" SWS value ] )` starting at
    /// `i`. Stops at the end of `b`. Empty parameters (`;;`) are errors
    /// (RFC 4475 §3.1.2.1).
    static func parse(_ b: ArraySlice<UInt8>, from start: Int, header: String) throws(SIPParseError) -> GenericParameters {
        var out = GenericParameters()
        if start < b.endIndex { out.items.reserveCapacity(4) }
        try scan(b, from: start, header: header) { name, value in
            out.items.append(SIPURI.Parameter(ASCII.word(name), value.map { ASCII.string($0) }))
        }
        return out
    }

    /// Checks the parameters as `parse` does, building nothing, and
    /// returns the value of the first one called `name` (given in lower
    /// case; `""` for a bare one).
    static func check(_ b: ArraySlice<UInt8>, from start: Int, header: String, find name: StaticString) throws(SIPParseError) -> ArraySlice<UInt8>? {
        var found: ArraySlice<UInt8>? = nil
        try scan(b, from: start, header: header) { n, v in
            if found == nil, ASCII.equalsLower(n, name) { found = v ?? b[n.endIndex..<n.endIndex] }
        }
        return found
    }

    /// The grammar behind `parse` and `check`: hands each name and value
    /// (nil for a bare name) to `each`.
    private static func scan(_ b: ArraySlice<UInt8>, from start: Int, header: String,
                             _ each: (ArraySlice<UInt8>, ArraySlice<UInt8>?) -> Void) throws(SIPParseError) {
        var i = start
        func skipWS() { while i < b.endIndex, ASCII.isWSP(b[i]) { i += 1 } }
        skipWS()
        while i < b.endIndex {
            guard b[i] == ASCII.semicolon else {
                throw SIPParseError(.malformedHeader, header: header, offset: i, "expected ';' before a parameter")
            }
            i += 1
            skipWS()
            let ns = i
            while i < b.endIndex, ASCII.isToken(b[i]) { i += 1 }
            guard i > ns else { throw SIPParseError(.malformedHeader, header: header, offset: ns, "empty parameter") }
            let name = b[ns..<i]
            skipWS()
            var value: ArraySlice<UInt8>? = nil
            if i < b.endIndex, b[i] == ASCII.equals {
                i += 1
                skipWS()
                let vs = i
                if i < b.endIndex, b[i] == ASCII.quote {
                    i = try skipQuoted(b, from: i, header: header)
                } else if i < b.endIndex, b[i] == ASCII.openBracket {
                    // IPv6 reference as a value (received, maddr).
                    while i < b.endIndex, b[i] != ASCII.closeBracket { i += 1 }
                    guard i < b.endIndex else { throw SIPParseError(.malformedHeader, header: header, offset: vs, "unterminated IPv6 reference") }
                    i += 1
                } else {
                    while i < b.endIndex, ASCII.isToken(b[i]) || b[i] == ASCII.colon { i += 1 }
                }
                guard i > vs else {
                    throw SIPParseError(.malformedHeader, header: header, offset: vs, "parameter '\(ASCII.string(name))' has '=' but no value")
                }
                value = b[vs..<i]
                skipWS()
            }
            each(name, value)
        }
    }

    /// Returns the index after the closing quote of a quoted string starting at `i`.
    static func skipQuoted(_ b: ArraySlice<UInt8>, from start: Int, header: String) throws(SIPParseError) -> Int {
        var i = start + 1
        while i < b.endIndex {
            let c = b[i]
            if c == ASCII.backslash {
                i += 2
                continue
            }
            if c == ASCII.quote { return i + 1 }
            i += 1
        }
        throw SIPParseError(.malformedHeader, header: header, offset: start, "unterminated quoted string")
    }
}
