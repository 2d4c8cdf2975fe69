/// Builds responses a server sends on its own (RFC 3261 §8.2.6): the
/// Via, From, To, Call-ID and CSeq of the request copied unchanged, a To
/// tag added when the request had none (except for 100), Content-Length 0.
public enum SIPResponseBuilder {
    /// A response to a parsed request.
    /// `toHasTag`: whether the request's To carries a tag, when the caller
    /// already knows (from `validate()`); otherwise the To is parsed here.
    public static func response(to request: SIPMessage, code: Int, reason: String, toTag: String?, toHasTag: Bool? = nil, extraHeaders: [(String, String)] = [], body: [UInt8] = [], contentType: String? = nil) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(512 + body.count)
        appendStatusLine(&out, code, reason)
        for e in request.entries {
            switch e.name {
            case .via, .from, .callID, .cseq:
                let h = request.field(e)
                SIPMessage.writeField(&out, name: h.rawName, value: h.value)
            case .to:
                let h = request.field(e)
                SIPMessage.writeField(&out, name: h.rawName, value: h.value)
                if let tag = toTag, code > 100, !(toHasTag ?? hasTag(h.value)) {
                    out.removeLast(2)
                    out.append(contentsOf: ";tag=".utf8)
                    out.append(contentsOf: tag.utf8)
                    out.append(contentsOf: [ASCII.cr, ASCII.lf])
                }
            default:
                break
            }
        }
        for (n, v) in extraHeaders { SIPMessage.writeField(&out, name: n.utf8, value: v.utf8) }
        if let contentType { SIPMessage.writeField(&out, name: "Content-Type".utf8, value: contentType.utf8) }
        SIPMessage.writeField(&out, name: "Content-Length".utf8, value: String(body.count).utf8)
        out.append(contentsOf: [ASCII.cr, ASCII.lf])
        out.append(contentsOf: body)
        return out
    }

    /// A best-effort error response to octets that did not parse as a
    /// message: the header lines are found by name without parsing their
    /// values. Returns nil for a response or when Via, From, To, Call-ID
    /// or CSeq cannot be found (then nothing can be answered).
    public static func errorResponse(toUnparsed bytes: [UInt8], error: SIPParseError, toTag: String?) -> [UInt8]? {
        // Status lines start with "SIP/": responses are never answered.
        if bytes.count >= 4, ASCII.equalsLower(bytes[0..<4], "sip/") { return nil }
        var lines: [(SIPHeaderName, ArraySlice<UInt8>, ArraySlice<UInt8>)] = []
        var i = bytes.firstIndex(of: ASCII.lf).map { $0 + 1 } ?? bytes.count
        while i < bytes.count {
            let end = bytes[i...].firstIndex(of: ASCII.lf) ?? bytes.count
            var lineEnd = end
            if lineEnd > i, bytes[lineEnd - 1] == ASCII.cr { lineEnd -= 1 }
            if lineEnd == i { break }
            if let colon = bytes[i..<lineEnd].firstIndex(of: ASCII.colon) {
                let name = bytes[i..<colon].trimmingWSP()
                let known = SIPHeaderName.lookup(name)
                if [.via, .from, .to, .callID, .cseq].contains(known) {
                    lines.append((known, name, bytes[(colon + 1)..<lineEnd].trimmingWSP()))
                }
            }
            i = end + 1
        }
        for need in [SIPHeaderName.via, .from, .to, .callID, .cseq] where !lines.contains(where: { $0.0 == need }) {
            return nil
        }
        var out: [UInt8] = []
        appendStatusLine(&out, error.statusCode, error.reasonPhrase)
        for (name, raw, value) in lines {
            SIPMessage.writeField(&out, name: raw, value: value)
            if name == .to, let toTag, !hasTag(value) {
                out.removeLast(2)
                out.append(contentsOf: ";tag=\(toTag)\r\n".utf8)
            }
        }
        SIPMessage.writeField(&out, name: "Content-Length".utf8, value: "0".utf8)
        out.append(contentsOf: [ASCII.cr, ASCII.lf])
        return out
    }

    static func appendStatusLine(_ out: inout [UInt8], _ code: Int, _ reason: String) {
        out.append(contentsOf: "SIP/2.0 ".utf8)
        out.append(contentsOf: String(code).utf8)
        out.append(ASCII.sp)
        // A reason phrase may not hold CR or LF.
        for b in reason.utf8 where b != ASCII.cr && b != ASCII.lf { out.append(b) }
        out.append(ASCII.cr)
        out.append(ASCII.lf)
    }

    static func hasTag(_ value: ArraySlice<UInt8>) -> Bool {
        guard let na = try? NameAddress.parse(value, header: "To") else {
            // Fall back to a plain search outside the URI.
            return ASCII.string(value).lowercased().contains(";tag=")
        }
        return na.tag != nil
    }
}
