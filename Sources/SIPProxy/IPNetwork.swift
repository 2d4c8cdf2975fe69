import Foundation

/// An address range for `src_ip == 10.0.0.0/8` / `dst_ip != "2001:db8::/32"`
/// comparisons: IPv4 or IPv6, with a prefix length (a plain address is a
/// /32 or /128). An IPv4-mapped IPv6 source (::ffff:a.b.c.d) matches IPv4
/// ranges.
struct IPNetwork: Sendable, Equatable, CustomStringConvertible {
    let bytes: [UInt8]
    let prefix: Int

    init?(_ text: String) {
        var t = Substring(text.trimmingCharacters(in: .whitespaces))
        var prefix: Int? = nil
        if let slash = t.lastIndex(of: "/") {
            guard let p = Int(t[t.index(after: slash)...]) else { return nil }
            prefix = p
            t = t[..<slash]
        }
        if t.hasPrefix("[") && t.hasSuffix("]") { t = t.dropFirst().dropLast() }
        guard let b = IPNetwork.addressBytes(String(t)) else { return nil }
        let maxBits = b.count * 8
        let p = prefix ?? maxBits
        guard (0...maxBits).contains(p) else { return nil }
        bytes = b
        self.prefix = p
    }

    /// `address/prefix`, the address as inet_ntop writes it.
    var description: String {
        var text = [CChar](repeating: 0, count: 64)
        let ok = bytes.withUnsafeBufferPointer { b in
            inet_ntop(bytes.count == 4 ? AF_INET : AF_INET6, b.baseAddress, &text, socklen_t(text.count)) != nil
        }
        let address = ok ? String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"
        return "\(address)/\(prefix)"
    }

    /// The 4 or 16 octets of an address literal (no brackets), or nil.
    static func addressBytes(_ s: String) -> [UInt8]? {
        guard s.utf8.count <= 64 else { return nil }
        var v4 = in_addr()
        if inet_pton(AF_INET, s, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, s, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
        return nil
    }

    /// True when `address` (text, brackets allowed) is in this range.
    func contains(_ address: String) -> Bool {
        var a = address
        if a.hasPrefix("[") && a.hasSuffix("]") { a = String(a.dropFirst().dropLast()) }
        guard let b = IPNetwork.addressBytes(a) else { return false }
        return contains(addressBytes: b)
    }

    /// True when the address of these 4 or 16 octets is in this range.
    func contains(addressBytes given: [UInt8]) -> Bool {
        var b = given
        if b.count == 16 && bytes.count == 4 && b[0..<10].allSatisfy({ $0 == 0 }) && b[10] == 0xFF && b[11] == 0xFF {
            b = Array(b[12..<16])
        }
        guard b.count == bytes.count else { return false }
        var bits = prefix
        var i = 0
        while bits >= 8 {
            if b[i] != bytes[i] { return false }
            bits -= 8
            i += 1
        }
        if bits > 0 {
            let mask = UInt8(truncatingIfNeeded: 0xFF << (8 - bits))
            if b[i] & mask != bytes[i] & mask { return false }
        }
        return true
    }
}
