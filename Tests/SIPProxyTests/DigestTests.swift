import Foundation
@testable import SIPProxy
import Testing

@Suite("Digest authentication: parsing, hashes, nonces, nonce counts")
struct DigestTests {
    func creds(_ text: String) -> Result<DigestCredentials, DigestParseError> { DigestCredentials.parse(Array(text.utf8)) }

    @Test("RFC 7616 §3.9.1 example: MD5 and SHA-256 responses")
    func rfc7616Vectors() throws {
        let base = #"Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", "# +
            #"qop=auth, nc=00000001, cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", "# +
            #"nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#
        let md5 = try creds(base + #", algorithm=MD5, response="8ca523f5e9506fed4657c9700eebdbec""#).get()
        #expect(md5.algorithm == .md5)
        #expect(md5.qop == .auth && md5.nonceCount == 1)
        let ha1 = DigestHash.ha1(.md5, username: "Mufasa", realm: "http-auth@example.org", password: "Circle of Life")
        #expect(DigestHash.response(md5, ha1: ha1, method: "GET", body: []) == "8ca523f5e9506fed4657c9700eebdbec")
        let sha = try creds(base + #", algorithm=SHA-256, response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1""#).get()
        #expect(sha.algorithm == .sha256)
        let ha1s = DigestHash.ha1(.sha256, username: "Mufasa", realm: "http-auth@example.org", password: "Circle of Life")
        #expect(DigestHash.response(sha, ha1: ha1s, method: "GET", body: []) == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1")
    }

    @Test("RFC 2617 §3.5 example (MD5, qop=auth, token and quoted values, upper-case hex accepted)")
    func rfc2617Vector() throws {
        let c = try creds(#"Digest username="Mufasa",realm="testrealm@host.com",nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",uri="/dir/index.html",qop=auth,nc=00000001,cnonce="0a4f113b",response="6629FAE49393A05397450978507C4EF1""#).get()
        let ha1 = DigestHash.ha1(.md5, username: "Mufasa", realm: "testrealm@host.com", password: "Circle Of Life")
        let expected = DigestHash.response(c, ha1: ha1, method: "GET", body: [])
        #expect(expected == "6629fae49393a05397450978507c4ef1")
        #expect(DigestHash.constantTimeEqual(expected, c.response))
        #expect(!DigestHash.constantTimeEqual(expected, "6629fae49393a05397450978507c4ef2"))
    }

    @Test("auth-int hashes the body; no qop is the RFC 2069 form")
    func authIntAndNoQop() throws {
        var c = DigestCredentials(username: "u", realm: "r", nonce: "n", uri: "sip:r", response: String(repeating: "0", count: 32))
        let ha1 = DigestHash.ha1(.md5, username: "u", realm: "r", password: "p")
        let ha2 = DigestAlgorithm.md5.hex("REGISTER:sip:r")
        #expect(DigestHash.response(c, ha1: ha1, method: "REGISTER", body: []) == DigestAlgorithm.md5.hex("\(ha1):n:\(ha2)"))
        c.qop = .authInt
        c.nc = "00000001"
        c.cnonce = "x"
        let body = Array("hello".utf8)
        let ha2i = DigestAlgorithm.md5.hex("REGISTER:sip:r:\(DigestAlgorithm.md5.hex(bytes: body))")
        #expect(DigestHash.response(c, ha1: ha1, method: "REGISTER", body: body[...]) == DigestAlgorithm.md5.hex("\(ha1):n:00000001:x:auth-int:\(ha2i)"))
    }

    @Test("escapes in quoted strings, unknown parameters ignored, username@domain split")
    func parsing() throws {
        let c = try creds(#"digest  username = "a\"b@example.com" , realm="r", nonce="n", uri="sip:x", response="00000000000000000000000000000000", foo=bar"#).get()
        #expect(c.username == "a\"b@example.com")
        #expect(c.user == "a\"b" && c.domain == "example.com")
        #expect(DigestCredentials.realm(of: Array(#"Digest username="x", realm="the realm", nonce="n""#.utf8)) == "the realm")
        #expect(DigestCredentials.realm(of: Array(#"Digest myrealm="no", realm=tok"#.utf8)) == "tok")
    }

    @Test("malformed credentials are errors, never traps")
    func malformed() {
        let ok = #"username="u", realm="r", nonce="n", uri="sip:x", response="00000000000000000000000000000000""#
        #expect(creds("Basic dXNlcjpwYXNz") == .failure(.notDigest))
        #expect(creds("Digest " + ok + ", algorithm=SHA-512-256") == .failure(.unsupportedAlgorithm("SHA-512-256")))
        for bad in [
            "", "Digest", "Digest ", "Digest username", "Digest username=", "Digest username=\"u",
            #"Digest username="u", realm="r", nonce="n", uri="sip:x""#,             // no response
            "Digest " + ok + ", qop=auth",                                          // no nc / cnonce
            "Digest " + ok + ", qop=auth, nc=1, cnonce=\"c\"",                      // nc not 8 digits
            "Digest " + ok + ", qop=auth, nc=00000000, cnonce=\"c\"",               // nc 0
            "Digest " + ok + ", qop=bogus, nc=00000001, cnonce=\"c\"",
            "Digest " + ok + ", username=\"again\"",
            "Digest " + ok + ";",
            #"Digest username="u", realm="r", nonce="n", uri="sip:x", response="zz""#,
            "Digest username=\"\u{1}\"",
            "Digest " + ok + ", algorithm=SHA-256",                                 // MD5-length response for SHA-256
            "Digest " + String(repeating: "a=b, ", count: 2000),
        ] {
            if case .success = creds(bad) { Issue.record("accepted: \(bad)") }
        }
        // Random octets and truncations of a good value: any result, no trap.
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<3000 {
            let n = Int.random(in: 0..<200, using: &rng)
            _ = DigestCredentials.parse((0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) })
        }
        let good = Array(("Digest " + ok + ", qop=auth, nc=00000001, cnonce=\"c\"").utf8)
        for k in 0...good.count {
            _ = DigestCredentials.parse(good[0..<k])
            _ = DigestCredentials.realm(of: good[0..<k])
        }
    }

    @Test("nonces: valid within their lifetime, stale after, invalid when altered or for another realm or source")
    func nonces() {
        let codec = DigestNonceCodec(secret: Array("0123456789abcdef0123".utf8))
        var b = DigestNonceCodec.Binding(checks: 8)
        b.sourceIP = "192.0.2.1"
        let n = codec.make(realm: "example.com", issued: 1_000_000, id: 7, qopRequired: true, binding: b)
        #expect(n.utf8.count == 32)
        #expect(codec.check(n, realm: "example.com", binding: b, now: 1_000_100, lifetime: 300, maxDrift: 3) == .valid(issued: 1_000_000, id: 7, qopRequired: true))
        #expect(codec.check(n, realm: "example.com", binding: b, now: 1_000_301, lifetime: 300, maxDrift: 3) == .stale)
        #expect(codec.check(n, realm: "example.com", binding: b, now: 999_990, lifetime: 300, maxDrift: 3) == .stale)   // from the future
        #expect(codec.check(n, realm: "example.com", binding: b, now: 999_998, lifetime: 300, maxDrift: 3) != .stale)
        #expect(codec.check(n, realm: "other.com", binding: b, now: 1_000_100, lifetime: 300, maxDrift: 3) == .invalid)
        var elsewhere = b
        elsewhere.sourceIP = "192.0.2.2"
        #expect(codec.check(n, realm: "example.com", binding: elsewhere, now: 1_000_100, lifetime: 300, maxDrift: 3) == .invalid)
        // Made with other checks than configured now: stale (recompute), not invalid.
        #expect(codec.check(n, realm: "example.com", binding: DigestNonceCodec.Binding(checks: 0, sourceIP: "192.0.2.1"), now: 1_000_100, lifetime: 300, maxDrift: 3) == .stale)
        var raw = Array(Data(base64Encoded: n)!)
        raw[2] ^= 1   // the issue time
        #expect(codec.check(Data(raw).base64EncodedString(), realm: "example.com", binding: b, now: 1_000_100, lifetime: 300, maxDrift: 3) == .invalid)
        let other = DigestNonceCodec(secret: Array("another secret, 16+".utf8))
        #expect(other.check(n, realm: "example.com", binding: b, now: 1_000_100, lifetime: 300, maxDrift: 3) == .invalid)
        for junk in ["", "x", String(repeating: "A", count: 32), String(repeating: "=", count: 32), n + "A"] {
            #expect(codec.check(junk, realm: "example.com", binding: b, now: 1_000_100, lifetime: 300, maxDrift: 3) == .invalid)
        }
    }

    @Test("nonce counts: each nc once, out of order within the window, evicted slots")
    func nonceCounts() {
        let t = NonceCountTable(size: 4, firstID: 0)
        let id = t.allocate()
        #expect(t.use(id: id, nc: 1) == .accepted)
        #expect(t.use(id: id, nc: 1) == .replayed)
        #expect(t.use(id: id, nc: 3) == .accepted)
        #expect(t.use(id: id, nc: 2) == .accepted)
        #expect(t.use(id: id, nc: 2) == .replayed)
        #expect(t.use(id: id, nc: 200) == .accepted)
        #expect(t.use(id: id, nc: 100) == .replayed)   // more than 64 behind
        #expect(t.use(id: id, nc: 199) == .accepted)
        #expect(t.use(id: id, nc: 0) == .replayed)
        // Without qop: once.
        let once = t.allocate()
        #expect(t.use(id: once, nc: nil) == .accepted)
        #expect(t.use(id: once, nc: nil) == .replayed)
        // Four more nonces take every slot: the first is gone.
        for _ in 0..<4 { _ = t.allocate() }
        #expect(t.use(id: id, nc: 201) == .evicted)
        #expect(t.use(id: 12345, nc: 1) == .evicted)
    }

    @Test("challenge header values quote the realm and list qop")
    func challenge() {
        let v = DigestChallenge.value(realm: "a\"b\r\n", nonce: "N", algorithm: .sha256, qop: [.auth, .authInt], stale: true)
        #expect(v == #"Digest realm="a\"b", nonce="N", algorithm=SHA-256, qop="auth,auth-int", stale=true"#)
    }
}
