#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Limits applied while parsing, so that hostile input cannot make a
/// message arbitrarily large.
public struct SIPLimits: Sendable, Equatable {
    /// Most octets allowed from the start line to the empty line.
    public var maxHeaderBytes: Int
    /// Most octets allowed in a body.
    public var maxBodyBytes: Int
    /// Most header lines allowed.
    public var maxHeaderFields: Int

    public init(maxHeaderBytes: Int = 32 * 1024, maxBodyBytes: Int = 256 * 1024, maxHeaderFields: Int = 256) {
        self.maxHeaderBytes = maxHeaderBytes
        self.maxBodyBytes = maxBodyBytes
        self.maxHeaderFields = maxHeaderFields
    }

    public static let `default` = SIPLimits()
}

/// How the octets of a message were delimited by the transport.
public enum SIPFraming: Sendable {
    /// One UDP datagram: the message ends at the datagram's end; a missing
    /// Content-Length means "the rest of the datagram" (RFC 3261 §18.3), and
    /// octets beyond Content-Length are ignored.
    case datagram
    /// Cut from a TCP/TLS stream by `SIPStreamFramer`: Content-Length is
    /// mandatory and matches the body exactly.
    case stream
}

/// Where one header field's octets are: plain integers only, so the list
/// of fields copies without reference counting.
@usableFromInline
struct HeaderEntry: Sendable {
    @usableFromInline var name: SIPHeaderName
    /// -1: the octets are in the message storage; otherwise an index into
    /// `SIPMessage.owned` (a folded or edited field).
    @usableFromInline var source: Int32
    @usableFromInline var nameStart: Int32
    @usableFromInline var nameEnd: Int32
    @usableFromInline var valueStart: Int32
    @usableFromInline var valueEnd: Int32
    /// The original line(s), CRLF included; lineStart < 0 when the field
    /// was added or changed and must be written out anew.
    @usableFromInline var lineStart: Int32
    @usableFromInline var lineEnd: Int32

    @usableFromInline var isOriginal: Bool { lineStart >= 0 }
}

/// A SIP request or response.
///
/// The message keeps the octets it was parsed from. Parsing up front finds
/// only the start line, the header lines and the body; typed values (Via,
/// From, CSeq, …) are parsed when asked for. Edits (see `SIPMessage+Edit`)
/// change the header list, and serialisation copies every unchanged line
/// from the original octets.
public struct SIPMessage: Sendable {
    /// The octets the message was parsed from (for a datagram, possibly
    /// followed by ignored trailing octets).
    public let storage: [UInt8]

    /// Request or response start line, as ranges into `storage`.
    public enum StartLine: Sendable {
        case request(method: SIPMethod, uri: Range<Int>)
        case response(code: Int, reason: Range<Int>)
    }

    public internal(set) var startLine: StartLine
    /// Range of the start line including its line end.
    let startLineRange: Range<Int>
    /// A Request-URI replaced by an edit.
    var uriOverride: [UInt8]?
    /// True once the Request-URI was rewritten (then it differs from the one
    /// `validate()` parsed).
    public var requestURIRewritten: Bool { uriOverride != nil }
    /// The header fields in order.
    @usableFromInline var entries: [HeaderEntry]
    /// Octets of folded or edited fields: name, then value.
    @usableFromInline var owned: [[UInt8]]
    /// Range of the body in `storage`.
    let bodyRange: Range<Int>
    /// A body replaced by an edit.
    var bodyOverride: [UInt8]?
    /// Range of the empty line ending the header section.
    let headerTerminator: Range<Int>

    // MARK: Reading

    public var isRequest: Bool {
        if case .request = startLine { return true }
        return false
    }

    /// The request method; nil for a response.
    public var method: SIPMethod? {
        if case .request(let m, _) = startLine { return m }
        return nil
    }

    /// The status code; nil for a request.
    public var statusCode: Int? {
        if case .response(let c, _) = startLine { return c }
        return nil
    }

    /// The reason phrase of a response.
    public var reasonPhrase: String? {
        if case .response(_, let r) = startLine { return ASCII.string(storage[r]) }
        return nil
    }

    /// The Request-URI octets as they stand now (after any rewrite).
    public var requestURIBytes: ArraySlice<UInt8>? {
        guard case .request(_, let r) = startLine else { return nil }
        if let o = uriOverride { return o[...] }
        return storage[r]
    }

    /// The Request-URI as text.
    public var requestURIString: String? { requestURIBytes.map(ASCII.string) }

    /// The body octets.
    public var body: ArraySlice<UInt8> {
        if let b = bodyOverride { return b[...] }
        return storage[bodyRange]
    }

    /// Number of header fields.
    public var headerCount: Int { entries.count }

    /// The header fields in order (a view built on demand).
    public var headers: [SIPHeaderField] { entries.map(field) }

    @usableFromInline
    func field(_ e: HeaderEntry) -> SIPHeaderField {
        let bytes = e.source < 0 ? storage : owned[Int(e.source)]
        return SIPHeaderField(
            name: e.name,
            rawName: bytes[Int(e.nameStart)..<Int(e.nameEnd)],
            value: bytes[Int(e.valueStart)..<Int(e.valueEnd)],
            originalLine: e.isOriginal ? Int(e.lineStart)..<Int(e.lineEnd) : nil)
    }

    /// The value octets of an entry.
    @usableFromInline
    func value(_ e: HeaderEntry) -> ArraySlice<UInt8> {
        if e.source < 0 { return storage[Int(e.valueStart)..<Int(e.valueEnd)] }
        return owned[Int(e.source)][Int(e.valueStart)..<Int(e.valueEnd)]
    }

    /// Offset of an entry's line in the original octets, for error reports.
    func offset(_ e: HeaderEntry) -> Int { e.isOriginal ? Int(e.lineStart) : 0 }

    /// The entry of the first field with this known name (no field made).
    @inlinable
    func firstEntry(_ name: SIPHeaderName) -> HeaderEntry? {
        for e in entries where e.name == name { return e }
        return nil
    }

    /// The first field with this known name.
    @inlinable
    public func header(_ name: SIPHeaderName) -> SIPHeaderField? {
        firstEntry(name).map(field)
    }

    /// The value of the first field with this known name.
    @inlinable
    public func headerValue(_ name: SIPHeaderName) -> ArraySlice<UInt8>? {
        firstEntry(name).map(value)
    }

    /// The first field with this name (any spelling, compact forms included).
    public func header(named name: String) -> SIPHeaderField? {
        let known = SIPHeaderName.lookup(name.utf8)
        if known != .other { return header(known) }
        for e in entries where e.name == .other {
            let f = field(e)
            if f.hasName(name) { return f }
        }
        return nil
    }

    /// Every field with this known name, in order.
    public func headers(_ name: SIPHeaderName) -> [SIPHeaderField] {
        entries.filter { $0.name == name }.map(field)
    }

    /// All values of a list-valued header across all its lines, in order.
    public func headerValues(_ name: SIPHeaderName) -> [ArraySlice<UInt8>] {
        var out: [ArraySlice<UInt8>] = []
        for e in entries where e.name == name { out.append(contentsOf: field(e).values) }
        return out
    }

    /// How many values a list-valued header has across all its lines,
    /// counted without building an array.
    public func listValueCount(_ name: SIPHeaderName) -> Int {
        var n = 0
        for e in entries where e.name == name { SIPHeaderField.forEachListValue(value(e)) { _ in n += 1 } }
        return n
    }

    /// The text value of the first field with this name.
    public func headerValue(_ name: String) -> String? { header(named: name)?.valueString }

    // MARK: Parsing

    /// Parses one message.
    ///
    /// - Parameters:
    ///   - bytes: the octets; for `.datagram` the whole datagram.
    ///   - framing: how the transport delimited the message.
    ///   - limits: size limits.
    /// - Throws: `SIPParseError` naming what is wrong and where.
    public static func parse(_ bytes: [UInt8], framing: SIPFraming = .datagram, limits: SIPLimits = .default) throws(SIPParseError) -> SIPMessage {
        var p = MessageParser(bytes: bytes, framing: framing, limits: limits)
        return try p.parse()
    }

    /// Convenience for tests and tools: parses a message given as text.
    public static func parse(_ text: String, framing: SIPFraming = .datagram) throws(SIPParseError) -> SIPMessage {
        try parse(Array(text.utf8), framing: framing)
    }

    init(storage: [UInt8], startLine: StartLine, startLineRange: Range<Int>, entries: [HeaderEntry], owned: [[UInt8]], headerTerminator: Range<Int>, bodyRange: Range<Int>) {
        self.storage = storage
        self.startLine = startLine
        self.startLineRange = startLineRange
        self.entries = entries
        self.owned = owned
        self.headerTerminator = headerTerminator
        self.bodyRange = bodyRange
    }
}

/// The one-pass scanner behind `SIPMessage.parse`.
struct MessageParser {
    let bytes: [UInt8]
    let framing: SIPFraming
    let limits: SIPLimits

    /// Finds the end of the line starting at `from`: returns the index of the
    /// first octet of the line terminator and the index after it. Accepts
    /// CRLF and, leniently, a bare LF.
    @inline(__always)
    static func lineEnd(_ buf: UnsafeBufferPointer<UInt8>, from: Int, limit: Int) -> (content: Int, next: Int)? {
        guard from < limit, let base = buf.baseAddress,
              let p = memchr(base + from, Int32(ASCII.lf), limit - from)
        else { return nil }
        let i = base.distance(to: p.assumingMemoryBound(to: UInt8.self))
        let content = (i > from && buf[i - 1] == ASCII.cr) ? i - 1 : i
        return (content, i + 1)
    }

    mutating func parse() throws(SIPParseError) -> SIPMessage {
        let bytes = self.bytes
        let framing = self.framing
        let limits = self.limits
        let result: Result<SIPMessage, SIPParseError> = bytes.withUnsafeBufferPointer { buf in
            do throws(SIPParseError) {
                return .success(try MessageParser.scan(buf, storage: bytes, framing: framing, limits: limits))
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    static func scan(_ buf: UnsafeBufferPointer<UInt8>, storage: [UInt8], framing: SIPFraming, limits: SIPLimits) throws(SIPParseError) -> SIPMessage {
        let n = buf.count
        var pos = 0
        // RFC 3261 §7.5: ignore CRLFs before the start line.
        while pos < n, buf[pos] == ASCII.cr || buf[pos] == ASCII.lf { pos += 1 }
        let headerLimit = min(n, pos + limits.maxHeaderBytes)
        guard let (slContent, slNext) = lineEnd(buf, from: pos, limit: headerLimit) else {
            if n - pos >= limits.maxHeaderBytes { throw SIPParseError(.tooLarge, offset: pos, "start line too long") }
            throw SIPParseError(.unterminatedHeaders, offset: pos, "no end of start line")
        }
        let startLine = try parseStartLine(buf, pos..<slContent)
        let startLineRange = pos..<slNext

        var entries: [HeaderEntry] = []
        entries.reserveCapacity(20)
        var owned: [[UInt8]] = []
        var cur = slNext
        var contentLength: UInt64? = nil
        var terminator: Range<Int>? = nil
        while cur < headerLimit {
            guard let (content, next) = lineEnd(buf, from: cur, limit: headerLimit) else { break }
            if content == cur {
                terminator = cur..<next
                break
            }
            let first = buf[cur]
            if ASCII.isWSP(first) {
                throw SIPParseError(.malformedHeaderLine, offset: cur, "continuation line without a header")
            }
            // Name: token chars, then optional WSP, then ':'.
            var i = cur
            while i < content, ASCII.isToken(buf[i]) { i += 1 }
            let nameEnd = i
            while i < content, ASCII.isWSP(buf[i]) { i += 1 }
            guard nameEnd > cur, i < content, buf[i] == ASCII.colon else {
                throw SIPParseError(.malformedHeaderLine, offset: cur, "header line without a name and colon")
            }
            let valueStart = i + 1
            // Folded continuation lines.
            var lineEndContent = content
            var lineNext = next
            var folded = false
            while lineNext < headerLimit, ASCII.isWSP(buf[lineNext]) {
                guard let (c2, n2) = lineEnd(buf, from: lineNext, limit: headerLimit) else { break }
                folded = true
                lineEndContent = c2
                lineNext = n2
            }
            let name = SIPHeaderName.lookup(buffer: UnsafeBufferPointer(rebasing: buf[cur..<nameEnd]))
            var entry = HeaderEntry(name: name, source: -1, nameStart: Int32(cur), nameEnd: Int32(nameEnd),
                                    valueStart: 0, valueEnd: 0, lineStart: Int32(cur), lineEnd: Int32(lineNext))
            let value: UnsafeBufferPointer<UInt8>
            if folded {
                // name octets, then the unfolded value
                var own = Array(UnsafeBufferPointer(rebasing: buf[cur..<nameEnd]))
                let unfolded = unfold(buf, valueStart..<lineEndContent)
                entry.source = Int32(owned.count)
                entry.nameStart = 0
                entry.nameEnd = Int32(own.count)
                entry.valueStart = Int32(own.count)
                own.append(contentsOf: unfolded)
                entry.valueEnd = Int32(own.count)
                owned.append(own)
                value = UnsafeBufferPointer(rebasing: buf[0..<0])
            } else {
                var lo = valueStart, hi = lineEndContent
                while lo < hi, ASCII.isWSP(buf[lo]) { lo += 1 }
                while hi > lo, ASCII.isWSP(buf[hi - 1]) { hi -= 1 }
                entry.valueStart = Int32(lo)
                entry.valueEnd = Int32(hi)
                value = UnsafeBufferPointer(rebasing: buf[lo..<hi])
            }
            if name == .contentLength {
                let clValue: [UInt8] = folded ? Array(owned[Int(entry.source)][Int(entry.valueStart)...]) : Array(value)
                guard let v = ASCII.parseDecimal(clValue, max: UInt64(Int32.max)) else {
                    throw SIPParseError(.invalidContentLength, header: "Content-Length", offset: valueStart, "Content-Length is not a non-negative number")
                }
                if let old = contentLength, old != v {
                    throw SIPParseError(.invalidContentLength, header: "Content-Length", offset: cur, "two different Content-Length values")
                }
                contentLength = v
            }
            entries.append(entry)
            if entries.count > limits.maxHeaderFields {
                throw SIPParseError(.tooLarge, offset: cur, "too many header fields")
            }
            cur = lineNext
        }
        guard let term = terminator else {
            if headerLimit < n { throw SIPParseError(.tooLarge, offset: headerLimit, "header section too large") }
            throw SIPParseError(.unterminatedHeaders, offset: cur, "header section does not end with an empty line")
        }
        let bodyStart = term.upperBound
        let available = n - bodyStart
        let bodyRange: Range<Int>
        if let cl = contentLength {
            let len = Int(cl)
            if len > limits.maxBodyBytes { throw SIPParseError(.tooLarge, header: "Content-Length", offset: bodyStart, "body larger than \(limits.maxBodyBytes) octets") }
            if len > available {
                throw SIPParseError(.truncatedBody, header: "Content-Length", offset: bodyStart, "Content-Length \(len) but only \(available) body octets")
            }
            if framing == .stream && len != available {
                throw SIPParseError(.invalidContentLength, header: "Content-Length", offset: bodyStart, "body length does not match Content-Length")
            }
            bodyRange = bodyStart..<(bodyStart + len)
        } else {
            if framing == .stream {
                throw SIPParseError(.invalidContentLength, header: "Content-Length", offset: bodyStart, "Content-Length is required on a stream transport")
            }
            if available > limits.maxBodyBytes { throw SIPParseError(.tooLarge, offset: bodyStart, "body larger than \(limits.maxBodyBytes) octets") }
            bodyRange = bodyStart..<n
        }
        return SIPMessage(storage: storage, startLine: startLine, startLineRange: startLineRange, entries: entries, owned: owned, headerTerminator: term, bodyRange: bodyRange)
    }

    /// Undoes line folding: every line end followed by white space becomes
    /// one space; the result is trimmed.
    static func unfold(_ buf: UnsafeBufferPointer<UInt8>, _ r: Range<Int>) -> ArraySlice<UInt8> {
        // (returns a slice of a fresh array)
        var out: [UInt8] = []
        out.reserveCapacity(r.count)
        var i = r.lowerBound
        while i < r.upperBound {
            let c = buf[i]
            if c == ASCII.cr || c == ASCII.lf {
                while i < r.upperBound, buf[i] == ASCII.cr || buf[i] == ASCII.lf || ASCII.isWSP(buf[i]) { i += 1 }
                out.append(ASCII.sp)
                continue
            }
            out.append(c)
            i += 1
        }
        return out[...].trimmingWSP()
    }

    static func parseStartLine(_ buf: UnsafeBufferPointer<UInt8>, _ r: Range<Int>) throws(SIPParseError) -> SIPMessage.StartLine {
        let line = UnsafeBufferPointer(rebasing: buf[r])
        // Response: SIP-Version SP Status-Code SP Reason-Phrase
        if line.count >= 4, ASCII.equalsLower(line[0..<4], "sip/") {
            guard let sp1 = line.firstIndex(of: ASCII.sp) else {
                throw SIPParseError(.malformedStartLine, offset: r.lowerBound, "status line without status code")
            }
            try checkVersion(line[0..<sp1], offset: r.lowerBound)
            let codeStart = sp1 + 1
            var i = codeStart
            while i < line.count, ASCII.isDigit(line[i]) { i += 1 }
            guard i - codeStart == 3, i < line.count, line[i] == ASCII.sp else {
                throw SIPParseError(.malformedStartLine, offset: r.lowerBound + codeStart, "status code is not three digits followed by a space")
            }
            let code = Int(ASCII.parseDecimal(line[codeStart..<i], max: 999)!)
            guard (100...699).contains(code) else {
                throw SIPParseError(.malformedStartLine, offset: r.lowerBound + codeStart, "status code \(code) out of range 100-699")
            }
            for c in line[(i + 1)...] where c < 0x20 && c != ASCII.tab {
                throw SIPParseError(.malformedStartLine, offset: r.lowerBound + i, "control character in reason phrase")
            }
            return .response(code: code, reason: (r.lowerBound + i + 1)..<r.upperBound)
        }
        // Request: Method SP Request-URI SP SIP-Version
        var i = 0
        while i < line.count, ASCII.isToken(line[i]) { i += 1 }
        guard i > 0, i < line.count, line[i] == ASCII.sp else {
            throw SIPParseError(.malformedStartLine, offset: r.lowerBound, "request line does not start with a method token and a space")
        }
        let method = SIPMethod(bytes: line[0..<i])
        let uriStart = i + 1
        guard let sp2 = line[uriStart...].firstIndex(of: ASCII.sp), sp2 > uriStart else {
            throw SIPParseError(.malformedStartLine, offset: r.lowerBound + uriStart, "request line needs exactly one space around the Request-URI and a SIP-Version")
        }
        let versionBytes = line[(sp2 + 1)...]
        if versionBytes.contains(ASCII.sp) || versionBytes.contains(ASCII.tab) {
            throw SIPParseError(.malformedStartLine, offset: r.lowerBound + sp2, "extra white space in the request line")
        }
        try checkVersion(versionBytes, offset: r.lowerBound + sp2 + 1)
        let uri = line[uriStart..<sp2]
        if uri.contains(ASCII.tab) {
            throw SIPParseError(.malformedStartLine, offset: r.lowerBound + uriStart, "white space in the Request-URI")
        }
        return .request(method: method, uri: (r.lowerBound + uriStart)..<(r.lowerBound + sp2))
    }

    /// SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT; only 2.0 is served.
    static func checkVersion(_ v: Slice<UnsafeBufferPointer<UInt8>>, offset: Int) throws(SIPParseError) {
        if v.count == 7, ASCII.equalsLower(v, "sip/2.0") { return }
        // Well-formed but another version → 505; otherwise malformed.
        guard v.count > 4, ASCII.equalsLower(v.prefix(4), "sip/") else {
            throw SIPParseError(.malformedStartLine, offset: offset, "missing or malformed SIP-Version")
        }
        let rest = v.dropFirst(4)
        let parts = rest.split(separator: ASCII.dot, omittingEmptySubsequences: false)
        if parts.count == 2, parts.allSatisfy({ !$0.isEmpty && $0.allSatisfy(ASCII.isDigit) }) {
            throw SIPParseError(.unsupportedVersion, offset: offset, "SIP version \(ASCII.string(rest)) is not supported")
        }
        throw SIPParseError(.malformedStartLine, offset: offset, "malformed SIP-Version")
    }
}
