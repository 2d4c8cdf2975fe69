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
