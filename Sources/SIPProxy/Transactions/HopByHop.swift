import SIPCore

/// The requests a proxy sends hop by hop for its own branches: the ACK of
/// a non-2xx final (RFC 3261 §17.1.1.3) and the CANCEL of a branch (§9.1).
/// Both copy the branch request's Request-URI, top Via (the proxy's own,
/// so they match its client transaction downstream), From, Call-ID, CSeq
/// number and Route set.
enum HopByHop {
    /// ACK: the To of the response (with the callee's tag).
    static func ack(for request: SIPMessage, responseTo: ArraySlice<UInt8>?) -> [UInt8] {
        build(.ack, request, to: responseTo ?? request.headerValue(.to))
    }

    /// CANCEL: the To of the request (no tag).
    static func cancel(for request: SIPMessage) -> [UInt8] {
        build(.cancel, request, to: request.headerValue(.to))
    }

    private static func build(_ method: SIPMethod, _ r: SIPMessage, to: ArraySlice<UInt8>?) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(512)
        func line(_ name: String, _ value: ArraySlice<UInt8>) {
            out.append(contentsOf: name.utf8)
            out.append(contentsOf: ": ".utf8)
            out.append(contentsOf: value)
            out.append(contentsOf: "\r\n".utf8)
        }
        out.append(contentsOf: method.name.utf8)
        out.append(0x20)
        out.append(contentsOf: (r.requestURIString ?? "").utf8)
        out.append(contentsOf: " SIP/2.0\r\n".utf8)
        if let via = r.headerValue(.via) { line("Via", SIPHeaderField.firstListValue(via)) }
        if let v = r.headerValue(.from) { line("From", v) }
        if let to { line("To", to) }
        if let v = r.headerValue(.callID) { line("Call-ID", v) }
        for v in r.headerValues(.route) { line("Route", v) }
        let number = ((try? r.cseq()) ?? nil)?.number ?? 1
        out.append(contentsOf: "CSeq: \(number) \(method.name)\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n".utf8)
        return out
    }
}
