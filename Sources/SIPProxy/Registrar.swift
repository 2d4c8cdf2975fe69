import Foundation
import SIPConfig
import SIPCore
import SIPTransport

extension ProxyCore {
    /// save("location"): RFC 3261 §10.3 — binds, refreshes and removes
    /// contacts of the To AOR and answers 200 with the current bindings.
    /// Also: `*` with Expires 0, min/max/default expires and 423, Path
    /// (RFC 3327), `+sip.instance`/`reg-id` flows (RFC 5626).
    func registrarSave(_ ctx: MessageContext, table: String) -> Bool {
        let m = ctx.received.message
        guard m.method == .register else {
            ctx.lastError = (405, "Method Not Allowed")
            return false
        }
        func fail(_ code: Int, _ reason: String, _ extra: [(String, String)] = []) -> Bool {
            ctx.lastError = (code, reason)
            ctx.replied = true
            sendReply(ctx, code: code, reason: reason, extraHeaders: extra)
            return false
        }
        guard let to = ctx.checked?.to ?? ((try? m.to()) ?? nil), to.uri.isSIP else {
            return fail(400, "Bad Request (the AOR in To must be a sip: or sips: URI)")
        }
        let aor = LocationService.aor(to.uri)
        guard let contacts = ctx.checked?.contacts ?? (try? m.contacts()), let cseq = ctx.checked?.cseq ?? (try? m.cseq()) ?? nil,
              let callID = m.callID else {
            return fail(400, "Bad Request")
        }
        return location.withAORLock(aor) {
            registrarSaveLocked(ctx, aor: aor, contacts: contacts, cseq: cseq, callID: callID, failWith: fail)
        }
    }

    /// save() for one AOR, under its lock: read, merge, write, answer.
    private func registrarSaveLocked(_ ctx: MessageContext, aor: String, contacts: [ContactValue], cseq: CSeq, callID: String,
                                     failWith: (Int, String, [(String, String)]) -> Bool) -> Bool {
        func fail(_ code: Int, _ reason: String, _ extra: [(String, String)] = []) -> Bool { failWith(code, reason, extra) }
        let m = ctx.received.message
        let settings = scriptOf(ctx).registrar
        let now = Int64(Date().timeIntervalSince1970)
        var current = location.bindings(for: aor, now: now)
        let headerExpires = m.expires.map(Int64.init)
        if contacts.contains(where: { if case .wildcard = $0 { return true }; return false }) {
            guard contacts.count == 1, headerExpires == 0 else {
                return fail(400, "Bad Request (Contact: * needs Expires: 0 and no other Contact)")
            }
            // §10.3 step 6: a binding of this Call-ID with a CSeq not lower
            // than the request's means the request is old: it fails and
            // changes nothing.
            if current.contains(where: { $0.callID == callID && $0.cseq >= cseq.number }) {
                return fail(500, "Server Internal Error (out-of-order REGISTER)", [("Retry-After", "5")])
            }
            current.removeAll()
            do { try location.replace(aor: aor, with: current) } catch { return fail(500, "Server Internal Error (location store)") }
            replyBindings(ctx, aor: aor, bindings: current, now: now, own: [])
            return true
        }
        // A REGISTER with more contacts than an AOR may keep is refused
        // before any work is done for them.
        if settings.maxContacts > 0 && contacts.count > settings.maxContacts {
            return fail(403, "Forbidden (too many contacts)")
        }
        let path = m.headers(.path).map(\.valueString)
        // The AOR's bindings indexed by contact text, by instance and, built
        // only when a contact's text matches none, by an equivalence key:
        // matching is O(contacts + bindings), not their product.
        var byText: [String: Int] = [:]
        var byInstance: [String: Int] = [:]
        var byKey: [String: [Int]]? = nil
        var parsed: [Int: SIPURI] = [:]
        var removed = Set<Int>()
        func instanceKey(_ instance: String, _ regID: UInt32?) -> String { regID.map { "\(instance)\u{0}\($0)" } ?? instance }
        func equivalenceKey(_ u: SIPURI) -> String {
            let user = u.user.map { String(decoding: SIPURI.unescaped($0), as: UTF8.self) } ?? ""
            // Plain concatenation: interpolating the scheme (an enum) went
            // through String(describing:), ~7,000 instructions.
            var key = u.scheme.name
            key += "\u{0}"; key += user; key += "\u{0}"; key += u.hostName; key += "\u{0}"
            if let port = u.port { key += String(port) }
            return key
        }
        func index(_ i: Int, uri: SIPURI?) {
            if byText[current[i].contact] == nil { byText[current[i].contact] = i }
            if let inst = current[i].instance { byInstance[instanceKey(inst, current[i].regID)] = i }
            if byKey != nil, let u = uri ?? (try? SIPURI.parse(current[i].contact)) {
                parsed[i] = u
                byKey![equivalenceKey(u), default: []].append(i)
            }
        }
        for i in current.indices { index(i, uri: nil) }
        for c in contacts {
            guard let addr = c.address else { continue }
            var exp = Int64(c.expires ?? (headerExpires.map { UInt32(clamping: $0) } ?? UInt32(settings.defaultExpires)))
            if exp != 0 && exp < Int64(settings.minExpires) {
                return fail(423, "Interval Too Brief", [("Min-Expires", String(settings.minExpires))])
            }
            exp = min(exp, Int64(settings.maxExpires))
            let instance = c.instance
            let regID = c.regID
            let contactURI = addr.uriText
            // RFC 5626: the same instance (and reg-id) is the same binding;
            // otherwise the same contact (same text, the common refresh, or
            // RFC 3261 §19.1.4 equivalence).
            var existing: Int? = nil
            if let instance, let i = byInstance[instanceKey(instance, regID)], !removed.contains(i),
               current[i].instance == instance, current[i].regID == regID { existing = i }
            if existing == nil, let i = byText[contactURI], !removed.contains(i), current[i].contact == contactURI,
               instance == nil || current[i].instance == nil { existing = i }
            if existing == nil {
                if byKey == nil {
                    byKey = [:]
                    for i in current.indices where !removed.contains(i) {
                        if let u = try? SIPURI.parse(current[i].contact) {
                            parsed[i] = u
                            byKey![equivalenceKey(u), default: []].append(i)
                        }
                    }
                }
                for i in byKey?[equivalenceKey(addr.uri)] ?? [] where !removed.contains(i) && (instance == nil || current[i].instance == nil) {
                    if parsed[i]?.isEquivalent(to: addr.uri) == true { existing = i; break }
                }
            }
            if let i = existing, current[i].callID == callID, current[i].cseq >= cseq.number {
                return fail(500, "Server Internal Error (out-of-order REGISTER)", [("Retry-After", "5")])
            }
            if exp == 0 {
                if let i = existing { removed.insert(i) }
                continue
            }
            let r = ctx.received
            // A refresh from where the binding was made: only what a
            // refresh changes is written (no new Binding of Strings).
            if let i = existing, current[i].contact == contactURI, current[i].receivedPort == r.sourcePort, current[i].connectionID == r.connection?.id,
               current[i].proto == r.proto.rawValue, current[i].receivedIP == r.sourceIP, current[i].path == path,
               current[i].instance == instance, current[i].regID == regID {
                current[i].expires = now + exp
                current[i].q = c.q
                current[i].callID = callID
                current[i].cseq = cseq.number
                let ua = m.headerValue(.userAgent)
                if !(ua.map { current[i].userAgent?.utf8.elementsEqual($0) ?? false } ?? (current[i].userAgent == nil)) {
                    current[i].userAgent = ua.map { String(decoding: $0, as: UTF8.self) }
                }
                continue
            }
            let b = LocationService.Binding(
                aor: aor, contact: contactURI, expires: now + exp, q: c.q, callID: callID, cseq: cseq.number,
                instance: instance, regID: regID, path: path, proto: r.proto.rawValue, receivedIP: r.sourceIP,
                receivedPort: r.sourcePort, connectionID: r.connection?.id, userAgent: m.header(.userAgent)?.valueString,
                socket: r.listener.description)
            if let i = existing {
                current[i] = b
                index(i, uri: addr.uri)
            } else {
                current.append(b)
                index(current.count - 1, uri: addr.uri)
            }
        }
        if !removed.isEmpty {
            current = current.indices.filter { !removed.contains($0) }.map { current[$0] }
        }
        if settings.maxContacts > 0 && current.count > settings.maxContacts {
            return fail(403, "Forbidden (too many registered contacts)")
        }
        do {
            try location.replace(aor: aor, with: current, limit: settings.maxBindings)
        } catch LocationService.StoreError.full {
            // Every binding slot is taken: the REGISTER may succeed later.
            return fail(503, "Service Unavailable (location store full)", [("Retry-After", "60")])
        } catch {
            logger.error("\(error)")
            return fail(500, "Server Internal Error (location store)")
        }
        logger.info("registered \(LogText(aor)): \(current.count) contact\(current.count == 1 ? "" : "s") (from \(ctx.received.proto.rawValue):\(ctx.received.sourceIP):\(ctx.received.sourcePort))")
        replyBindings(ctx, aor: aor, bindings: current, now: now, own: contacts)
        return true
    }

    /// Answers a REGISTER with 200 and the bindings. The AOR's other
    /// bindings are listed only to a request the script authenticated
    /// (www_authorize, proxy_authorize, auth_check, tls_peer_verified_from)
    /// or that came over a TLS connection whose certificate verified; to
    /// any other only the contacts the request itself registered are
    /// returned (a query without Contact gets none), so an anonymous
    /// REGISTER cannot read where a user is reached, nor make the reply
    /// many times larger than the request.
    func replyBindings(_ ctx: MessageContext, aor: String, bindings all: [LocationService.Binding], now: Int64, own: [ContactValue]) {
        var bindings = all
        if !ctx.authenticated && ctx.received.tls?.peerVerified != true {
            // The common case, a phone with its one contact, needs no set,
            // and no copy when every binding is that contact.
            if own.count == 1, let mine = own[0].address?.uriText {
                if !all.allSatisfy({ $0.contact == mine }) { bindings = all.filter { $0.contact == mine } }
            } else {
                let mine = Set(own.compactMap { $0.address?.uriText })
                bindings = all.filter { mine.contains($0.contact) }
            }
        }
        var extra: [(String, String)] = bindings.map { b in
            var v = "<\(b.contact)>;expires=\(b.secondsLeft(now: now))"
            if let q = b.q { v += ";q=\(q)" }
            if let i = b.instance { v += ";+sip.instance=\"\(i)\"" }
            if let r = b.regID { v += ";reg-id=\(r)" }
            return ("Contact", v)
        }
        let paths = ctx.received.message.headers(.path)
        for p in paths { extra.append(("Path", p.valueString)) }
        if !paths.isEmpty { extra.append(("Require", "path")) }
        extra.append(("Date", sipDateNow(now)))
        ctx.replied = true
        sendReply(ctx, code: 200, reason: "OK", extraHeaders: extra)
    }

    /// `sipDate(now)`, made once per second for all replies.
    func sipDateNow(_ now: Int64) -> String {
        dateCache.withLockedValue { cache in
            if cache.0 != now { cache = (now, ProxyCore.sipDate(now)) }
            return cache.1
        }
    }

    /// RFC 3261 §20.17 SIP-date (RFC 1123 form, always GMT), without a
    /// DateFormatter (which costs ~100 µs to create).
    static func sipDate(_ t: Int64) -> String {
        var time = time_t(t)
        var tm = tm()
        gmtime_r(&time, &tm)
        let days: StaticString = "SunMonTueWedThuFriSat"
        let months: StaticString = "JanFebMarAprMayJunJulAugSepOctNovDec"
        // "Thu, 26 Nov 2026 21:37:35 GMT": 29 octets.
        return String(unsafeUninitializedCapacity: 29) { out in
            var i = 0
            func put(_ b: UInt8) { out[i] = b; i += 1 }
            func two(_ n: Int32) { put(UInt8(0x30 + (n / 10) % 10)); put(UInt8(0x30 + n % 10)) }
            func name(_ table: StaticString, _ k: Int32) {
                let base = Int(k) * 3
                table.withUTF8Buffer { t in put(t[base]); put(t[base + 1]); put(t[base + 2]) }
            }
            name(days, tm.tm_wday % 7)
            put(0x2C); put(0x20)
            two(tm.tm_mday); put(0x20)
            name(months, tm.tm_mon % 12); put(0x20)
            let year = min(max(tm.tm_year + 1900, 0), 9999)
            two(year / 100); two(year % 100); put(0x20)
            two(tm.tm_hour); put(0x3A); two(tm.tm_min); put(0x3A); two(tm.tm_sec)
            put(0x20); put(0x47); put(0x4D); put(0x54)
            return i
        }
    }

    /// lookup("location"): rewrites the Request-URI with the best contact
    /// (highest q) and keeps the others as parallel branches. A contact
    /// registered over TCP/TLS is reached over that same connection while
    /// it is open; a UDP contact at the address the REGISTER came from.
    /// RFC 5626: of the flows (`reg-id`) of one `+sip.instance` only one is
    /// rung, the most recently refreshed whose connection is still up; when
    /// every flow of an instance is gone and nothing else is left, the
    /// request fails with 430 (Flow Failed). At most `max_branches`
    /// targets. Returns -1 when the AOR has no usable binding.
    func registrarLookup(_ ctx: MessageContext, table: String) -> Int {
        guard ctx.message.isRequest, let s = ctx.message.requestURIString, let uri = try? SIPURI.parse(s), uri.isSIP else { return -1 }
        let all = location.bindings(for: LocationService.aor(uri))
        guard !all.isEmpty else { return -1 }
        var chosen: [LocationService.Binding] = []
        var flowsByInstance: [String: [LocationService.Binding]] = [:]
        for b in all {
            if let i = b.instance, b.regID != nil { flowsByInstance[i, default: []].append(b) } else { chosen.append(b) }
        }
        var flowFailed = false
        for (_, flows) in flowsByInstance {
            // Most recently refreshed first: the highest expiry.
            let ordered = flows.sorted { $0.expires > $1.expires }
            if let live = ordered.first(where: { flowIsUp($0) }) { chosen.append(live) } else { flowFailed = true }
        }
        guard !chosen.isEmpty else {
            if flowFailed { ctx.lastError = (430, "Flow Failed") }
            return -1
        }
        let list = chosen.sorted { ($0.q ?? 1) > ($1.q ?? 1) }.prefix(config.transactions.maxBranches)
        ctx.targets = list.map { b in
            Target(uri: b.contact, destination: destination(for: b), path: b.path)
        }
        ctx.message.setRequestURI(list[list.startIndex].contact)
        return 1
    }

    /// Whether an RFC 5626 flow can still be used: a UDP flow always (its
    /// keep-alives are the phone's business); a stream flow while its
    /// connection is open.
    private func flowIsUp(_ b: LocationService.Binding) -> Bool {
        // Behind an edge proxy (Path) the flow is the edge's to keep.
        if !b.path.isEmpty { return true }
        guard let proto = TransportProtocol(rawValue: b.proto), proto != .udp else { return true }
        if let id = b.connectionID, let c = transport.connection(id: id) { return c.isOpen }
        return transport.findConnection(proto: proto, ip: b.receivedIP, port: b.receivedPort) != nil
    }

    func destination(for b: LocationService.Binding) -> Destination? {
        guard let proto = TransportProtocol(rawValue: b.proto) else { return nil }
        guard b.path.isEmpty else { return nil }
        if proto == .udp {
            return Destination(proto: .udp, host: b.receivedIP, port: UInt16(clamping: b.receivedPort))
        }
        if let id = b.connectionID, let c = transport.connection(id: id), c.isOpen {
            return Destination(proto: proto, host: b.receivedIP, port: UInt16(clamping: b.receivedPort), connectionID: c.id)
        }
        if let c = transport.findConnection(proto: proto, ip: b.receivedIP, port: b.receivedPort) {
            return Destination(proto: proto, host: b.receivedIP, port: UInt16(clamping: b.receivedPort), connectionID: c.id)
        }
        return nil
    }
}
