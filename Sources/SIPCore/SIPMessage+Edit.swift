/// Proxy edits. Each edit changes the header list or the start line; every
/// header line that no edit touched is later copied from the original
/// octets unchanged (see `serialized()`).
extension SIPMessage {
    /// Index of the first field with this name, if any.
    @inlinable
    public func firstIndex(of name: SIPHeaderName) -> Int? {
        entries.firstIndex { $0.name == name }
    }

    /// Stores new octets for a field and returns its entry.
    mutating func makeEntry(_ name: SIPHeaderName, rawName: some Collection<UInt8>, value: some Collection<UInt8>) -> HeaderEntry {
        var own: [UInt8] = []
        own.reserveCapacity(rawName.count + value.count)
        own.append(contentsOf: rawName)
        let split = own.count
        own.append(contentsOf: value)
        owned.append(own)
        return HeaderEntry(name: name, source: Int32(owned.count - 1), nameStart: 0, nameEnd: Int32(split),
                           valueStart: Int32(split), valueEnd: Int32(own.count), lineStart: -1, lineEnd: -1)
    }

    mutating func makeEntry(_ name: SIPHeaderName, value: some Collection<UInt8>) -> HeaderEntry {
        makeEntry(name, rawName: name.canonicalName.utf8, value: value)
    }

    /// Inserts a field at `index`.
    public mutating func insertHeader(_ field: SIPHeaderField, at index: Int) {
        entries.insert(makeEntry(field.name, rawName: field.rawName, value: field.value), at: index)
    }

    /// Appends a field after the last one.
    public mutating func appendHeader(_ field: SIPHeaderField) {
        entries.append(makeEntry(field.name, rawName: field.rawName, value: field.value))
    }

    /// Adds a field with text name and value at the end of the header.
    public mutating func appendHeader(_ name: String, _ value: String) {
        appendHeader(SIPHeaderField(name, value))
    }

    /// Removes every field with this name (compact forms included); returns how many.
    @discardableResult
    public mutating func removeHeaders(named name: String) -> Int {
        let known = SIPHeaderName.lookup(name.utf8)
        if known != .other { return removeHeaders(known) }
        let before = entries.count
        let keep = entries.filter { !(($0.name == .other) && field($0).hasName(name)) }
        entries = keep
        return before - entries.count
    }

    @discardableResult
    public mutating func removeHeaders(_ name: SIPHeaderName) -> Int {
        let before = entries.count
        entries.removeAll { $0.name == name }
        return before - entries.count
    }

    /// Adds a Via value on top (a proxy forwarding a request).
    public mutating func pushVia(_ value: [UInt8]) {
        let e = makeEntry(.via, value: value)
        entries.insert(e, at: firstIndex(of: .via) ?? 0)
    }

    public mutating func pushVia(_ via: Via) { pushVia(Array(via.description.utf8)) }

    /// Removes the topmost value of a list header (Via on a response, Route
    /// on a loose-routed request). Returns false when there is none.
    @discardableResult
    public mutating func popFirstValue(_ name: SIPHeaderName) -> Bool {
        guard let idx = firstIndex(of: name) else { return false }
        let f = field(entries[idx])
        let first = SIPHeaderField.firstListValue(f.value)
        if first.endIndex == f.value.endIndex {
            entries.remove(at: idx)
        } else {
            // Keep the remaining values of that line, in a new field.
            var rest = f.value[(first.endIndex)...]
            while let c = rest.first, c == ASCII.comma || ASCII.isWSP(c) { rest = rest.dropFirst() }
            entries[idx] = makeEntry(name, rawName: f.rawName, value: rest)
        }
        return true
    }

    /// Replaces the first value of the topmost field with this name,
    /// keeping its other values.
    public mutating func replaceFirstValue(_ name: SIPHeaderName, with value: [UInt8]) {
        guard let idx = firstIndex(of: name) else { return }
        let f = field(entries[idx])
        let first = SIPHeaderField.firstListValue(f.value)
        var newValue = value
        if first.endIndex != f.value.endIndex {
            newValue.append(contentsOf: f.value[first.endIndex...])
        }
        entries[idx] = makeEntry(name, rawName: f.rawName, value: newValue)
    }

    /// Adds a Record-Route value above any existing ones (after the Vias
    /// when there are none).
    public mutating func addRecordRoute(_ value: [UInt8]) {
        let e = makeEntry(.recordRoute, value: value)
        if let i = firstIndex(of: .recordRoute) {
            entries.insert(e, at: i)
        } else if let lastVia = entries.lastIndex(where: { $0.name == .via }) {
            entries.insert(e, at: lastVia + 1)
        } else {
            entries.insert(e, at: 0)
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
        var digits: (UInt8, UInt8, UInt8) = (0, 0, 0)
        let count: Int
        if n >= 100 { digits = (0x30 + n / 100, 0x30 + (n / 10) % 10, 0x30 + n % 10); count = 3 }
        else if n >= 10 { digits = (0x30 + n / 10, 0x30 + n % 10, 0); count = 2 }
        else { digits = (0x30 + n, 0, 0); count = 1 }
        let e = withUnsafeBytes(of: &digits) { makeEntry(.maxForwards, value: $0.prefix(count)) }
        if let i = firstIndex(of: .maxForwards) {
            entries[i] = e
        } else {
            let at = entries.lastIndex(where: { $0.name == .via }).map { $0 + 1 } ?? 0
            entries.insert(e, at: at)
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
            let e = makeEntry(.contentType, value: contentType.utf8)
            if let i = firstIndex(of: .contentType) { entries[i] = e } else { entries.append(e) }
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
            @inline(__always) func flush(_ out: inout [UInt8]) {
                if runStart >= 0 { out.append(contentsOf: UnsafeBufferPointer(rebasing: src[runStart..<runEnd])); runStart = -1 }
            }
            for e in entries {
                if e.name == .contentLength {
                    if sawContentLength { continue }
                    sawContentLength = true
                    if bodyChanged {
                        flush(&out)
                        SIPMessage.writeField(&out, name: "Content-Length".utf8, value: String(body.count).utf8)
                        continue
                    }
                }
                if e.isOriginal {
                    let lo = Int(e.lineStart), hi = Int(e.lineEnd)
                    if runStart >= 0 && lo == runEnd {
                        runEnd = hi
                    } else {
                        flush(&out)
                        runStart = lo
                        runEnd = hi
                    }
                } else {
                    flush(&out)
                    let own = owned[Int(e.source)]
                    SIPMessage.writeField(&out, name: own[Int(e.nameStart)..<Int(e.nameEnd)], value: own[Int(e.valueStart)..<Int(e.valueEnd)])
                }
            }
            flush(&out)
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
