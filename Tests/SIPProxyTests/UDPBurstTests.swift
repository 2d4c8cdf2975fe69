import Foundation
import SIPConfig
import SIPProxy
import Testing

/// The UDP listener reads up to 16 datagrams per system call and answers
/// stateless replies straight from its socket (docs/performance.md, seventh
/// session): every datagram of a burst larger than one read is answered
/// once, with the source address and port it came from.
@Suite("UDP: bursts of datagrams and direct replies", .serialized)
struct UDPBurstTests {
    @Test("40 OPTIONS sent at once are each answered once, rport and no received (the source is the sent-by)")
    func burst() throws {
        let proxy = try TestProxy("""
        listen=udp:127.0.0.1:0
        request_route { if (is_method("OPTIONS")) { sl_send_reply("200", "OK"); exit; } sl_send_reply("404", "Not here"); }
        """)
        defer { proxy.stop() }
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        #expect(fd >= 0)
        defer { close(fd) }
        var tv = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var local = sockaddr_in()
        local.sin_family = sa_family_t(AF_INET)
        local.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &local) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        #expect(bound == 0)
        _ = withUnsafeMutablePointer(to: &local) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        let localPort = UInt16(bigEndian: local.sin_port)
        var to = sockaddr_in()
        to.sin_family = sa_family_t(AF_INET)
        to.sin_port = proxy.port(.udp).bigEndian
        to.sin_addr.s_addr = inet_addr("127.0.0.1")
        let count = 40
        for n in 0..<count {
            let text = "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:\(localPort);branch=z9hG4bK-burst\(n);rport\r\n"
                + "Max-Forwards: 70\r\nFrom: <sip:a@localhost>;tag=b\(n)\r\nTo: <sip:127.0.0.1>\r\nCall-ID: burst-\(n)\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            let bytes = Array(text.utf8)
            let sent = bytes.withUnsafeBytes { b in
                withUnsafePointer(to: &to) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, b.baseAddress, b.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            }
            #expect(sent == bytes.count)
        }
        var answered: [String: Int] = [:]
        var buf = [UInt8](repeating: 0, count: 65_536)
        while answered.values.reduce(0, +) < count {
            let n = recv(fd, &buf, buf.count, 0)
            guard n > 0 else { break }
            let reply = String(decoding: buf[0..<n], as: UTF8.self)
            #expect(reply.hasPrefix("SIP/2.0 200 OK\r\n"))
            #expect(reply.contains(";rport=\(localPort)"), "\(reply)")
            #expect(!reply.contains("received="), "\(reply)")
            if let line = reply.split(separator: "\r\n").first(where: { $0.hasPrefix("Call-ID: ") }) {
                answered[String(line.dropFirst("Call-ID: ".count)), default: 0] += 1
            }
        }
        #expect(answered.count == count)
        #expect(answered.values.allSatisfy { $0 == 1 })
        #expect(proxy.transport.counters.values.udpSendErrors == 0)
    }

    @Test("a sent-by other than the source gets received= with the source's address as text")
    func receivedText() throws {
        let proxy = try TestProxy("""
        listen=udp:127.0.0.1:0
        request_route { sl_send_reply("200", "OK"); exit; }
        """)
        defer { proxy.stop() }
        let reply = udpRequest(port: proxy.port(.udp), """
        OPTIONS sip:127.0.0.1 SIP/2.0
        Via: SIP/2.0/UDP 192.0.2.1:{LOCAL_PORT};branch=z9hG4bK-recv1;rport
        Max-Forwards: 70
        From: <sip:a@localhost>;tag=r1
        To: <sip:127.0.0.1>
        Call-ID: received-1
        CSeq: 1 OPTIONS
        Content-Length: 0


        """)
        let r = try #require(reply)
        #expect(r.contains("Via: SIP/2.0/UDP 192.0.2.1:"), "\(r)")
        #expect(r.contains(";received=127.0.0.1"), "\(r)")
    }
}
