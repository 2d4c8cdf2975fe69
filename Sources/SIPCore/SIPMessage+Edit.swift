/// Proxy edits. Each edit changes the header list or the start line; every
/// header line that no edit touched is later copied from the original
/// octets unchanged (see `serialized()`).
extension SIPMessage {
    /// Index of the first field with this name, if any.
    @inlinable
    public func firstIndex(of name: SIPHeaderName) -> Int? {
        headers.firstIndex { $0.name == name }
    }

    /// Inserts a field at `index`.
    public mutating func insertHeader(_ field: SIPHeaderField, at index: Int) {
        headers.insert(field, at: index)
    }

    /// Appends a field after the last one.
    public mutating func appendHeader(_ field: SIPHeaderField) {
        headers.append(field)
    }

    /// Adds a field with text name and value at the end of the header.
    public mutating func appendHeader(_ name: String, _ value: String) {
        headers.append(SIPHeaderField(name, value))
    }

    /// Removes every field with this name (compact forms included); returns how many.
    @discardableResult
    public mutating func removeHeaders(named name: String) -> Int {
        let before = headers.count
        headers.removeAll { $0.hasName(name) }
        return before - headers.count
    }

    @discardableResult
    public mutating func removeHeaders(_ name: SIPHeaderName) -> Int {
        let before = headers.count
        headers.removeAll { $0.name == name }
        return before - headers.count
    }

    /// Adds a Via value on top (a proxy forwarding a request).
    public mutating func pushVia(_ value: [UInt8]) {
        let field = SIPHeaderField(.via, value: value[...])
        headers.insert(field, at: firstIndex(of: .via) ?? 0)
    }

    public mutating func pushVia(_ via: Via) { pushVia(Array(via.description.utf8)) }

    /// Removes the topmost value of a list header (Via on a response, Route
    /// on a loose-routed request). Returns false when there is none.
    @discardableResult
    public mutating func popFirstValue(_ name: SIPHeaderName) -> Bool {
        guard let idx = firstIndex(of: name) else { return false }
        let field = headers[idx]
        let first = SIPHeaderField.firstListValue(field.value)
        if first.endIndex == field.value.endIndex {
            headers.remove(at: idx)
        } else {
            // Keep the remaining values of that line, in a new field.
            var rest = field.value[(first.endIndex)...]
            while let c = rest.first, c == ASCII.comma || ASCII.isWSP(c) { rest = rest.dropFirst() }
            headers[idx] = SIPHeaderField(name: field.name, rawName: field.rawName, value: rest, originalLine: nil)
        }
        return true
    }

    /// Replaces the first value of the topmost field with this name,
    /// keeping its other values.
    public mutating func replaceFirstValue(_ name: SIPHeaderName, with value: [UInt8]) {
        guard let idx = firstIndex(of: name) else { return }
        let field = headers[idx]
        let first = SIPHeaderField.firstListValue(field.value)
        var newValue = value
        if first.endIndex != field.value.endIndex {
            newValue.append(contentsOf: field.value[first.endIndex...])
        }
        headers[idx] = SIPHeaderField(name: field.name, rawName: field.rawName, value: newValue[...], originalLine: nil)
    }

    /// Adds a Record-Route value above any existing ones (after the Vias
    /// when there are none).
    public mutating func addRecordRoute(_ value: [UInt8]) {
        let field = SIPHeaderField(.recordRoute, value: value[...])
        if let i = firstIndex(of: .recordRoute) {
            headers.insert(field, at: i)
        } else if let lastVia = headers.lastIndex(where: { $0.name == .via }) {
            headers.insert(field, at: lastVia + 1)
        } else {
            headers.insert(field, at: 0)
        }
    }

    /// Replaces the Request-URI.
    public mutating func setRequestURI(_ uri: [UInt8]) {
        precondition(isRequest, "only a request has a Request-URI")
        uriOverride = uri
    }

    public mutating func setRequestURI(_ uri: String) { setRequestURI(Array(uri.utf8)) }

    /// Sets Max-Forwards, adding the field when absent.
    public mutating func setMaxForwards(_ n: UInt8) {
        let field = SIPHeaderField(.maxForwards, value: Array(String(n).utf8)[...])
        if let i = firstIndex(of: .maxForwards) {
            headers[i] = field
        } else {
            let at = headers.lastIndex(where: { $0.name == .via }).map { $0 + 1 } ?? 0
            headers.insert(field, at: at)
        }
    }

    /// RFC 3261 §16.6 step 3: decrements Max-Forwards, or inserts
    /// `default` − 1 when absent. Returns the value before the decrement
    /// (the caller answers 483 when it is 0 and does not forward).
    public mutating func decrementMaxForwards(default initial: UInt8 = 70) throws(SIPParseError) -> UInt8 {
        let current = try maxForwards() ?? initial
        if current > 0 { setMaxForwards(current - 1) }
        return current
    }

    /// Replaces the body; Content-Length follows at serialisation.
    public mutating func setBody(_ body: [UInt8], contentType: String?) {
        bodyOverride = body
        if let contentType {
            let f = SIPHeaderField(.contentType, value: Array(contentType.utf8)[...])
            if let i = firstIndex(of: .contentType) { headers[i] = f } else { headers.append(f) }
        }
    }

    // MARK: Serialisation

    /// The message as octets. Unchanged lines are copied from the original
    /// octets in runs; Content-Length is written to match the body (and
    /// added when missing).
    public func serialized() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(storage.count + 256)
        write(into: &out)
        return out
    }

    /// Appends the message octets to `out`.
    public func write(into out: inout [UInt8]) {
        storage.withUnsafeBufferPointer { src in
            // Start line.
            if let uri = uriOverride, case .request(let method, _) = startLine {
                out.append(contentsOf: method.name.utf8)
                out.append(ASCII.sp)
                out.append(contentsOf: uri)
                out.append(contentsOf: " SIP/2.0\r\n".utf8)
            } else {
                out.append(contentsOf: UnsafeBufferPointer(rebasing: src[startLineRange]))
            }
            let body = self.body
            let bodyChanged = bodyOverride != nil
            var sawContentLength = false
            var runStart = -1, runEnd = -1
            for h in headers {
                if h.name == .contentLength {
                    if sawContentLength { continue }
                    sawContentLength = true
                    if bodyChanged {
                        if runStart >= 0 { out.append(contentsOf: UnsafeBufferPointer(rebasing: src[runStart..<runEnd])); runStart = -1 }
                        SIPMessage.writeField(&out, name: "Content-Length".utf8, value: String(body.count).utf8)
                        continue
                    }
                }
                if let r = h.originalLine {
                    if runStart >= 0 && r.lowerBound == runEnd {
                        runEnd = r.upperBound
                    } else {
                        if runStart >= 0 { out.append(contentsOf: UnsafeBufferPointer(rebasing: src[runStart..<runEnd])) }
                        runStart = r.lowerBound
                        runEnd = r.upperBound
                    }
                } else {
                    if runStart >= 0 { out.append(contentsOf: UnsafeBufferPointer(rebasing: src[runStart..<runEnd])); runStart = -1 }
                    SIPMessage.writeField(&out, name: h.rawName, value: h.value)
                }
            }
            if runStart >= 0 { out.append(contentsOf: UnsafeBufferPointer(rebasing: src[runStart..<runEnd])) }
            if !sawContentLength {
                SIPMessage.writeField(&out, name: "Content-Length".utf8, value: String(body.count).utf8)
            }
            out.append(ASCII.cr)
            out.append(ASCII.lf)
            out.append(contentsOf: body)
        }
    }

    @inline(__always)
    static func writeField<N: Sequence, V: Sequence>(_ out: inout [UInt8], name: N, value: V) where N.Element == UInt8, V.Element == UInt8 {
        out.append(contentsOf: name)
        out.append(ASCII.colon)
        out.append(ASCII.sp)
        out.append(contentsOf: value)
        out.append(ASCII.cr)
        out.append(ASCII.lf)
    }
}
