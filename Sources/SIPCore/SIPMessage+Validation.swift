extension SIPMessage {
    /// What validation parsed anyway and a proxy needs again for the same
    /// message (transaction key, received/rport, local tag): kept so no
    /// caller parses the top Via, the tags or CSeq a second time.
    ///
    /// A class: it is handed along with every message (context, transaction
    /// key, replies), and a copy is then one reference, not every field.
    public final class Checked: @unchecked Sendable { // every stored property is an immutable `let` of a value type
        public let topVia: Via
        /// The top Via value's text as received.
        public let topViaText: ArraySlice<UInt8>
        public let fromTag: String?
        public let toTag: String?
        public let cseq: CSeq
        /// The To header of a REGISTER (its AOR is what a registrar
        /// binds); nil for other messages, whose To is only checked.
        public let to: NameAddress?
        /// The Contact values of a request (empty for a response).
        public internal(set) var contacts: [ContactValue] = []
        /// The Request-URI as received (nil for a response).
        public internal(set) var requestURI: SIPURI? = nil

        init(topVia: Via, topViaText: ArraySlice<UInt8>, fromTag: String?, toTag: String?, cseq: CSeq, to: NameAddress?) {
            self.topVia = topVia
            self.topViaText = topViaText
            self.fromTag = fromTag
            self.toTag = toTag
            self.cseq = cseq
            self.to = to
        }
    }

    /// Checks what a proxy relies on before it acts on a message, and
    /// throws the first defect found (RFC 3261 §16.3, RFC 4475 §3.1.2,
    /// §3.3.8): the Request-URI parses and carries no headers; Via, From,
    /// To, Call-ID and CSeq are present, single-valued ones occur once, and
    /// each parses; the CSeq number fits 32 bits and its method matches the
    /// request; Max-Forwards is 0…255; Contact, Route and Record-Route
    /// parse; a Date uses GMT.
    ///
    /// A response that fails this is to be dropped; a request gets
    /// `error.statusCode`. Returns the parsed values callers reuse.
    @discardableResult
    public func validate() throws(SIPParseError) -> Checked {
        if case .request(let method, _) = startLine {
            guard let uri = try requestURI() else { throw SIPParseError(.malformedRequestURI, offset: startLineRange.lowerBound, "no Request-URI") }
            if uri.isSIP && !uri.headers.isEmpty {
                throw SIPParseError(.malformedRequestURI, offset: startLineRange.lowerBound, "Request-URI must not carry headers")
            }
            // What only needs checking is parsed without building strings;
            // a REGISTER keeps To and Contact for the registrar.
            let register = method == .register
            let checked = try checkCommon(keepTo: register)
            if checked.cseq.method != method {
                throw SIPParseError(.methodMismatch, header: "CSeq", offset: firstEntry(.cseq).map(offset) ?? 0,
                                    "CSeq method \(checked.cseq.method) does not match request method \(method)")
            }
            _ = try maxForwards()
            checked.contacts = try contacts(build: register)
            checked.requestURI = uri
            _ = try addressList(.route, build: false)
            _ = try addressList(.recordRoute, build: false)
            try checkDate()
            return checked
        } else {
            return try checkCommon(keepTo: false)
        }
    }

    private func checkCommon(keepTo: Bool) throws(SIPParseError) -> Checked {
        var seen: UInt64 = 0
        for e in entries where e.name.isSingleValued {
            let bit: UInt64 = 1 << (UInt64(e.name.rawValue) & 63)
            if seen & bit != 0 {
                let label = e.name.canonicalName
                throw SIPParseError(.duplicateHeader, header: label, offset: offset(e), "\(label) occurs more than once")
            }
            seen |= bit
        }
        // Present and not empty, read from the entries (no field is made).
        for name in [SIPHeaderName.via, .from, .to, .callID, .cseq] {
            guard let e = firstEntry(name) else {
                let label = name.canonicalName
                throw SIPParseError(.missingHeader, header: label, offset: headerTerminator.lowerBound, "missing \(label) header")
            }
            if e.valueEnd == e.valueStart {
                let label = name.canonicalName
                throw SIPParseError(.malformedHeader, header: label, offset: offset(e), "empty \(label) header")
            }
        }
        let top = try checkVias()
        let fromTag = try checkedTag(.from)
        var to: NameAddress? = nil
        let toTag: String?
        if keepTo {
            to = try nameAddress(.to)
            toTag = to?.tag
        } else {
            toTag = try checkedTag(.to)
        }
        let cseq = try cseq()
        if let e = firstEntry(.callID), !value(e).allSatisfy({ $0 > 0x20 && $0 < 0x7F }) {
            throw SIPParseError(.malformedHeader, header: "Call-ID", offset: offset(e), "Call-ID has white space or non-ASCII octets")
        }
        // Present and non-empty was checked above, so these parsed to values.
        guard let top, let cseq, !keepTo || to != nil else {
            throw SIPParseError(.missingHeader, header: "Via", offset: headerTerminator.lowerBound, "missing Via or CSeq")
        }
        return Checked(topVia: top.via, topViaText: top.text, fromTag: fromTag, toTag: toTag, cseq: cseq, to: to)
    }

    /// RFC 3261 §20.17: SIP-date uses "GMT" only (RFC 4475 §3.1.2.12).
    private func checkDate() throws(SIPParseError) {
        guard let e = firstEntry(.date) else { return }
        let v = value(e)
        if !(v.count >= 3 && v.suffix(3).elementsEqual("GMT".utf8)) {
            throw SIPParseError(.malformedHeader, header: "Date", offset: offset(e), "Date must be in GMT")
        }
    }
}
