import Foundation

/// One Via value (RFC 3261 §20.42, RFC 3581 rport, RFC 5923 alias).
///
/// `SIP / 2.0 / UDP host:port ;params`, with optional white space around
/// each `/` and `:` (RFC 4475 §3.1.1.1).
public struct Via: Sendable, CustomStringConvertible {
    /// Protocol name and version, normally `SIP` and `2.0`.
    public var protocolName: String
    public var protocolVersion: String
    /// Transport token, upper-cased: UDP, TCP, TLS, SCTP, WS, WSS or any other token.
    public var transport: String
    /// sent-by host as written (IPv6 keeps brackets).
    public var host: String
    public var port: UInt16?
    public var parameters: GenericParameters

    public init(transport: String, host: String, port: UInt16?, branch: String?) {
        self.protocolName = "SIP"
        self.protocolVersion = "2.0"
        self.transport = transport
        self.host = host
        self.port = port
        self.parameters = GenericParameters()
        if let branch { parameters.set("branch", branch) }
    }

    init(protocolName: String, protocolVersion: String, transport: String, host: String, port: UInt16?, parameters: GenericParameters) {
        self.protocolName = protocolName
        self.protocolVersion = protocolVersion
        self.transport = transport
        self.host = host
        self.port = port
        self.parameters = parameters
    }

    public var branch: String? { parameters["branch"] }
    public var received: String? { parameters["received"] }
    /// nil: no rport; `.some(nil)`: rport without value; `.some(n)`: with value.
    public var rport: UInt16?? {
        guard let v = parameters["rport"] else { return nil }
        if v.isEmpty { return .some(nil) }
        return .some(UInt16(v))
    }
    public var maddr: String? { parameters["maddr"] }
    public var ttl: UInt8? { parameters["ttl"].flatMap { UInt8($0) } }
    public var hasAlias: Bool { parameters.contains("alias") }

    /// True when the branch starts with the RFC 3261 magic cookie and has
    /// something after it.
    public var hasRFC3261Branch: Bool {
        guard let b = branch, b.hasPrefix("z9hG4bK") else { return false }
        return b.utf8.count > 7
    }

    /// The sent-by host without brackets, lower-cased.
    public var hostName: String {
        var h = host
        if h.hasPrefix("[") && h.hasSuffix("]") { h = String(h.dropFirst().dropLast()) }
        return h.lowercased()
    }

    public var description: String {
        var s = "\(protocolName)/\(protocolVersion)/\(transport) \(host)"
        if let port { s += ":\(port)" }
        return s + parameters.description
    }

    /// Parses one Via value.
    public static func parse(_ b: ArraySlice<UInt8>) throws(SIPParseError) -> Via {
        var i = b.startIndex
        func err(_ what: String, _ at: Int) -> SIPParseError {
            SIPParseError(.malformedHeader, header: "Via", offset: at, what)
        }
        func skipWS() { while i < b.endIndex, ASCII.isWSP(b[i]) { i += 1 } }
        func token() -> ArraySlice<UInt8> {
            let s = i
            while i < b.endIndex, ASCII.isToken(b[i]) { i += 1 }
            return b[s..<i]
        }
        func slash() throws(SIPParseError) {
            skipWS()
            guard i < b.endIndex, b[i] == ASCII.slash else { throw err("expected '/' in sent-protocol", i) }
            i += 1
            skipWS()
        }
        skipWS()
        let pname = token()
        guard !pname.isEmpty else { throw err("missing protocol name", i) }
        try slash()
        let pver = token()
        guard !pver.isEmpty else { throw err("missing protocol version", i) }
        try slash()
        let transport = token()
        guard !transport.isEmpty else { throw err("missing transport", i) }
        let afterTransport = i
        skipWS()
        guard i > afterTransport else { throw err("expected white space before sent-by", i) }
        let hs = i
        if i < b.endIndex, b[i] == ASCII.openBracket {
            while i < b.endIndex, b[i] != ASCII.closeBracket { i += 1 }
            guard i < b.endIndex else { throw err("unterminated IPv6 reference", hs) }
            i += 1
        } else {
            while i < b.endIndex, ASCII.isAlpha(b[i]) || ASCII.isDigit(b[i]) || b[i] == ASCII.dash || b[i] == ASCII.dot || b[i] == 0x5F { i += 1 }
        }
        guard i > hs else { throw err("missing sent-by host", hs) }
        let host = b[hs..<i]
        skipWS()
        var port: UInt16? = nil
        if i < b.endIndex, b[i] == ASCII.colon {
            i += 1
            skipWS()
            let ps = i
            while i < b.endIndex, ASCII.isDigit(b[i]) { i += 1 }
            guard let p = ASCII.parseDecimal(b[ps..<i], max: 65535) else { throw err("invalid sent-by port", ps) }
            port = UInt16(p)
        }
        let params = try GenericParameters.parse(b, from: i, header: "Via")
        if let r = params["rport"], !r.isEmpty, UInt16(r) == nil { throw err("invalid rport value", i) }
        if let t = params["ttl"], UInt8(t) == nil { throw err("invalid ttl value", i) }
        let t = ASCII.word(transport)
        return Via(protocolName: ASCII.word(pname), protocolVersion: ASCII.word(pver),
                   transport: t == "UDP" || t == "TLS" || t == "TCP" ? t : t.uppercased(),
                   host: ASCII.string(host), port: port, parameters: params)
    }
}

extension Via {
    /// The text of one Via value as received, with `;received=` added and
    /// `rport` given its value (RFC 3261 §18.2.1, RFC 3581 §4), edited in
    /// the octets so the rest of the value is kept byte for byte and nothing
    /// is re-serialised. An `rport` without value is removed and written
    /// again at the end with the port.
    ///
    /// Returns nil when the value already has an `rport` with a value or
    /// holds a quoted string (callers then edit the parsed `Via`).
    /// `hasRport`: false when the caller knows the value has no `rport`
    /// parameter (from its parsed `Via`); the value is then not searched.
    public static func stamp(_ value: ArraySlice<UInt8>, received: String?, rport: UInt16?, hasRport: Bool = true) -> [UInt8]? {
        Stamp(value, received: received, rport: rport, hasRport: hasRport)?.octets
    }

    /// A stamped Via value (see `Via.stamp`) not yet written anywhere: the
    /// value as received, what to cut from it and what to append. A
    /// stateless reply writes it straight into its own octets
    /// (`SIPResponseBuilder`), so a request that is only answered is never
    /// edited; `octets` makes the value for a request that is forwarded.
    public struct Stamp: Sendable {
        private let value: ArraySlice<UInt8>
        private let cut: Range<Int>?
        private let received: String?
        private let rport: UInt16?
        /// Octets of the stamped value.
        public let count: Int

        /// The stamp of `value`; nil where `Via.stamp` returns nil.
        public init?(_ value: ArraySlice<UInt8>, received: String?, rport: UInt16?, hasRport: Bool = true) {
            let v = value.trimmingWSP()
            var cut: Range<Int>? = nil
            if rport != nil && hasRport {
                // nil: leave it to the parsed Via; .some(nil): no rport.
                let found: Range<Int>?? = v.withUnsafeBufferPointer { b in
                    guard let base = b.baseAddress else { return .some(nil) }
                    let n = b.count
                    if memchr(base, Int32(ASCII.quote), n) != nil { return nil }
                    var i = 0
                    while i < n, let p = memchr(base + i, Int32(ASCII.semicolon), n - i) {
                        let semi = base.distance(to: p.assumingMemoryBound(to: UInt8.self))
                        var j = semi + 1
                        while j < n, b[j] == ASCII.sp || b[j] == ASCII.tab { j += 1 }
                        if j + 5 <= n, ASCII.equalsLower(UnsafeBufferPointer(rebasing: b[j..<(j + 5)]), "rport") {
                            var k = j + 5
                            while k < n, b[k] == ASCII.sp || b[k] == ASCII.tab { k += 1 }
                            if k == n || b[k] == ASCII.semicolon { return .some(semi..<k) }
                            if b[k] == ASCII.equals { return nil }
                        }
                        i = semi + 1
                    }
                    return .some(nil)
                }
                guard let found else { return nil }
                cut = found.map { (v.startIndex + $0.lowerBound)..<(v.startIndex + $0.upperBound) }
            }
            self.value = v
            self.cut = cut
            self.received = received
            self.rport = rport
            var n = v.count - (cut?.count ?? 0)
            if let received { n += 10 + received.utf8.count }
            if let rport { n += 7 + (rport >= 10_000 ? 5 : rport >= 1000 ? 4 : rport >= 100 ? 3 : rport >= 10 ? 2 : 1) }
            count = n
        }

        /// A whole value written as it is (a Via edited as a parsed value).
        public init(text: [UInt8]) {
            value = text[...]
            cut = nil
            received = nil
            rport = nil
            count = text.count
        }

        /// The stamped value.
        public var octets: [UInt8] {
            OctetWriter.array(capacity: count) { write(&$0) }
        }

        func write(_ w: inout OctetWriter) {
            if let cut {
                w.put(value[value.startIndex..<cut.lowerBound])
                w.put(value[cut.upperBound...])
            } else {
                w.put(value)
            }
            if let received {
                w.put(";received=")
                w.put(received)
            }
            if let rport {
                w.put(";rport=")
                w.putDecimal(Int(rport))
            }
        }
    }
}
