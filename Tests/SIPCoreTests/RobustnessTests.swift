import Testing
@testable import SIPCore

/// A small deterministic generator, so every run exercises the same cases.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

@Suite("Robustness")
struct RobustnessTests {
    /// Every torture message, mutated a few hundred ways (byte flips,
    /// insertions of separators, truncations), goes through parse,
    /// validate, every typed accessor and serialisation. Reaching the end
    /// means nothing trapped; a parse that succeeds must serialise to
    /// something that parses again.
    @Test("mutated torture messages never crash the parser")
    func mutations() {
        var rng = SplitMix64(state: 4475)
        let specials: [UInt8] = Array(";,:<>\"\\ \t\r\n%@=?[]/0".utf8) + [0, 0xFF]
        var parsed = 0
        for row in TortureCorpus.rows {
            let original = row.bytes
            for _ in 0..<300 {
                var b = original
                for _ in 0..<Int.random(in: 1...4, using: &rng) {
                    guard !b.isEmpty else { break }
                    let i = Int.random(in: 0..<b.count, using: &rng)
                    switch Int.random(in: 0..<4, using: &rng) {
                    case 0: b[i] = specials.randomElement(using: &rng)!
                    case 1: b.insert(specials.randomElement(using: &rng)!, at: i)
                    case 2: b.remove(at: i)
                    default: b = Array(b[0..<i])
                    }
                }
                exercise(b, framing: .datagram, parsed: &parsed)
                var framer = SIPStreamFramer()
                framer.append(b)
                while let e = try? framer.next() {
                    if case .message(let m) = e { exercise(m, framing: .stream, parsed: &parsed) }
                }
            }
        }
        #expect(parsed > 1000)
    }

    func exercise(_ b: [UInt8], framing: SIPFraming, parsed: inout Int) {
        guard let m = try? SIPMessage.parse(b, framing: framing) else { return }
        parsed += 1
        _ = try? m.validate()
        _ = try? m.vias()
        _ = try? m.contacts()
        _ = try? m.routes()
        _ = try? m.requestURI()
        _ = try? m.maxForwards()
        let out = m.serialized()
        #expect((try? SIPMessage.parse(out, framing: .stream)) != nil, "re-parse failed")
    }

    /// Any chunking of a stream yields the same messages and pings.
    @Test("random chunking of a stream yields the same messages")
    func chunking() throws {
        var rng = SplitMix64(state: 5626)
        let valid = TortureCorpus.rows.filter { $0.verdict != "invalid-must-reject" && !["dblreq", "inv2543"].contains($0.name) }
        var stream: [UInt8] = []
        var expected: [SIPStreamFramer.Event] = []
        for (i, row) in valid.enumerated() {
            if i % 5 == 0 {
                stream += Array("\r\n\r\n".utf8)
                expected.append(.keepAlivePing)
            }
            stream += row.bytes
            expected.append(.message(row.bytes))
        }
        for _ in 0..<200 {
            var framer = SIPStreamFramer()
            var got: [SIPStreamFramer.Event] = []
            var i = 0
            while i < stream.count {
                let n = Int.random(in: 1...max(1, Int.random(in: 1...600, using: &rng)), using: &rng)
                let end = min(stream.count, i + n)
                framer.append(stream[i..<end])
                i = end
                while let e = try framer.next() { got.append(e) }
            }
            #expect(got.count == expected.count)
            if let i = Array(zip(got, expected)).firstIndex(where: { $0.0 != $0.1 }) {
                Issue.record("event \(i) differs")
            }
            #expect(framer.bufferedCount == 0)
        }
    }

    @Test("framing limits close the connection instead of buffering forever")
    func limits() {
        var framer = SIPStreamFramer(limits: SIPLimits(maxHeaderBytes: 1024, maxBodyBytes: 100))
        framer.append(Array(repeating: UInt8(ascii: "a"), count: 2000))
        #expect(throws: SIPParseError.self) { _ = try framer.next() }
        var f2 = SIPStreamFramer(limits: SIPLimits(maxHeaderBytes: 1024, maxBodyBytes: 100))
        f2.append(Array("OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 101\r\n\r\n".utf8))
        #expect(throws: SIPParseError.self) { _ = try f2.next() }
    }

    @Test("the read buffer shrinks once a large message is taken out")
    func bufferShrinks() throws {
        var f = SIPStreamFramer()
        let body = String(repeating: "v", count: 60_000)
        f.append(Array("MESSAGE sip:a@b SIP/2.0\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)".utf8))
        #expect(f.bufferCapacity > SIPStreamFramer.retainedCapacity)
        guard case .message(let m)? = try f.next() else { Issue.record("no message"); return }
        #expect(m.count > 60_000)
        #expect(f.bufferCapacity <= SIPStreamFramer.retainedCapacity)
        // A small message afterwards keeps its small buffer.
        f.append(Array("OPTIONS sip:a@b SIP/2.0\r\nl: 0\r\n\r\n".utf8))
        guard case .message? = try f.next() else { Issue.record("no message"); return }
        #expect(f.bufferCapacity <= SIPStreamFramer.retainedCapacity)
    }

    @Test("a started message is told from line ends that wait to tell a ping from a pong")
    func partialMessage() throws {
        var f = SIPStreamFramer()
        f.append(Array("\r\n".utf8))
        #expect(try f.next() == nil)
        #expect(f.bufferedCount == 2 && !f.hasPartialMessage)
        f.append(Array("OPTIONS sip:a@b SIP/2.0\r\nl: 5\r\n\r\nab".utf8))
        #expect(try f.next() == nil)
        #expect(f.hasPartialMessage)
        f.append(Array("cde".utf8))
        guard case .message? = try f.next() else { Issue.record("no message"); return }
        #expect(!f.hasPartialMessage)
    }

    @Test("a CRLF pong is skipped before the next message; a ping is reported")
    func keepAlive() throws {
        var f = SIPStreamFramer()
        f.append(Array("\r\n".utf8))
        #expect(try f.next() == nil)
        f.append(Array("OPTIONS sip:a@b SIP/2.0\r\nl: 0\r\n\r\n".utf8))
        guard case .message(let m)? = try f.next() else { Issue.record("no message"); return }
        #expect(m.first == UInt8(ascii: "O"))
        f.append(Array("\r\n\r\n".utf8))
        #expect(try f.next() == .keepAlivePing)
        #expect(f.bufferedCount == 0)
    }

    @Test("Content-Length on a stream: what frames and what is refused", arguments: [
        ("Content-Length: 3", 3), ("content-length:3", 3), ("l: 0", 0), ("Content-Length :  2 ", 2),
        ("Content-Length: 1\r\n 2", 12), ("Content-Length: 2\r\nl: 2", 2),
        ("Content-Length: x", nil), ("Content-Length: -1", nil), ("Content-Length:", nil),
        ("Content-Length: 1\r\nContent-Length: 2", nil), ("Content-Length: 99999999999", nil), ("Max-Forwards: 70", nil),
    ] as [(String, Int?)])
    func contentLength(line: String, length: Int?) throws {
        var f = SIPStreamFramer()
        let head = "OPTIONS sip:a@b SIP/2.0\r\n\(line)\r\nCall-ID: x\r\n\r\n"
        f.append(Array(head.utf8) + Array(repeating: UInt8(ascii: "b"), count: 12))
        if let length {
            guard case .message(let m)? = try f.next() else { Issue.record("no message"); return }
            #expect(m.count == head.utf8.count + length)
        } else {
            #expect(throws: SIPParseError.self) { _ = try f.next() }
        }
    }
}
