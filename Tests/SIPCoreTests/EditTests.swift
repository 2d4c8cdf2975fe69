import Testing
@testable import SIPCore

let invite = """
INVITE sip:bob@biloxi.example.com SIP/2.0\r
Via: SIP/2.0/TLS client.atlanta.example.com:5061;branch=z9hG4bK74bf9;rport\r
Max-Forwards: 70\r
From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl\r
To: Bob <sip:bob@biloxi.example.com>\r
Call-ID: 3848276298220188511@atlanta.example.com\r
CSeq: 1 INVITE\r
Route: <sip:proxy.example.com;lr>, <sip:p2.example.com;lr>\r
Contact: <sips:alice@client.atlanta.example.com>\r
X-Custom:   keep   me  exactly \r
Content-Type: application/sdp\r
Content-Length: 5\r
\r
v=0\r

"""

@Suite("Proxy edits and serialisation")
struct EditTests {
    @Test("an unedited message serialises to its own octets")
    func identity() throws {
        let bytes = Array(invite.utf8)
        let m = try SIPMessage.parse(bytes)
        #expect(m.serialized() == bytes)
    }

    @Test("push Via, decrement Max-Forwards, add Record-Route, pop Route, rewrite R-URI")
    func proxyEdits() throws {
        var m = try SIPMessage.parse(invite)
        m.pushVia(Array("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKnew".utf8))
        let mf = try m.decrementMaxForwards()
        #expect(mf == 70)
        m.addRecordRoute(Array("<sip:10.0.0.1;lr>".utf8))
        let popped = m.popFirstValue(.route)
        #expect(popped)
        m.setRequestURI("sip:bob@192.0.2.4:5060")
        let out = ASCII.string(m.serialized())
        let expected = """
        INVITE sip:bob@192.0.2.4:5060 SIP/2.0\r
        Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKnew\r
        Via: SIP/2.0/TLS client.atlanta.example.com:5061;branch=z9hG4bK74bf9;rport\r
        Record-Route: <sip:10.0.0.1;lr>\r
        Max-Forwards: 69\r
        From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl\r
        To: Bob <sip:bob@biloxi.example.com>\r
        Call-ID: 3848276298220188511@atlanta.example.com\r
        CSeq: 1 INVITE\r
        Route: <sip:p2.example.com;lr>\r
        Contact: <sips:alice@client.atlanta.example.com>\r
        X-Custom:   keep   me  exactly \r
        Content-Type: application/sdp\r
        Content-Length: 5\r
        \r
        v=0\r

        """
        #expect(out == expected)
        // And the result parses back to what we wrote.
        let again = try SIPMessage.parse(Array(out.utf8), framing: .stream)
        #expect(try again.vias().count == 2)
        #expect(try again.routes().count == 1)
    }

    @Test("received/rport stamped into the Via text; what it cannot edit in place it leaves to the parsed Via")
    func viaStamp() throws {
        func stamp(_ v: String, _ received: String?, _ rport: UInt16?) -> String? {
            Via.stamp(ArraySlice(v.utf8), received: received, rport: rport).map { String(decoding: $0, as: UTF8.self) }
        }
        #expect(stamp("SIP/2.0/TLS a.example.com;branch=z9hG4bK1;rport", "192.0.2.1", 5070)
                == "SIP/2.0/TLS a.example.com;branch=z9hG4bK1;received=192.0.2.1;rport=5070")
        #expect(stamp("SIP/2.0/UDP 10.0.0.1:5060 ; RPORT ;branch=z9hG4bK1 ", nil, 5060)
                == "SIP/2.0/UDP 10.0.0.1:5060 ;branch=z9hG4bK1;rport=5060")
        #expect(stamp("SIP/2.0/TCP h;rportx=1;branch=z9hG4bK1", nil, 1)
                == "SIP/2.0/TCP h;rportx=1;branch=z9hG4bK1;rport=1")
        #expect(stamp("SIP/2.0/UDP h;branch=z9hG4bK1", "[2001:db8::1]", nil)
                == "SIP/2.0/UDP h;branch=z9hG4bK1;received=[2001:db8::1]")
        #expect(stamp("SIP/2.0/UDP h;rport=9;branch=z9hG4bK1", nil, 5060) == nil)
        #expect(stamp("SIP/2.0/UDP h;x=\"a;rport\";branch=z9hG4bK1", nil, 5060) == nil)
        let stamped = try #require(stamp("SIP/2.0/TLS a.example.com:5061;branch=z9hG4bK1;rport", "192.0.2.1", 5070))
        let via = try Via.parse(ArraySlice(stamped.utf8))
        #expect(via.received == "192.0.2.1")
        #expect(via.rport == .some(5070))
        #expect(via.branch == "z9hG4bK1")
    }

    @Test("a Via stamp knows its exact size before it is written, for every number of port digits")
    func viaStampSize() throws {
        let values = ["SIP/2.0/TLS a.example.com;branch=z9hG4bK1;rport", " SIP/2.0/UDP h;branch=z9hG4bK1 ", "SIP/2.0/UDP h ; rport ;branch=z9hG4bK1"]
        for v in values {
            for received in [nil, "192.0.2.1", "[2001:db8::1]"] {
                for rport: UInt16? in [nil, 0, 9, 10, 99, 100, 999, 1000, 9999, 10000, 65535] {
                    let s = try #require(Via.Stamp(ArraySlice(v.utf8), received: received, rport: rport))
                    #expect(s.octets.count == s.count)
                    #expect(s.octets == Via.stamp(ArraySlice(v.utf8), received: received, rport: rport))
                }
            }
        }
        #expect(Via.Stamp(text: Array("SIP/2.0/UDP h;branch=z9hG4bK1".utf8)).octets == Array("SIP/2.0/UDP h;branch=z9hG4bK1".utf8))
    }

    @Test("pop Via on a response removes only the top value of a multi-value line")
    func popVia() throws {
        var m = try SIPMessage.parse("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a.example.com;branch=z9hG4bK1, SIP/2.0/UDP b.example.com;branch=z9hG4bK2\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n")
        m.popFirstValue(.via)
        #expect(try m.vias().map(\.host) == ["b.example.com"])
        #expect(ASCII.string(m.serialized()).contains("Via: SIP/2.0/UDP b.example.com;branch=z9hG4bK2\r\n"))
    }

    @Test("a changed body gets a matching Content-Length; a missing one is added")
    func contentLength() throws {
        var m = try SIPMessage.parse("MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n\r\nhello")
        #expect(m.body.count == 5)
        var out = ASCII.string(m.serialized())
        #expect(out.hasSuffix("Content-Length: 5\r\n\r\nhello"))
        m.setBody(Array("hi".utf8), contentType: "text/plain")
        out = ASCII.string(m.serialized())
        #expect(out.contains("Content-Type: text/plain\r\n"))
        #expect(out.hasSuffix("Content-Length: 2\r\n\r\nhi"))
    }

    @Test("Max-Forwards is inserted when absent, and 0 is reported")
    func maxForwards() throws {
        var m = try SIPMessage.parse("OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\nContent-Length: 0\r\n\r\n")
        let before = try m.decrementMaxForwards()
        #expect(before == 70)
        #expect(try m.maxForwards() == 69)
        var z = try SIPMessage.parse(TortureCorpus.row("zeromf").bytes)
        let zero = try z.decrementMaxForwards()
        #expect(zero == 0)
    }

    @Test("headers are added and removed by name, compact forms included")
    func addRemove() throws {
        var m = try SIPMessage.parse(invite)
        m.appendHeader("X-Added", "1")
        let removed = m.removeHeaders(named: "x-custom")
        let removedCompact = m.removeHeaders(named: "c") // Content-Type
        #expect(removed == 1 && removedCompact == 1)
        let out = ASCII.string(m.serialized())
        #expect(out.contains("X-Added: 1\r\n") && !out.contains("X-Custom") && !out.contains("Content-Type"))
    }
}

@Suite("URIs")
struct URITests {
    @Test("parts of a sip: URI")
    func parts() throws {
        let u = try SIPURI.parse("sips:alice:secret@[2001:db8::1]:5061;transport=tcp;lr?Subject=hi&X=y")
        #expect(u.scheme == .sips && u.user == "alice" && u.password == "secret")
        #expect(u.host == "[2001:db8::1]" && u.hostName == "2001:db8::1" && u.port == 5061)
        #expect(u.transport == "tcp" && u.isLooseRouter)
        #expect(u.headers.count == 2)
        #expect(u.description == "sips:alice:secret@[2001:db8::1]:5061;transport=tcp;lr?Subject=hi&X=y")
    }

    @Test("tel: and opaque URIs")
    func otherSchemes() throws {
        let t = try SIPURI.parse("tel:+1-201-555-0123;phone-context=example.com")
        #expect(t.scheme == .tel && t.user == "+1-201-555-0123" && t.parameter("phone-context") == "example.com")
        #expect(t.description == "tel:+1-201-555-0123;phone-context=example.com")
        let o = try SIPURI.parse("urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6")
        #expect(o.scheme == .other("urn") && o.opaque == "uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6")
    }

    @Test("RFC 3261 §19.1.4 equivalent pairs", arguments: [
        ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
        ("sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com", "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com"),
        ("sip:alice@atlanta.com?subject=project%20x&priority=urgent", "sip:alice@atlanta.com?priority=urgent&subject=project%20x"),
    ])
    func equivalent(a: String, b: String) throws {
        #expect(try SIPURI.parse(a).isEquivalent(to: SIPURI.parse(b)))
    }

    @Test("RFC 3261 §19.1.4 non-equivalent pairs", arguments: [
        ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
        ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
        ("sip:a@b", "sips:a@b"),
    ])
    func notEquivalent(a: String, b: String) throws {
        #expect(try !SIPURI.parse(a).isEquivalent(to: SIPURI.parse(b)))
    }

    @Test("malformed URIs are refused", arguments: [
        "sip:", "sip:@host", "sip:user@", "sip:host:99999", "sip:host;;lr", "sip:h%4", "sip:user@host;a=", "<sip:a@b>", "sip:a b@c", "noscheme",
    ])
    func malformed(text: String) {
        #expect(throws: SIPParseError.self) { try SIPURI.parse(text) }
    }

    @Test("URI character classes are RFC 3261 §25.1's, for every octet")
    func uriCharacterClasses() {
        func unreserved(_ c: UInt8) -> Bool {
            (c >= 0x30 && c <= 0x39) || (c | 0x20 >= 0x61 && c | 0x20 <= 0x7A) || "-_.!~*'()".utf8.contains(c)
        }
        for c in UInt8.min...UInt8.max {
            #expect(SIPURI.isUserChar(c) == (unreserved(c) || c >= 0x80 || "&=+$,;?/".utf8.contains(c)), "user \(c)")
            #expect(SIPURI.isPasswordChar(c) == (unreserved(c) || c >= 0x80 || "&=+$,".utf8.contains(c)), "password \(c)")
            #expect(SIPURI.isParamChar(c) == (unreserved(c) || "[]/:&+$".utf8.contains(c)), "param \(c)")
            #expect(SIPURI.isHeaderChar(c) == (unreserved(c) || "[]/?:+$".utf8.contains(c)), "header \(c)")
            #expect(SIPURI.isURIOctet(c) == (c >= 0x80 || (c > 0x20 && c < 0x7F && !"<>\"".utf8.contains(c))), "URI octet \(c)")
            let alnum = (c >= 0x30 && c <= 0x39) || (c | 0x20 >= 0x61 && c | 0x20 <= 0x7A)
            #expect(SIPURI.isHostChar(c) == (alnum || "-._".utf8.contains(c)), "host \(c)")
        }
    }
}

@Suite("Methods")
struct MethodTests {
    @Test("every known method is recognised from its octets, case-sensitively; anything else is kept as it was written")
    func methodsFromOctets() {
        let known: [SIPMethod] = [.invite, .ack, .bye, .cancel, .register, .options, .info, .prack,
                                  .subscribe, .notify, .update, .message, .refer, .publish]
        for m in known {
            #expect(SIPMethod(bytes: Array(m.name.utf8)) == m)
            #expect(SIPMethod(bytes: ArraySlice(m.name.utf8)) == m)
            #expect(SIPMethod(bytes: Array(m.name.lowercased().utf8)) == .other(m.name.lowercased()))
            #expect(SIPMethod(bytes: Array((m.name + "X").utf8)) == .other(m.name + "X"))
            #expect(SIPMethod(bytes: Array(m.name.dropLast().utf8)) == .other(String(m.name.dropLast())))
        }
        for other in ["SUBSCRIBX", "XSUBSCRIB", "AC", "A", "", "NEWMETHOD1", "INV%54E", "\0ACK"] {
            #expect(SIPMethod(bytes: Array(other.utf8)) == .other(other))
        }
    }
}
