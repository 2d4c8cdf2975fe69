import NIOCore
import Testing
@testable import SIPTransport

@Suite("Socket addresses as text")
struct AddressTextTests {
    @Test("IPv4 is formatted like inet_ntop; IPv6 is left to it", arguments: [
        "0.0.0.0", "127.0.0.1", "10.0.20.3", "192.168.100.255", "255.255.255.255", "1.22.133.4",
        "::1", "2001:db8::5", "fe80::1:2",
    ])
    func sameAsNIO(ip: String) throws {
        let a = try SocketAddress(ipAddress: ip, port: 5060)
        #expect(a.ipText == a.ipAddress)
        #expect(a.ipText == ip)
    }
}
