import SIPCore

/// What identifies a server transaction (RFC 3261 §17.2.3): the branch,
/// sent-by and method of the top Via, or for RFC 2543 peers the dialog
/// identifiers and CSeq. Hashed as fields, no string built per request.
struct TransactionKey: Hashable, Sendable {
    var branch: String
    var host: String
    var port: UInt16
    var method: SIPMethod
    var legacy: String? = nil
}

/// Matching requests and responses to transactions, and the branch
/// parameters that make it work.
enum Matching {
    /// RFC 3261 §17.2.3: top Via branch and sent-by, and the method (ACK
    /// and CANCEL map to the INVITE's); for RFC 2543 peers the To tag
    /// (not for ACK, whose To tag is the one our final added), From tag,
    /// Call-ID, CSeq number and top Via.
    static func key(_ m: SIPMessage, method: SIPMethod? = nil, checked: SIPMessage.Checked? = nil) -> TransactionKey? {
        guard let via = checked?.topVia ?? (try? m.topVia()) ?? nil, let cseq = checked?.cseq ?? (try? m.cseq()) ?? nil else { return nil }
        let meth = method ?? (m.method ?? cseq.method)
        if via.hasRFC3261Branch, let branch = via.branch {
            return TransactionKey(branch: branch, host: via.host.lowercased(), port: via.port ?? 0, method: meth)
        }
        // RFC 2543: an ACK carries the To tag of our final response, the
        // INVITE had none; match it without the To tag (§17.2.3).
        let to = m.method == .ack || m.method == .invite ? nil : (checked.map { $0.toTag } ?? (try? m.to())??.tag)
        let from = checked.map { $0.fromTag } ?? (try? m.from())??.tag
        return TransactionKey(branch: "", host: via.host.lowercased(), port: via.port ?? 0, method: meth,
                              legacy: "\(m.callID ?? "")|\(from ?? "")|\(to ?? "")|\(cseq.number)|\(via.description)")
    }

    /// Branch parameters made here: `z9hG4bK` (RFC 3261 magic cookie),
    /// `s` (a transaction's branch) or `f` (forwarded statelessly), the
    /// shard digit, 13 base-32 digits of the loop hash, then the
    /// transaction part. The shard digit sends a response straight to the
    /// shard that holds its transaction; the loop hash finds loops
    /// (§16.3 step 4); a response to a stateless branch is forwarded by its
    /// Via even when the script uses tm.
    static let prefix: [UInt8] = Array("z9hG4bKs".utf8)
    static let statelessPrefix: [UInt8] = Array("z9hG4bKf".utf8)
    static let loopDigits = 13

    static func branch(shard: Int, loop: UInt64, transaction: UInt64, stateful: Bool = true) -> String {
        var s = stateful ? "z9hG4bKs" : "z9hG4bKf"
        s.append(Character(Unicode.Scalar(UInt8(shard < 10 ? 0x30 + shard : 0x61 + shard - 10))))
        s += base32(loop, digits: loopDigits)
        s += base32(transaction, digits: 13)
        return s
    }

    /// The shard a branch made here names, if it is one of ours.
    static func shard(ofBranch b: String, shards: Int) -> Int? {
        var b = b
        return b.withUTF8 { u -> Int? in
            guard u.count > prefix.count + 1 + loopDigits else { return nil }
            for i in 0..<prefix.count where u[i] != prefix[i] { return nil }
            let c = u[prefix.count]
            let d: Int
            switch c {
            case 0x30...0x39: d = Int(c - 0x30)
            case 0x61...0x7A: d = Int(c - 0x61) + 10
            default: return nil
            }
            return d < shards ? d : nil
        }
    }

    /// The loop-hash digits of a branch made here.
    static func loopPart(ofBranch b: String) -> Substring? {
        let u = b.utf8
        guard u.count > prefix.count + 1 + loopDigits, b.hasPrefix("z9hG4bKs") || b.hasPrefix("z9hG4bKf") else { return nil }
        let start = u.index(u.startIndex, offsetBy: prefix.count + 1)
        let end = u.index(start, offsetBy: loopDigits)
        return Substring(u[start..<end])
    }

    /// Whether a branch is one made here for a request forwarded statelessly (`z9hG4bKf`).
    static func isStatelessBranch(_ b: String) -> Bool { b.hasPrefix("z9hG4bKf") }

    /// RFC 3261 §16.6 step 8 / §16.3 step 4: a hash of what makes a
    /// request the same request when it comes back — Request-URI, From
    /// tag, Call-ID, CSeq number and every Route value — and not of the
    /// Via, which every hop changes. A request that spirals (its
    /// Request-URI or Route changed) hashes differently; one that loops
    /// hashes the same. Only fields an INVITE shares with its CANCEL and
    /// the ACK of a non-2xx (not the To tag, not Proxy-Authorization), so
    /// a stateless proxy gives all three the same branch (§16.11).
    static func loopHash(_ m: SIPMessage, checked: SIPMessage.Checked?) -> UInt64 {
        var h = FNV64()
        h.add(m.requestURIBytes ?? [])
        h.add((checked?.fromTag ?? ((try? m.from()) ?? nil)?.tag) ?? "")
        h.add(m.headerValue(.callID) ?? [])
        h.add(UInt64(((checked?.cseq ?? (try? m.cseq()) ?? nil)?.number) ?? 0))
        // Every Route URI, ours too (§16.6 step 8): a request that comes
        // back unchanged carries the same ones. The URI's octets between
        // < and > are hashed, not parsed (this runs for every request
        // forwarded); a display name or header parameters do not count, so
        // a CANCEL that writes its Route values differently still gets the
        // INVITE's branch (§9.1, §16.11).
        for v in m.headerValues(.route) { h.add(routeURI(v)) }
        return h.value
    }

    /// The URI part of one Route value: between < and >, else up to the
    /// first ; (trimmed).
    static func routeURI(_ v: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        if let open = v.firstIndex(of: 0x3C) {
            let rest = v[(open + 1)...]
            return rest.firstIndex(of: 0x3E).map { rest[..<$0] } ?? rest
        }
        var r = v.prefix { $0 != 0x3B }
        while let f = r.first, f == 0x20 || f == 0x09 { r = r.dropFirst() }
        while let l = r.last, l == 0x20 || l == 0x09 { r = r.dropLast() }
        return r
    }

    static func base32(_ value: UInt64, digits: Int) -> String {
        var v = value
        return String(unsafeUninitializedCapacity: digits) { out in
            for i in 0..<digits {
                let d = UInt8(truncatingIfNeeded: v & 31)
                out[i] = d < 10 ? 0x30 + d : 0x61 + d - 10
                v >>= 5
            }
            return digits
        }
    }
}
