import Foundation

/// One header field of a message: its name as spelled, the known name it
/// maps to, and its value with line folding undone and outer white space
/// removed.
///
/// A field read from the wire remembers where its line(s) stand in the
/// original octets; as long as it is not changed, serialisation copies those
/// octets unchanged.
public struct SIPHeaderField: Sendable {
    /// The known header this field is (compact forms resolved), or `.other`.
    public let name: SIPHeaderName
    /// The field name exactly as it was received (or written).
    public let rawName: ArraySlice<UInt8>
    /// The value, unfolded and trimmed.
    public let value: ArraySlice<UInt8>
    /// The line(s) of this field in the original message, CRLF included;
    /// nil for a field added by an edit.
    @usableFromInline var originalLine: Range<Int>?

    init(name: SIPHeaderName, rawName: ArraySlice<UInt8>, value: ArraySlice<UInt8>, originalLine: Range<Int>?) {
        self.name = name
        self.rawName = rawName
        self.value = value
        self.originalLine = originalLine
    }

    /// A new field to add to a message.
    public init(_ name: String, _ value: String) {
        let raw = ArraySlice(Array(name.utf8))
        self.name = SIPHeaderName.lookup(raw)
        self.rawName = raw
        self.value = ArraySlice(Array(value.utf8))
        self.originalLine = nil
    }

    /// A new field with a known name and a raw value.
    public init(_ name: SIPHeaderName, value: ArraySlice<UInt8>) {
        self.name = name
        self.rawName = ArraySlice(Array(name.canonicalName.utf8))
        self.value = value
        self.originalLine = nil
    }

    /// The field name as text.
    public var nameString: String { ASCII.string(rawName) }
    /// The value as text (UTF-8, invalid sequences replaced).
    public var valueString: String { ASCII.string(value) }

    /// True when this field's name equals `other` ignoring case; a compact
    /// form equals its long form.
    public func hasName(_ other: String) -> Bool {
        let known = SIPHeaderName.lookup(other.utf8)
        if known != .other { return known == name }
        return name == .other && ASCII.equalsIgnoringCase(rawName, other.utf8)
    }

    /// The comma-separated values of this field, split outside quoted
    /// strings and angle brackets (RFC 3261 §7.3.1), each trimmed.
    /// Fields that are not list-valued yield their whole value.
    public var values: [ArraySlice<UInt8>] {
        guard name.isMultiValued || name == .other else { return [value] }
        return SIPHeaderField.splitList(value)
    }

    static func splitList(_ v: ArraySlice<UInt8>) -> [ArraySlice<UInt8>] {
        var out: [ArraySlice<UInt8>] = []
        forEachListValue(v) { out.append($0) }
        return out
    }

    /// Hands each value of a comma-separated list to `body`, trimmed, in
    /// order, without building an array of them.
    @inline(__always)
    static func forEachListValue<E: Error>(_ v: ArraySlice<UInt8>, _ body: (ArraySlice<UInt8>) throws(E) -> Void) throws(E) {
        var start = v.startIndex
        while true {
            let comma = nextListComma(v, from: start)
            try body(v[start..<comma].trimmingWSP())
            if comma == v.endIndex { return }
            start = comma + 1
        }
    }

    /// Index of the next comma that separates list values (outside quoted
    /// strings and angle brackets), or the end.
    static func nextListComma(_ v: ArraySlice<UInt8>, from: Int) -> Int {
        v.withUnsafeBufferPointer { p -> Int in
            guard let base = p.baseAddress else { return v.endIndex }
            var i = from - v.startIndex
            let n = p.count
            // Most values hold no comma at all.
            if i >= n || memchr(base + i, Int32(ASCII.comma), n - i) == nil { return v.endIndex }
            var inQuote = false
            var inAngle = false
            while i < n {
                let c = p[i]
                if inQuote {
                    if c == ASCII.backslash { i += 1 } else if c == ASCII.quote { inQuote = false }
                } else if c == ASCII.quote {
                    inQuote = true
                } else if c == ASCII.lessThan {
                    inAngle = true
                } else if c == ASCII.greaterThan {
                    inAngle = false
                } else if c == ASCII.comma && !inAngle {
                    return v.startIndex + i
                }
                i += 1
            }
            return v.endIndex
        }
    }
}
