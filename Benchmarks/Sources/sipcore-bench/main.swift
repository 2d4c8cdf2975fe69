import CMallocCounter
import Foundation
import Logging
import NIOCore
import NIOPosix
import SIPConfig
import SIPCore
import SIPProxy
import SIPTransport

/// Realistic traffic: a ~1 KB INVITE with an SDP body, as a softphone sends it.
let inviteText = """
INVITE sip:bob@biloxi.example.com SIP/2.0\r
Via: SIP/2.0/TLS 192.0.2.10:55060;branch=z9hG4bK-524287-1---a4f1f5e3d2c1b0a9;rport\r
Max-Forwards: 70\r
Contact: <sip:alice@192.0.2.10:55060;transport=tls;ob>;+sip.instance="<urn:uuid:8f7c1a2e-3b4d-4e5f-9a8b-7c6d5e4f3a2b>"\r
To: "Bob" <sip:bob@biloxi.example.com>\r
From: "Alice" <sip:alice@atlanta.example.com>;tag=7f3a9c21\r
Call-ID: Y2QxZjM0NWE4ZTk2YzBiMjFhNmQ3ZTg5MGIxYzJkM2E.\r
CSeq: 2 INVITE\r
Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE, UPDATE, PRACK\r
Content-Type: application/sdp\r
Supported: replaces, norefersub, extended-refer, timer, outbound, path, X-cisco-serviceuri\r
User-Agent: Z 5.6.4 v2.10.20.4\r
Allow-Events: presence, kpml, talk, as-feature-event\r
Content-Length: 371\r
\r
v=0\r
o=Z 1732607000123 1 IN IP4 192.0.2.10\r
s=Z\r
c=IN IP4 192.0.2.10\r
t=0 0\r
m=audio 8000 RTP/AVP 106 9 98 101 0 8 3\r
a=rtpmap:106 opus/48000/2\r
a=fmtp:106 sprop-maxcapturerate=16000; minptime=20; useinbandfec=1\r
a=rtpmap:98 telephone-event/48000\r
a=fmtp:98 0-16\r
a=rtpmap:101 telephone-event/8000\r
a=fmtp:101 0-16\r
a=sendrecv\r
a=rtcp-mux\r
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0\r
a=ssrc:2837465 cname:ab12cd34\r

"""

let registerText = """
REGISTER sip:atlanta.example.com SIP/2.0\r
Via: SIP/2.0/TLS 192.0.2.10:55060;branch=z9hG4bK-524287-1---77aa3c0b9f1e2d4c;rport\r
Max-Forwards: 70\r
Contact: <sip:alice@192.0.2.10:55060;transport=tls;ob>;reg-id=1;+sip.instance="<urn:uuid:8f7c1a2e-3b4d-4e5f-9a8b-7c6d5e4f3a2b>";expires=600\r
To: <sip:alice@atlanta.example.com>\r
From: <sip:alice@atlanta.example.com>;tag=1c2d3e4f\r
Call-ID: reg-5d6e7f8091a2b3c4d5e6f7a8b9c0d1e2\r
CSeq: 17 REGISTER\r
Expires: 600\r
Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE\r
Supported: replaces, outbound, path, gruu\r
User-Agent: Z 5.6.4 v2.10.20.4\r
Content-Length: 0\r
\r

"""

let invite = Array(inviteText.utf8)
let register = Array(registerText.utf8)
let ourVia = Array("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsr-4f2a9c81e0d3b5a7".utf8)
let ourRR = Array("<sip:127.0.0.1;lr;r2=on>".utf8)

struct Result {
    let name: String
    let nsPerOp: Double
    let allocsPerOp: Double
}

@inline(never)
func blackHole<T>(_ x: T) { withExtendedLifetime(x) {} }

func measure(_ name: String, iterations: Int, _ body: () -> Void) -> Result {
    for _ in 0..<(iterations / 10) { body() } // warm-up
    var best = Double.infinity
    var allocs = 0.0
    for _ in 0..<5 {
        let a0 = malloc_counter_allocations()
        let t0 = ContinuousClock.now
        for _ in 0..<iterations { body() }
        let dt = ContinuousClock.now - t0
        let a1 = malloc_counter_allocations()
        let ns = Double(dt.components.seconds) * 1e9 + Double(dt.components.attoseconds) / 1e9
        best = min(best, ns / Double(iterations))
        allocs = Double(a1 - a0) / Double(iterations)
    }
    return Result(name: name, nsPerOp: best, allocsPerOp: allocs)
}

let n = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1])! : 200_000
var results: [Result] = []

results.append(measure("parse INVITE (1 KB, SDP)", iterations: n) {
    blackHole(try! SIPMessage.parse(invite))
})
results.append(measure("parse REGISTER", iterations: n) {
    blackHole(try! SIPMessage.parse(register))
})
results.append(measure("parse+validate INVITE", iterations: n / 4) {
    let m = try! SIPMessage.parse(invite)
    try! m.validate()
})
results.append(measure("INVITE: parse + proxy edit + serialise", iterations: n) {
    var m = try! SIPMessage.parse(invite)
    m.pushVia(ourVia)
    _ = try! m.decrementMaxForwards()
    m.addRecordRoute(ourRR)
    blackHole(m.serialized())
})
results.append(measure("REGISTER: parse + proxy edit + serialise", iterations: n) {
    var m = try! SIPMessage.parse(register)
    m.pushVia(ourVia)
    _ = try! m.decrementMaxForwards()
    blackHole(m.serialized())
})
results.append(measure("stream framing of INVITE", iterations: n) {
    var f = SIPStreamFramer()
    f.append(invite)
    blackHole(try! f.next())
})

// The default route script (etc/swiftser.cfg) run on one message, through
// ProxyCore: validation, Via stamping, the script, the reply built and
// handed to the transport (which has no socket here, so nothing is sent).
do {
    let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    var text = try String(contentsOfFile: repo + "/etc/swiftser.cfg", encoding: .utf8)
    text = text.replacingOccurrences(of: "listen=tls:127.0.0.1:5061", with: "")
        .replacingOccurrences(of: "tls_auto_dev_certificates=yes", with: "")
        .replacingOccurrences(of: "modparam(\"usrloc\", \"db_url\", \"sqlite://../var/location.sqlite\")", with: "modparam(\"usrloc\", \"db_mode\", 0)")
    let config = try ConfigLoader.load(text: text, file: repo + "/etc/bench.cfg", directory: repo + "/etc")
    let logger = Logger(label: "bench", factory: { _ in SwiftLogNoOpLogHandler() })
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let transport = SIPTransport(config: config, tls: nil, group: group, logger: logger)
    let location = try LocationService(path: nil)
    let core = ProxyCore(config: config, transport: transport, location: location, logger: logger)
    let source = try SocketAddress(ipAddress: "127.0.0.1", port: 40000)
    let listener = config.listens[0]
    let options = Array("OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bK-1;rport\r\nMax-Forwards: 70\r\nFrom: <sip:a@localhost>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: bench-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n".utf8)
    var i = 0
    results.append(measure("default script: OPTIONS to the proxy → 200", iterations: n / 4) {
        let m = try! SIPMessage.parse(options)
        core.transport(transport, received: ReceivedMessage(message: m, source: source, listener: listener, proto: .udp, connection: nil))
    })
    results.append(measure("default script: REGISTER → save (memory) → 200", iterations: n / 4) {
        i += 1
        let reg = Array("REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bK-r\(i);rport\r\nMax-Forwards: 70\r\nFrom: <sip:u\(i % 1000)@localhost>;tag=1\r\nTo: <sip:u\(i % 1000)@localhost>\r\nCall-ID: reg-\(i % 1000)\r\nCSeq: \(i) REGISTER\r\nContact: <sip:u@127.0.0.1:40000>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n".utf8)
        let m = try! SIPMessage.parse(reg)
        core.transport(transport, received: ReceivedMessage(message: m, source: source, listener: listener, proto: .udp, connection: nil))
    })
    try? group.syncShutdownGracefully()
} catch {
    print("route-script benchmark skipped: \(error)")
}

print("| benchmark | ns/op | allocations/op |")
print("| --- | ---: | ---: |")
for r in results {
    print("| \(r.name) | \(Int(r.nsPerOp.rounded())) | \(String(format: "%.1f", r.allocsPerOp)) |")
}
