import Testing
@testable import SIPCore

/// What a proxy's parser concludes about one message.
enum Outcome: Equatable, CustomStringConvertible {
    case accepted
    case rejected(status: Int, kind: SIPParseError.Kind)

    var description: String {
        switch self {
        case .accepted: return "accepted"
        case .rejected(let s, let k): return "rejected \(s) \(k)"
        }
    }
}

func judge(_ bytes: [UInt8], framing: SIPFraming) -> Outcome {
    do {
        let m = try SIPMessage.parse(bytes, framing: framing)
        try m.validate()
        return .accepted
    } catch {
        return .rejected(status: error.statusCode, kind: error.kind)
    }
}

@Suite("RFC 4475 torture messages")
struct RFC4475Tests {
    @Test("corpus is complete and intact")
    func corpusIsComplete() {
        #expect(TortureCorpus.rows.count == 50)
    }

    @Test("datagram verdicts", arguments: TortureCorpus.rows)
    func datagramVerdict(row: TortureCorpus.Row) {
        let outcome = judge(row.bytes, framing: .datagram)
        switch row.verdict {
        case "valid-must-parse", "valid-but-semantically-odd":
            #expect(outcome == .accepted, "\(row.name): \(outcome)")
        case "invalid-must-reject":
            guard case .rejected(let status, _) = outcome else {
                Issue.record("\(row.name) was accepted")
                return
            }
            switch row.name {
            case "badvers": #expect(status == 505)
            case "mismatch02": #expect(status == 400 || status == 501)
            default: #expect(status == 400, "\(row.name): \(outcome)")
            }
        default:
            Issue.record("unknown verdict \(row.verdict)")
        }
    }

    /// Over a stream, each message goes through the framer first; the
    /// stream caveats of the corpus README apply.
    @Test("stream verdicts", arguments: TortureCorpus.rows)
    func streamVerdict(row: TortureCorpus.Row) {
        var framer = SIPStreamFramer()
        framer.append(row.bytes)
        var events: [SIPStreamFramer.Event] = []
        var framingError: SIPParseError? = nil
        do {
            while let e = try framer.next() { events.append(e) }
        } catch {
            framingError = error
        }
        switch row.name {
        case "clerr", "baddn":
            // Waits for octets that never come: nothing is dispatched.
            #expect(events.isEmpty && framingError == nil)
        case "ncl", "mcl01", "inv2543":
            #expect(events.isEmpty)
            #expect(framingError?.kind == .invalidContentLength)
        case "dblreq":
            guard case .message(let first)? = events.first else {
                Issue.record("no REGISTER framed")
                return
            }
            let m = try? SIPMessage.parse(first, framing: .stream)
            #expect(m?.method == .register)
            #expect(judge(first, framing: .stream) == .accepted)
        default:
            #expect(framingError == nil, "\(row.name): \(String(describing: framingError))")
            #expect(events.count == 1)
            guard case .message(let bytes)? = events.first else { return }
            let datagram = judge(row.bytes, framing: .datagram)
            #expect(judge(bytes, framing: .stream) == datagram, "\(row.name)")
        }
    }

    @Test("baddn with its missing empty line restored is still refused for its display names")
    func baddnDisplayName() {
        var b = TortureCorpus.row("baddn").bytes
        b += Array("\r\n".utf8)
        guard case .rejected(400, .malformedHeader) = judge(b, framing: .datagram) else {
            Issue.record("baddn display name accepted")
            return
        }
    }

    @Test("wsinv: folding, white space, compact forms, leading zeros")
    func wsinv() throws {
        let m = try SIPMessage.parse(TortureCorpus.row("wsinv").bytes)
        #expect(try m.maxForwards() == 68)
        #expect(try m.cseq() == CSeq(number: 9, method: .invite))
        let vias = try m.vias()
        #expect(vias.count == 3)
        #expect(vias[0].transport == "UDP" && vias[0].host == "192.0.2.2" && vias[0].branch == "390skdjuw")
        #expect(vias[1].transport == "TCP" && vias[1].host == "spindle.example.com" && vias[1].branch == "z9hG4bK9ikj8")
        #expect(vias[2].host == "192.168.255.111" && vias[2].branch == "z9hG4bK30239")
        #expect(try m.to()?.tag == "1918181833n")
        #expect(try m.from()?.tag == "98asjd8")
        #expect(try m.from()?.displayName == #""J Rosenberg \\\"""#)
        #expect(m.header(.subject)?.value.isEmpty == true)
        #expect(m.headerValue("UnknownHeaderWithUnusualValue") == ";;,,;;,;")
        #expect(m.headerValue("NewFangledHeader") == "newfangled value continued newfangled value")
        let contacts = try m.contacts()
        #expect(contacts.count == 1 && contacts[0].q == 0.33)
        #expect(contacts[0].address?.parameters["newparam"] == "newvalue")
        #expect(m.body.count == 150)
        // A proxy passes the unknown header on byte for byte.
        let out = m.serialized()
        #expect(ASCII.string(out).contains("UnknownHeaderWithUnusualValue: ;;,,;;,;\r\n"))
    }

    @Test("intmeth: a method with every token character")
    func intmeth() throws {
        let m = try SIPMessage.parse(TortureCorpus.row("intmeth").bytes)
        #expect(m.method == .other("!interesting-Method0123456789_*+`.%indeed'~"))
        let uri = try m.requestURI()!
        #expect(uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
        #expect(uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
        #expect(uri.host == "example.com")
        #expect(m.callID == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{")
    }

    @Test("esc01: escapes are decoded once, never twice")
    func esc01() throws {
        let m = try SIPMessage.parse(TortureCorpus.row("esc01").bytes)
        let uri = try m.requestURI()!
        #expect(SIPURI.unescaped(uri.user!) == Array("sips:user@example.com".utf8))
        let contact = try m.contacts()[0].address!.uri
        #expect(SIPURI.unescaped(contact.parameter("n%61me")!) == Array("value%41".utf8))
        #expect(contact.isEquivalent(to: try SIPURI.parse("sip:caller@host5.example.net;lr;name=value%2541")))
    }

    @Test("escnull: %00 users stay distinct")
    func escnull() throws {
        let m = try SIPMessage.parse(TortureCorpus.row("escnull").bytes)
        let c = try m.contacts().map { $0.address!.uri }
        #expect(c.count == 2)
        #expect(SIPURI.unescaped(c[0].user!) == [0])
        #expect(SIPURI.unescaped(c[1].user!) == [0, 0])
        #expect(!c[0].isEquivalent(to: c[1]))
    }

    @Test("esc02: % in a method is literal; C%6Fntact is another header")
    func esc02() throws {
        let m = try SIPMessage.parse(TortureCorpus.row("esc02").bytes)
        #expect(m.method == .other("RE%47IST%45R"))
        #expect(try m.contacts().count == 2)
    }

    @Test("semiuri: ';' in the user part")
    func semiuri() throws {
        let uri = try SIPMessage.parse(TortureCorpus.row("semiuri").bytes).requestURI()!
        #expect(uri.user == "user;par=u%40example.net")
        #expect(uri.host == "example.com")
        #expect(uri.parameters.isEmpty)
    }

    @Test("transports: unknown transport tokens")
    func transports() throws {
        let vias = try SIPMessage.parse(TortureCorpus.row("transports").bytes).vias()
        #expect(vias.map(\.transport) == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"])
    }

    @Test("mpart01: body framed strictly by Content-Length")
    func mpart01() throws {
        let m = try SIPMessage.parse(TortureCorpus.row("mpart01").bytes)
        #expect(m.body.count == 553)
    }

    @Test("responses with odd reason phrases")
    func reasons() throws {
        let u = try SIPMessage.parse(TortureCorpus.row("unreason").bytes)
        #expect(u.statusCode == 200)
        #expect(u.reasonPhrase?.hasPrefix("= 2**3 * 5**2 ") == true)
        let n = try SIPMessage.parse(TortureCorpus.row("noreason").bytes)
        #expect(n.statusCode == 100 && n.reasonPhrase == "")
    }

    @Test("cparam01/cparam02/regescrt: contact parameters and URI parameters")
    func contactParams() throws {
        let c1 = try SIPMessage.parse(TortureCorpus.row("cparam01").bytes).contacts()[0].address!
        #expect(c1.parameters.contains("unknownparam"))
        #expect(!c1.uri.hasParameter("unknownparam"))
        let c2 = try SIPMessage.parse(TortureCorpus.row("cparam02").bytes).contacts()[0].address!
        #expect(!c2.parameters.contains("unknownparam"))
        #expect(c2.uri.hasParameter("unknownparam"))
        let c3 = try SIPMessage.parse(TortureCorpus.row("regescrt").bytes).contacts()[0].address!
        #expect(c3.uri.headers == [SIPURI.Parameter("Route", "%3Csip:sip.example.com%3E")])
    }

    @Test("dblreq over UDP: the trailing octets are not part of the message")
    func dblreq() throws {
        let m = try SIPMessage.parse(TortureCorpus.row("dblreq").bytes)
        #expect(m.method == .register)
        let out = ASCII.string(m.serialized())
        #expect(!out.contains("INVITE"))
    }

    @Test("scalar02 is refused for its CSeq")
    func scalar02() {
        let outcome = judge(TortureCorpus.row("scalar02").bytes, framing: .datagram)
        #expect(outcome == .rejected(status: 400, kind: .valueOutOfRange))
    }

    @Test("unknown and atypical schemes parse")
    func schemes() throws {
        let u = try SIPMessage.parse(TortureCorpus.row("unkscm").bytes).requestURI()!
        #expect(u.scheme == .other("nobodyknowsthisscheme"))
        let n = try SIPMessage.parse(TortureCorpus.row("novelsc").bytes).requestURI()!
        #expect(n.scheme == .other("soap.beep"))
    }
}
