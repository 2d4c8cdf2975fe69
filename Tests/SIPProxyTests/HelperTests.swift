import Testing
import SIPCore
@testable import SIPProxy

/// Small pieces of the per-message path that were rewritten for speed and
/// must keep their exact output.
@Suite("Proxy helpers")
struct HelperTests {
    @Test("SIP-date is RFC 1123 in GMT (RFC 3261 §20.17)", arguments: [
        (Int64(0), "Thu, 01 Jan 1970 00:00:00 GMT"),
        (Int64(1_700_000_000), "Tue, 14 Nov 2023 22:13:20 GMT"),
        (Int64(1_795_737_600), "Fri, 27 Nov 2026 00:00:00 GMT"),
    ])
    func sipDate(time: Int64, expected: String) {
        #expect(ProxyCore.sipDate(time) == expected)
    }

    @Test("is_method lists: exact entries between '|', nothing by prefix")
    func methodList() {
        #expect(ProxyCore.listContains("INVITE|BYE|CANCEL", "BYE"))
        #expect(ProxyCore.listContains("INVITE|BYE|CANCEL", "CANCEL"))
        #expect(ProxyCore.listContains("REGISTER", "REGISTER"))
        #expect(!ProxyCore.listContains("INVITE|BYE", "BY"))
        #expect(!ProxyCore.listContains("INVITE|BYE", "INVITES"))
        #expect(!ProxyCore.listContains("", "INVITE"))
        #expect(!ProxyCore.listContains("invite", "INVITE"))
    }

    @Test("the local To tag is the same for a retransmission and differs across requests")
    func localTag() throws {
        let a = try SIPCoreSample.request(branch: "z9hG4bK-1")
        let b = try SIPCoreSample.request(branch: "z9hG4bK-2")
        let ta = ProxyCore.localTag(a, checked: try a.validate())
        #expect(ta == ProxyCore.localTag(a, checked: nil))
        #expect(ta.count == 15 && ta.hasPrefix("ss"))
        #expect(ta != ProxyCore.localTag(b, checked: try b.validate()))
    }
}

enum SIPCoreSample {
    static func request(branch: String) throws -> SIPMessage {
        try SIPMessage.parse(Array("""
        OPTIONS sip:127.0.0.1 SIP/2.0\r
        Via: SIP/2.0/TLS 127.0.0.1:5555;branch=\(branch);rport\r
        Max-Forwards: 70\r
        From: <sip:a@example.com>;tag=f1\r
        To: <sip:127.0.0.1>\r
        Call-ID: helper-1\r
        CSeq: 1 OPTIONS\r
        Content-Length: 0\r
        \r

        """.utf8))
    }
}
