import NIOCore

extension SocketAddress {
    /// The IP address as text, like `ipAddress`. An IPv4 address is
    /// formatted here directly: `ipAddress` goes through `inet_ntop` and
    /// `sprintf`, which cost more than the rest of a UDP message's receive
    /// path. IPv6 uses `ipAddress`.
    var ipText: String? {
        guard case .v4(let a) = self else { return ipAddress }
        // s_addr is in network order: its first octet in memory is the first
        // of the dotted form.
        let octets = withUnsafeBytes(of: a.address.sin_addr.s_addr) { (b: UnsafeRawBufferPointer) in
            (b[0], b[1], b[2], b[3])
        }
        return String(unsafeUninitializedCapacity: 15) { out in
            var i = 0
            func put(_ n: UInt8) {
                if n >= 100 { out[i] = 0x30 + n / 100; i += 1 }
                if n >= 10 { out[i] = 0x30 + (n / 10) % 10; i += 1 }
                out[i] = 0x30 + n % 10
                i += 1
            }
            put(octets.0); out[i] = 0x2E; i += 1
            put(octets.1); out[i] = 0x2E; i += 1
            put(octets.2); out[i] = 0x2E; i += 1
            put(octets.3)
            return i
        }
    }
}

extension SocketAddress {
    /// The source that `tcp_max_connections_per_ip` counts: an IPv4
    /// address, or an IPv6 address's /64 (one subscriber's usual
    /// allocation, where every address is the attacker's to pick). An
    /// IPv4-mapped IPv6 address counts as its IPv4 address.
    var limitKey: String {
        guard case .v6(let a) = self else { return ipText ?? "" }
        let b = withUnsafeBytes(of: a.address.sin6_addr) { Array($0) }
        guard b.count == 16 else { return ipText ?? "" }
        if b[0..<10].allSatisfy({ $0 == 0 }) && b[10] == 0xFF && b[11] == 0xFF {
            return "\(b[12]).\(b[13]).\(b[14]).\(b[15])"
        }
        var s = ""
        for i in stride(from: 0, to: 8, by: 2) {
            s += String(UInt16(b[i]) << 8 | UInt16(b[i + 1]), radix: 16) + ":"
        }
        return s + ":/64"
    }
}

extension SocketAddress {
    /// A hash of `limitKey` (the IPv4 address, or the /64 of an IPv6 one),
    /// made without building the text: per-source counters on a message's
    /// path use it. Swift's `Hasher` is seeded at random per process, so a
    /// peer cannot pick addresses that land where another source is counted.
    public var limitKeyHash: Int {
        var h = Hasher()
        switch self {
        case .v4(let a):
            withUnsafeBytes(of: a.address.sin_addr.s_addr) { h.combine(bytes: $0) }
        case .v6(let a):
            withUnsafeBytes(of: a.address.sin6_addr) { b in
                if b.count == 16, b[0..<10].allSatisfy({ $0 == 0 }), b[10] == 0xFF, b[11] == 0xFF {
                    // IPv4-mapped: counted as the IPv4 address.
                    h.combine(bytes: UnsafeRawBufferPointer(rebasing: b[12..<16]))
                } else {
                    h.combine(UInt8(6))
                    h.combine(bytes: UnsafeRawBufferPointer(rebasing: b.prefix(8)))
                }
            }
        case .unixDomainSocket:
            h.combine(UInt8(0))
        }
        return h.finalize()
    }
}
