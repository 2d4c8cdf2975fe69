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

@Suite("The source tcp_max_connections_per_ip counts")
struct LimitKeyTests {
    @Test("IPv4 as is, IPv6 by its /64, IPv4-mapped as IPv4", arguments: [
        ("192.0.2.7", "192.0.2.7"), ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"), ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"), ("::1", "0:0:0:0::/64"),
    ])
    func key(ip: String, expected: String) throws {
        #expect(try SocketAddress(ipAddress: ip, port: 5060).limitKey == expected)
    }
}

@Suite("The source address of a datagram as text")
struct DatagramSourceTextTests {
    @Test("an address as SwiftNIO reads it (its host is the numeric text) gives that text", arguments: ["192.0.2.7", "127.0.0.1", "2001:db8::5", "::1"])
    func numeric(ip: String) throws {
        let a = try SocketAddress(ipAddress: ip, port: 5060)
        #expect(SIPDatagramHandler.ipText(a) == ip)
    }

    @Test("an address made from a name gives its IP, not the name")
    func named() throws {
        let a = try SocketAddress.makeAddressResolvingHost("localhost", port: 5060)
        #expect(SIPDatagramHandler.ipText(a) == a.ipText)
        #expect(SIPDatagramHandler.ipText(a) != "localhost")
    }
}
