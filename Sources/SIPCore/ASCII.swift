/// Byte classes and small helpers over raw octets used by every SIP parser
/// in this module. SIP is defined over octets (RFC 3261 §25), so all parsing
/// works on `UInt8` and never goes through `String` on the hot path.
@usableFromInline
enum ASCII {
    static let cr: UInt8 = 0x0D
    static let lf: UInt8 = 0x0A
    static let sp: UInt8 = 0x20
    static let tab: UInt8 = 0x09
    static let colon: UInt8 = 0x3A
    static let semicolon: UInt8 = 0x3B
    static let comma: UInt8 = 0x2C
    static let equals: UInt8 = 0x3D
    static let quote: UInt8 = 0x22
    static let backslash: UInt8 = 0x5C
    static let lessThan: UInt8 = 0x3C
    static let greaterThan: UInt8 = 0x3E
    static let slash: UInt8 = 0x2F
    static let at: UInt8 = 0x40
    static let question: UInt8 = 0x3F
    static let ampersand: UInt8 = 0x26
    static let percent: UInt8 = 0x25
    static let openBracket: UInt8 = 0x5B
    static let closeBracket: UInt8 = 0x5D
    static let star: UInt8 = 0x2A
    static let dot: UInt8 = 0x2E
    static let dash: UInt8 = 0x2D

    // Character classes as 128-bit masks (two words), so a test is a shift
    // and no table lookup or lazy global initialisation is involved.

    /// RFC 3261 `token`: alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~"
    @usableFromInline static let tokenLow: UInt64 = 0x03FF_6CA2_0000_0000
    @usableFromInline static let tokenHigh: UInt64 = 0x47FF_FFFF_87FF_FFFE
    /// RFC 3261 `unreserved` = alphanum / mark.
    @usableFromInline static let unreservedLow: UInt64 = 0x03FF_6782_0000_0000
    @usableFromInline static let unreservedHigh: UInt64 = 0x47FF_FFFE_87FF_FFFE

    @inline(__always) static func inMask(_ c: UInt8, _ low: UInt64, _ high: UInt64) -> Bool {
        if c < 64 { return (low >> UInt64(c)) & 1 == 1 }
        if c < 128 { return (high >> UInt64(c - 64)) & 1 == 1 }
        return false
    }

    @inline(__always) static func isToken(_ c: UInt8) -> Bool { inMask(c, tokenLow, tokenHigh) }
    @inline(__always) static func isUnreserved(_ c: UInt8) -> Bool { inMask(c, unreservedLow, unreservedHigh) }
    @inline(__always) static func isWSP(_ c: UInt8) -> Bool { c == sp || c == tab }
    @inline(__always) static func isDigit(_ c: UInt8) -> Bool { c &- 0x30 < 10 }
    @inline(__always) static func isAlpha(_ c: UInt8) -> Bool { (c | 0x20) &- 0x61 < 26 }
    @inline(__always) static func isHex(_ c: UInt8) -> Bool { isDigit(c) || (c | 0x20) &- 0x61 < 6 }
    @inline(__always) static func lower(_ c: UInt8) -> UInt8 { (c &- 0x41 < 26) ? c | 0x20 : c }

    static func hexValue(_ c: UInt8) -> UInt8 {
        if isDigit(c) { return c - 0x30 }
        return (c | 0x20) - 0x61 + 10
    }

    /// Case-insensitive comparison of an octet slice with an ASCII literal
    /// given in lower case.
    @inline(__always)
    static func equalsLower<C: Collection>(_ bytes: C, _ lowerLiteral: StaticString) -> Bool where C.Element == UInt8 {
        guard bytes.count == lowerLiteral.utf8CodeUnitCount else { return false }
        return lowerLiteral.withUTF8Buffer { lit in
            var i = 0
            for b in bytes {
                if lower(b) != lit[i] { return false }
                i += 1
            }
            return true
        }
    }

    /// Case-insensitive comparison of two octet collections (ASCII folding only).
    static func equalsIgnoringCase<A: Collection, B: Collection>(_ a: A, _ b: B) -> Bool
    where A.Element == UInt8, B.Element == UInt8 {
        guard a.count == b.count else { return false }
        return zip(a, b).allSatisfy { lower($0) == lower($1) }
    }

    /// The same over contiguous octets, without iterator overhead.
    static func equalsIgnoringCase(_ a: UnsafeBufferPointer<UInt8>, _ b: UnsafeBufferPointer<UInt8>) -> Bool {
        guard a.count == b.count else { return false }
        for i in 0..<a.count where a[i] != b[i] && lower(a[i]) != lower(b[i]) { return false }
        return true
    }

    /// Parses an unsigned decimal number that must fit in `max`.
    /// Leading zeros are allowed (RFC 4475 §3.1.1.1). Returns nil on an
    /// empty field, a non-digit, or overflow — never wraps.
    static func parseDecimal<C: Collection>(_ bytes: C, max: UInt64) -> UInt64? where C.Element == UInt8 {
        if bytes.isEmpty { return nil }
        var v: UInt64 = 0
        for b in bytes {
            guard isDigit(b) else { return nil }
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (s, o2) = m.addingReportingOverflow(UInt64(b &- 0x30))
            if o1 || o2 || s > max { return nil }
            v = s
        }
        return v
    }

    static func string<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
        String(decoding: bytes, as: UTF8.self)
    }

    /// `string(bytes)`, but a string literal (nothing built) when the
    /// octets are a word that occurs in almost every message: Via tokens
    /// and common parameter names, exact spelling.
    static func word(_ b: ArraySlice<UInt8>) -> String {
        @inline(__always) func eq(_ lit: StaticString) -> Bool {
            lit.withUTF8Buffer { l in
                var i = b.startIndex
                for c in l {
                    if b[i] != c { return false }
                    i += 1
                }
                return true
            }
        }
        switch b.count {
        case 1: if eq("q") { return "q" }
        case 2:
            if eq("lr") { return "lr" }
            if eq("ob") { return "ob" }
        case 3:
            if eq("SIP") { return "SIP" }
            if eq("2.0") { return "2.0" }
            if eq("TLS") { return "TLS" }
            if eq("UDP") { return "UDP" }
            if eq("TCP") { return "TCP" }
            if eq("tag") { return "tag" }
            if eq("ttl") { return "ttl" }
        case 4: if eq("user") { return "user" }
        case 5:
            if eq("rport") { return "rport" }
            if eq("maddr") { return "maddr" }
            if eq("alias") { return "alias" }
        case 6:
            if eq("branch") { return "branch" }
            if eq("reg-id") { return "reg-id" }
        case 7: if eq("expires") { return "expires" }
        case 8: if eq("received") { return "received" }
        case 9: if eq("transport") { return "transport" }
        case 13: if eq("+sip.instance") { return "+sip.instance" }
        default: break
        }
        return String(decoding: b, as: UTF8.self)
    }
}

extension ArraySlice where Element == UInt8 {
    /// The slice without leading and trailing SP/HTAB.
    @inlinable
    func trimmingWSP() -> ArraySlice<UInt8> {
        var lo = startIndex
        var hi = endIndex
        while lo < hi, self[lo] == 0x20 || self[lo] == 0x09 { lo += 1 }
        while hi > lo, self[hi - 1] == 0x20 || self[hi - 1] == 0x09 { hi -= 1 }
        return self[lo..<hi]
    }
}

extension StringProtocol {
    /// ASCII case-insensitive equality without allocating lowercased copies
    /// (host names, IP literals, tokens).
    public func equalsIgnoringASCIICase<S: StringProtocol>(_ other: S) -> Bool {
        ASCII.equalsIgnoringCase(utf8, other.utf8)
    }
}

extension String {
    /// ASCII case-insensitive equality over the contiguous UTF-8 of both
    /// strings (the generic form above is not specialised across modules
    /// and was 9 % of a REGISTER's CPU on the received/rport check).
    public func equalsIgnoringASCIICase(_ other: String) -> Bool {
        guard utf8.count == other.utf8.count else { return false }
        var a = self, b = other
        return a.withUTF8 { pa in b.withUTF8 { pb in ASCII.equalsIgnoringCase(pa, pb) } }
    }
}

extension Substring {
    /// See `String.equalsIgnoringASCIICase(_:)`.
    public func equalsIgnoringASCIICase(_ other: String) -> Bool {
        guard utf8.count == other.utf8.count else { return false }
        var a = self, b = other
        return a.withUTF8 { pa in b.withUTF8 { pb in ASCII.equalsIgnoringCase(pa, pb) } }
    }
}
