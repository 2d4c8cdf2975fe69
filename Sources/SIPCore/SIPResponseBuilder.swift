/// Builds responses a server sends on its own (RFC 3261 §8.2.6): the
/// Via, From, To, Call-ID and CSeq of the request copied unchanged, a To
/// tag added when the request had none (except for 100), Content-Length 0.
public enum SIPResponseBuilder {
    /// A response to a parsed request.
    /// `toHasTag`: whether the request's To carries a tag, when the caller
    /// already knows (from `validate()`); otherwise the To is parsed here.
    /// `topVia`: the first Via value to write instead of the request's (a
    /// proxy's `received`/`rport` stamp not written into the request).
    public static func response(to request: SIPMessage, code: Int, reason: String, toTag: String?, toHasTag: Bool? = nil, topVia: Via.Stamp? = nil, extraHeaders: [(String, String)] = [], body: [UInt8] = [], contentType: String? = nil) -> [UInt8] {
        withResponse(to: request, code: code, reason: reason, toTag: toTag, toHasTag: toHasTag, topVia: topVia,
                     extraHeaders: extraHeaders, body: body, contentType: contentType) { size, write in
            [UInt8](unsafeUninitializedCapacity: size) { buffer, initialized in
                initialized = write(UnsafeMutableRawBufferPointer(buffer))
            }
        }
    }

    /// `response`, written wherever `emit` wants it: `emit` gets the most
    /// octets the response can take and a function that writes it into a
    /// buffer of at least that size and returns the octets written. A
    /// transport passes its own send buffer, so the reply is not first
    /// made as an array and then copied.
    public static func withResponse<R>(to request: SIPMessage, code: Int, reason: String, toTag: String?, toHasTag: Bool? = nil, topVia: Via.Stamp? = nil, extraHeaders: [(String, String)] = [], body: [UInt8] = [], contentType: String? = nil,
                                       _ emit: (_ size: Int, _ write: (UnsafeMutableRawBufferPointer) -> Int) -> R) -> R {
        // Sized first, then written once.
        var size = statusLineSize(reason)
        var toNeedsTag = false
        for e in request.entries {
            switch e.name {
            case .via, .from, .callID, .cseq, .to:
                size += Int(e.nameEnd - e.nameStart) + 2 + Int(e.valueEnd - e.valueStart) + 2
                if e.name == .to, let toTag, code > 100, !(toHasTag ?? hasTag(request.value(e))) {
                    toNeedsTag = true
                    size += 5 + toTag.utf8.count
                }
            default:
                break
            }
        }
        size += topVia?.count ?? 0
        for (n, v) in extraHeaders { size += n.utf8.count + 2 + v.utf8.count + 2 }
        if let contentType { size += 14 + contentType.utf8.count + 2 }
        size += 40 + body.count

        return emit(size) { raw in
            var w = OctetWriter(UnsafeMutableRawBufferPointer(rebasing: raw[..<size]).bindMemory(to: UInt8.self))
            writeStatusLine(&w, code, reason)
            var viaPending = topVia != nil
            // Fields as received are copied straight from the message's
            // octets; edited ones (and the stamped Via) through their field.
            request.storage.withUnsafeBytes { octets in
                for e in request.entries {
                    switch e.name {
                    case .via, .from, .callID, .cseq, .to:
                        if e.source < 0 && !(e.name == .via && viaPending) {
                            w.put(UnsafeRawBufferPointer(rebasing: octets[Int(e.nameStart)..<Int(e.nameEnd)]))
                            w.put(ASCII.colon, ASCII.sp)
                            w.put(UnsafeRawBufferPointer(rebasing: octets[Int(e.valueStart)..<Int(e.valueEnd)]))
                        } else {
                            let h = request.field(e)
                            w.put(h.rawName)
                            w.put(ASCII.colon, ASCII.sp)
                            if e.name == .via, viaPending {
                                // The stamped first value, then the others as received.
                                topVia?.write(&w)
                                w.put(h.value[SIPHeaderField.firstListValue(h.value).endIndex...])
                                viaPending = false
                            } else {
                                w.put(h.value)
                            }
                        }
                        if e.name == .to, toNeedsTag, let toTag {
                            w.put(";tag=")
                            w.put(toTag)
                            toNeedsTag = false
                        }
                        w.put(ASCII.cr, ASCII.lf)
                    default:
                        break
                    }
                }
            }
            for (n, v) in extraHeaders { writeField(&w, n, v) }
            if let contentType { writeField(&w, "Content-Type", contentType) }
            writeContentLength(&w, body.count)
            w.put(body)
            return w.count
        }
    }

    /// Status-line size: `SIP/2.0 NNN reason CRLF`.
    static func statusLineSize(_ reason: String) -> Int { 8 + 3 + 1 + reason.utf8.count + 2 }

    static func writeStatusLine(_ w: inout OctetWriter, _ code: Int, _ reason: String) {
        w.put("SIP/2.0 ")
        w.putDecimal(Swift.min(Swift.max(code, 0), 999))
        w.put(ASCII.sp)
        // A reason phrase holds no control character but HTAB (RFC 3261
        // §25.1): CR and LF would end the line, ESC and the others may come
        // from the message a 400 quotes.
        for b in reason.utf8 where (b >= 0x20 && b != 0x7F) || b == ASCII.tab { w.put(b) }
        w.put(ASCII.cr, ASCII.lf)
    }

    /// `Content-Length: N` and the empty line ending the header (at most 40 octets).
    static func writeContentLength(_ w: inout OctetWriter, _ n: Int) {
        w.put("Content-Length: ")
        w.putDecimal(n)
        w.put(ASCII.cr, ASCII.lf)
        w.put(ASCII.cr, ASCII.lf)
    }

    private static func writeField(_ w: inout OctetWriter, _ name: String, _ value: String) {
        w.put(name)
        w.put(ASCII.colon, ASCII.sp)
        w.put(value)
        w.put(ASCII.cr, ASCII.lf)
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
        let tagSize = 5 + (toTag?.utf8.count ?? 0)
        let size = lines.reduce(statusLineSize(error.reasonPhrase) + 40) { $0 + $1.1.count + 2 + $1.2.count + 2 + ($1.0 == .to ? tagSize : 0) }
        return OctetWriter.array(capacity: size) { w in
            writeStatusLine(&w, error.statusCode, error.reasonPhrase)
            for (name, raw, value) in lines {
                w.put(raw)
                w.put(ASCII.colon, ASCII.sp)
                w.put(value)
                if name == .to, let toTag, !hasTag(value) {
                    w.put(";tag=")
                    w.put(toTag)
                }
                w.put(ASCII.cr, ASCII.lf)
            }
            writeContentLength(&w, 0)
        }
    }

    static func hasTag(_ value: ArraySlice<UInt8>) -> Bool {
        guard let na = try? NameAddress.parse(value, header: "To") else {
            // Fall back to a plain search outside the URI.
            return ASCII.string(value).lowercased().contains(";tag=")
        }
        return na.tag != nil
    }
}
