import Crypto
import Foundation
import NIOConcurrencyHelpers

/// Stateless digest nonces: the nonce carries its issue time, a slot
/// number for nonce-count tracking and what it is bound to, all under an
/// HMAC-SHA256 with a secret only this server knows. Checking one needs no
/// table lookup; only replay protection keeps a small fixed-size table.
///
/// Layout (24 octets, base64 without padding: 32 characters):
///   flags (1) | issued, seconds since 1970 (4) | id (4) | HMAC (15)
/// The HMAC covers flags, issued, id, the realm and the bound values
/// (Request-URI, Call-ID, From tag, source address as configured).
struct DigestNonceCodec: Sendable {
    /// Flag bits in the first octet.
    struct Flags: OptionSet, Sendable {
        let rawValue: UInt8
        /// The challenge offered qop: the response must use it.
        static let qopRequired = Flags(rawValue: 0x01)
        // Bits 4–7: Kamailio's auth_checks_* values (1 URI, 2 Call-ID, 4 From tag, 8 source IP).
    }

    /// What a nonce is bound to, per Kamailio's `auth_checks_*` bits.
    struct Binding: Sendable {
        var checks: UInt8 = 0
        var uri = ""
        var callID = ""
        var fromTag = ""
        var sourceIP = ""
    }

    let key: SymmetricKey

    init(secret: [UInt8]) { key = SymmetricKey(data: secret) }

    static let macLength = 15

    func make(realm: String, issued: UInt32, id: UInt32, qopRequired: Bool, binding: Binding) -> String {
        var raw = [UInt8]()
        raw.reserveCapacity(24)
        raw.append((qopRequired ? Flags.qopRequired.rawValue : 0) | (binding.checks & 0x0F) << 4)
        append32(&raw, issued)
        append32(&raw, id)
        raw.append(contentsOf: mac(raw, realm: realm, binding: binding))
        return Data(raw).base64EncodedString()
    }

    private func append32(_ raw: inout [UInt8], _ v: UInt32) {
        raw.append(UInt8(truncatingIfNeeded: v >> 24)); raw.append(UInt8(truncatingIfNeeded: v >> 16))
        raw.append(UInt8(truncatingIfNeeded: v >> 8)); raw.append(UInt8(truncatingIfNeeded: v))
    }

    private func mac(_ header: [UInt8], realm: String, binding: Binding) -> [UInt8] {
        var h = HMAC<SHA256>(key: key)
        h.update(data: header)
        // Each value ends with a 0 octet so fields cannot run into each other.
        func add(_ s: String) { h.update(data: Array(s.utf8)); h.update(data: [0]) }
        add(realm)
        let c = header[0] >> 4
        if c & 1 != 0 { add(binding.uri) }
        if c & 2 != 0 { add(binding.callID) }
        if c & 4 != 0 { add(binding.fromTag) }
        if c & 8 != 0 { add(binding.sourceIP) }
        return Array(h.finalize().prefix(Self.macLength))
    }

    enum Verdict: Equatable {
        /// Made here, for this realm and binding, within its lifetime.
        case valid(issued: UInt32, id: UInt32, qopRequired: Bool)
        /// Made here but too old (or made with other checks): the agent
        /// may retry with the same password (stale=true).
        case stale
        /// Not made here, altered, or for another realm or binding.
        case invalid
    }

    /// Checks a nonce at time `now` (seconds since 1970): `lifetime` its
    /// validity, `maxDrift` how far in the future its issue time may be.
    func check(_ nonce: String, realm: String, binding: Binding, now: UInt32, lifetime: UInt32, maxDrift: UInt32) -> Verdict {
        guard nonce.utf8.count == 32, let data = Data(base64Encoded: nonce), data.count == 24 else { return .invalid }
        let raw = [UInt8](data)
        let header = Array(raw[0..<9])
        let expected = mac(header, realm: realm, binding: Binding(checks: raw[0] >> 4, uri: binding.uri, callID: binding.callID,
                                                                   fromTag: binding.fromTag, sourceIP: binding.sourceIP))
        var diff: UInt8 = 0
        for k in 0..<Self.macLength { diff |= expected[k] ^ raw[9 + k] }
        guard diff == 0 else { return .invalid }
        // Made by us, so its checks are the ones configured then; other
        // checks now: recompute with the same password.
        if raw[0] >> 4 != binding.checks & 0x0F { return .stale }
        let issued = UInt32(raw[1]) << 24 | UInt32(raw[2]) << 16 | UInt32(raw[3]) << 8 | UInt32(raw[4])
        let id = UInt32(raw[5]) << 24 | UInt32(raw[6]) << 16 | UInt32(raw[7]) << 8 | UInt32(raw[8])
        if issued > now && issued - now > maxDrift { return .stale }
        if now > issued && now - issued > lifetime { return .stale }
        return .valid(issued: issued, id: id, qopRequired: raw[0] & Flags.qopRequired.rawValue != 0)
    }
}

/// Nonce-count replay protection with bounded memory: a fixed number of
/// slots; a new nonce takes slot `id % count` (evicting the older nonce
/// there, whose next use is then answered as stale). Each slot keeps the
/// highest nc seen and a 64-bit window below it, so requests that arrive
/// out of order (parallel transactions) are still accepted once each.
final class NonceCountTable: @unchecked Sendable {  // mutable state guarded by `lock`
    struct Slot {
        var id: UInt32 = 0
        var used = false
        var highest: UInt32 = 0
        var window: UInt64 = 0
    }

    enum Outcome: Equatable { case accepted, replayed, evicted }

    private let lock = NIOLock()
    private var slots: [Slot]
    private var next: UInt32

    init(size: Int, firstID: UInt32 = UInt32.random(in: 0...UInt32.max)) {
        slots = Array(repeating: Slot(), count: max(1, size))
        next = firstID
    }

    var size: Int { slots.count }

    /// A fresh nonce id; its slot starts empty.
    func allocate() -> UInt32 {
        lock.withLock {
            let id = next
            next &+= 1
            slots[Int(id % UInt32(slots.count))] = Slot(id: id, used: true)
            return id
        }
    }

    /// Records a use of nonce `id` with nonce-count `nc` (nil: a response
    /// without qop, which may use its nonce once).
    func use(id: UInt32, nc: UInt32?) -> Outcome {
        lock.withLock {
            let k = Int(id % UInt32(slots.count))
            guard slots[k].used, slots[k].id == id else { return .evicted }
            let n = nc ?? 1
            guard n > 0 else { return .replayed }
            var s = slots[k]
            defer { slots[k] = s }
            if n > s.highest {
                let shift = n - s.highest
                // Bit j of the window: nc = highest - 1 - j was seen.
                if s.highest > 0 {
                    s.window = shift >= 64 ? 0 : (s.window << UInt64(shift))
                    if shift <= 64 { s.window |= 1 << UInt64(shift - 1) }
                }
                s.highest = n
                return .accepted
            }
            if n == s.highest { return .replayed }
            let back = s.highest - n
            guard back <= 64 else { return .replayed }
            let bit: UInt64 = 1 << UInt64(back - 1)
            if s.window & bit != 0 { return .replayed }
            s.window |= bit
            return .accepted
        }
    }
}
