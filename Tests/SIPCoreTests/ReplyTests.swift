import Testing
@testable import SIPCore

@Suite("Replies made here")
struct ReplyTests {
    let request = """
    OPTIONS sip:proxy.example.com SIP/2.0\r
    v: SIP/2.0/TLS client.example.com:5061;branch=z9hG4bKa1;rport, SIP/2.0/UDP 192.0.2.7;branch=z9hG4bKa0\r
    Via: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKzz\r
    Max-Forwards: 70\r
    From: "Alice" <sip:alice@example.com>;tag=f1\r
    To: <sip:proxy.example.com>\r
    Call-ID: c1@example.com\r
    CSeq: 7 OPTIONS\r
    Content-Length: 0\r
    \r

    """

    @Test("a stamped top Via replaces only the first value; the To gets the tag; the length is exact")
    func stampedTopVia() throws {
        let m = try SIPMessage.parse(request)
        let checked = try m.validate()
        let stamped = try #require(Via.Stamp(checked.topViaText, received: "198.51.100.1", rport: 40000, hasRport: checked.topVia.rport != nil))
        let bytes = SIPResponseBuilder.response(to: m, code: 200, reason: "OK", toTag: "t9", toHasTag: checked.toTag != nil, topVia: stamped)
        let text = String(decoding: bytes, as: UTF8.self)
        #expect(text == """
        SIP/2.0 200 OK\r
        v: SIP/2.0/TLS client.example.com:5061;branch=z9hG4bKa1;received=198.51.100.1;rport=40000, SIP/2.0/UDP 192.0.2.7;branch=z9hG4bKa0\r
        Via: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKzz\r
        From: "Alice" <sip:alice@example.com>;tag=f1\r
        To: <sip:proxy.example.com>;tag=t9\r
        Call-ID: c1@example.com\r
        CSeq: 7 OPTIONS\r
        Content-Length: 0\r
        \r

        """)
        let reply = try SIPMessage.parse(bytes)
        #expect(try reply.topVia()?.received == "198.51.100.1")
    }

    @Test("extra headers, a body and a long reason fit the computed size")
    func extraAndBody() throws {
        let m = try SIPMessage.parse(request)
        let body = Array(repeating: UInt8(ascii: "x"), count: 1000)
        let reason = String(repeating: "r", count: 300)
        let bytes = SIPResponseBuilder.response(to: m, code: 488, reason: reason + "\r\n", toTag: "t", extraHeaders: [("Warning", "399 h \"w\""), ("Allow", "INVITE")],
                                                body: body, contentType: "text/plain")
        let reply = try SIPMessage.parse(bytes)
        #expect(reply.statusCode == 488)
        #expect(reply.contentLength == 1000)
        #expect(reply.header(.contentType)?.valueString == "text/plain")
        #expect(!String(decoding: bytes, as: UTF8.self).contains(reason + "\r\n\r\n"))
    }

    @Test("tags: check finds what parse finds, and refuses what parse refuses", arguments: [
        ("<sip:a@b>;tag=x1", "x1"), ("<sip:a@b>;TAG=x2;foo", "x2"), ("<sip:a@b> ; foo ; tag = x3", "x3"),
        ("sip:a@b;tag=x4", "x4"), ("<sip:a@b>", nil), ("<sip:a@b>;tag", ""),
    ] as [(String, String?)])
    func checkedTag(value: String, tag: String?) throws {
        let v = ArraySlice(Array(value.utf8))
        #expect(try NameAddress.checkedTag(v, header: "To") == tag)
        #expect(try NameAddress.parse(v, header: "To").tag == tag)
    }

    @Test("malformed header parameters are refused by both", arguments: ["<sip:a@b>;;tag=1", "<sip:a@b>;tag=", "<sip:a@b> x", "<sip:a@b>;tag=\"open"])
    func badParameters(value: String) {
        let v = ArraySlice(Array(value.utf8))
        #expect(throws: SIPParseError.self) { try NameAddress.checkedTag(v, header: "To") }
        #expect(throws: SIPParseError.self) { try NameAddress.parse(v, header: "To") }
    }
}
