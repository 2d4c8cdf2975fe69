import SIPCore
import Testing
@testable import SIPProxy

@Suite("Matching, branch parameters, loop hash, hop-by-hop requests")
struct MatchingTests {
    static func parse(_ text: String) throws -> SIPMessage {
        try SIPMessage.parse(Array(text.replacingOccurrences(of: "\n", with: "\r\n").utf8), framing: .datagram)
    }

    static let invite = """
    INVITE sip:bob@example.com SIP/2.0
    Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc
    Max-Forwards: 70
    From: <sip:alice@example.com>;tag=1
    To: <sip:bob@example.com>
    Call-ID: c1
    CSeq: 7 INVITE
    Route: <sip:p2.example.com;lr>
    Content-Length: 0


    """

    @Test("A branch names its shard and carries the loop hash; other branches name no shard")
    func branchRoundTrip() {
        for shard in 0..<16 {
            let b = Matching.branch(shard: shard, loop: 0xDEAD_BEEF, transaction: 42)
            #expect(b.hasPrefix("z9hG4bK"))
            #expect(Matching.shard(ofBranch: b, shards: 16) == shard)
            #expect(Matching.loopPart(ofBranch: b) == Substring(Matching.base32(0xDEAD_BEEF, digits: Matching.loopDigits)))
        }
        #expect(Matching.shard(ofBranch: "z9hG4bKabc", shards: 16) == nil)
        #expect(Matching.shard(ofBranch: "z9hG4bKsz00000000000000", shards: 4) == nil)
        #expect(Matching.shard(ofBranch: "", shards: 4) == nil)
    }

    @Test("The loop hash ignores the Via, and changes with the Request-URI or the Route set (loop vs spiral)")
    func loopHash() throws {
        let a = try Self.parse(Self.invite)
        let viaAdded = try Self.parse(Self.invite.replacingOccurrences(of: "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc",
                                                                        with: "Via: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKxyz\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc"))
        let otherURI = try Self.parse(Self.invite.replacingOccurrences(of: "INVITE sip:bob@example.com", with: "INVITE sip:carol@example.com"))
        let otherRoute = try Self.parse(Self.invite.replacingOccurrences(of: "p2.example.com", with: "p3.example.com"))
        let h = Matching.loopHash(a, checked: nil)
        #expect(Matching.loopHash(viaAdded, checked: nil) == h)
        #expect(Matching.loopHash(otherURI, checked: nil) != h)
        #expect(Matching.loopHash(otherRoute, checked: nil) != h)
        // The same Route URI written with a display name, header parameters
        // or other spacing (a CANCEL built by another stack): the same hash.
        let rewritten = try Self.parse(Self.invite.replacingOccurrences(of: "Route: <sip:p2.example.com;lr>",
                                                                        with: "Route:  \"proxy\" <sip:p2.example.com;lr> ;x=1"))
        #expect(Matching.loopHash(rewritten, checked: nil) == h)
        #expect(Matching.routeURI(ArraySlice("sip:p2.example.com ;lr".utf8)).elementsEqual("sip:p2.example.com".utf8))
        #expect(Matching.routeURI(ArraySlice("<sip:a;lr>".utf8)).elementsEqual("sip:a;lr".utf8))
        #expect(Matching.routeURI(ArraySlice("<sip:a".utf8)).elementsEqual("sip:a".utf8))
    }

    @Test("Transaction keys: ACK and CANCEL map to the INVITE; RFC 2543 ACK matches without the To tag")
    func keys() throws {
        let inv = try Self.parse(Self.invite)
        let ack = try Self.parse(Self.invite.replacingOccurrences(of: "INVITE sip", with: "ACK sip").replacingOccurrences(of: "7 INVITE", with: "7 ACK"))
        #expect(Matching.key(ack, method: .invite) == Matching.key(inv))
        let old = Self.invite.replacingOccurrences(of: ";branch=z9hG4bKabc", with: ";branch=1234")
        let oldInv = try Self.parse(old)
        let oldAck = try Self.parse(old.replacingOccurrences(of: "INVITE sip", with: "ACK sip").replacingOccurrences(of: "7 INVITE", with: "7 ACK")
            .replacingOccurrences(of: "To: <sip:bob@example.com>", with: "To: <sip:bob@example.com>;tag=callee"))
        #expect(Matching.key(oldAck, method: .invite) == Matching.key(oldInv))
        #expect(Matching.key(oldInv)?.legacy != nil)
    }

    @Test("ACK and CANCEL for a branch: its Request-URI, Via, From, Call-ID, Route and CSeq number; the ACK takes the response's To")
    func hopByHop() throws {
        let inv = try Self.parse(Self.invite)
        let ack = try SIPMessage.parse(HopByHop.ack(for: inv, responseTo: ArraySlice(Array("<sip:bob@example.com>;tag=x".utf8))), framing: .datagram)
        #expect(ack.method == .ack)
        #expect(ack.requestURIString == "sip:bob@example.com")
        #expect(try ack.cseq()?.number == 7)
        #expect(try ack.cseq()?.method == .ack)
        #expect(try ack.to()?.tag == "x")
        #expect(try ack.topVia()?.branch == "z9hG4bKabc")
        #expect(try ack.routes().count == 1)
        let cancel = try SIPMessage.parse(HopByHop.cancel(for: inv), framing: .datagram)
        #expect(cancel.method == .cancel)
        #expect(try cancel.to()?.tag == nil)
        #expect(try cancel.cseq()?.method == .cancel)
        #expect(Matching.key(cancel, method: .invite) == Matching.key(inv))
    }

    @Test("Reply ranking: 6xx, then 3xx, 4xx (actionable first, 408 last), 5xx (503 last); a local response loses a tie")
    func ranking() {
        let order = [600, 300, 401, 404, 408, 500, 503]
        for (a, b) in zip(order, order.dropFirst()) {
            #expect(ReplySelection.rank(a, local: false) < ReplySelection.rank(b, local: false), "\(a) before \(b)")
        }
        #expect(ReplySelection.rank(408, local: false) < ReplySelection.rank(408, local: true))
        #expect(ReplySelection.upstreamStatus(503) == 500)
    }
}
