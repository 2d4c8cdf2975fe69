import Crypto
import Foundation

/// HTTP Digest (RFC 7616, RFC 8760 for SIP, RFC 3261 §22): the hash
/// algorithms, the credentials in an Authorization / Proxy-Authorization
/// header, and the response computation. Pure: no I/O, no clock.
enum DigestAlgorithm: String, CaseIterable, Sendable {
    case md5 = "MD5"
    case sha256 = "SHA-256"

    /// The name as it appears in `algorithm=` (case-insensitive on input).
    init?(token: String) {
        switch token.uppercased() {
        case "MD5": self = .md5
        case "SHA-256": self = .sha256
        default: return nil
        }
    }

    /// The lower-case hexadecimal digest of `text`.
    func hex(_ text: String) -> String {
        switch self {
        case .md5: return DigestHash.hex(Insecure.MD5.hash(data: Array(text.utf8)))
        case .sha256: return DigestHash.hex(SHA256.hash(data: Array(text.utf8)))
        }
    }

    func hex<B: DataProtocol>(bytes: B) -> String {
        switch self {
        case .md5: return DigestHash.hex(Insecure.MD5.hash(data: bytes))
        case .sha256: return DigestHash.hex(SHA256.hash(data: bytes))
        }
    }

    /// Length of a hex digest in characters.
    var hexLength: Int { self == .md5 ? 32 : 64 }
}

enum DigestHash {
    static func hex<S: Sequence>(_ bytes: S) -> String where S.Element == UInt8 {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(64)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// HA1 = H(username ":" realm ":" password) (RFC 7616 §3.4.2).
    static func ha1(_ algorithm: DigestAlgorithm, username: String, realm: String, password: String) -> String {
        algorithm.hex("\(username):\(realm):\(password)")
    }

    /// The expected `response` for credentials, given HA1 (RFC 7616
    /// §3.4.1, RFC 2069 form when there is no qop). `body` is used for
    /// qop=auth-int.
    static func response(_ c: DigestCredentials, ha1: String, method: String, body: ArraySlice<UInt8>) -> String {
        let alg = c.algorithm
        let ha2: String
        if c.qop == .authInt {
            ha2 = alg.hex("\(method):\(c.uri):\(alg.hex(bytes: body))")
        } else {
            ha2 = alg.hex("\(method):\(c.uri)")
        }
        guard let qop = c.qop else { return alg.hex("\(ha1):\(c.nonce):\(ha2)") }
        return alg.hex("\(ha1):\(c.nonce):\(c.nc ?? ""):\(c.cnonce ?? ""):\(qop.rawValue):\(ha2)")
    }

    /// Compares two hex strings in time independent of where they differ,
    /// ignoring ASCII case.
    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count else { return false }
        var diff: UInt8 = 0
        for i in 0..<x.count { diff |= (x[i] | 0x20) ^ (y[i] | 0x20) }
        return diff == 0
    }
}

enum DigestQOP: String, Sendable {
    case auth = "auth"
    case authInt = "auth-int"
}

/// Why an Authorization header could not be read.
enum DigestParseError: Error, Equatable {
    /// Not the Digest scheme (e.g. Basic): not ours to check.
    case notDigest
    /// Malformed syntax, a missing required parameter, a bad value.
    case malformed(String)
    /// An algorithm we do not support (e.g. SHA-512-256).
    case unsupportedAlgorithm(String)
}

/// The credentials of one Authorization / Proxy-Authorization value
/// (RFC 7616 §3.4, RFC 3261 §25.1 `dig-resp`).
struct DigestCredentials: Sendable, Equatable {
    var username: String
    var realm: String
    var nonce: String
    var uri: String
    var response: String
    var algorithm: DigestAlgorithm = .md5
    var cnonce: String?
    var opaque: String?
    var qop: DigestQOP?
    var nc: String?

    /// The nonce-count as a number (8 hex digits on the wire).
    var nonceCount: UInt32? { nc.flatMap { UInt32($0, radix: 16) } }

    /// The user part of `username`, without an `@domain` some agents add.
    var user: String {
        if let at = username.firstIndex(of: "@") { return String(username[..<at]) }
        return username
    }

    /// The `@domain` of `username`, when given.
    var domain: String? {
        if let at = username.firstIndex(of: "@") { return String(username[username.index(after: at)...]) }
        return nil
    }

    /// Limits: a header value longer than this is refused, and so is any
    /// one parameter value (documented in docs/security.md).
    static let maxValueLength = 4096
    static let maxParameterLength = 1024

    /// Parses `Digest k=v, k="v", …`. Never traps; any syntax problem is
    /// `.malformed`. Unknown parameters are ignored (RFC 7616 §3.4).
    static func parse<C: Collection>(_ value: C) -> Result<DigestCredentials, DigestParseError> where C.Element == UInt8 {
        let b = Array(value)
        guard b.count <= maxValueLength else { return .failure(.malformed("header too long")) }
        var i = 0
        func isSpace(_ c: UInt8) -> Bool { c == 0x20 || c == 0x09 || c == 0x0D || c == 0x0A }
        func skipSpace() { while i < b.count, isSpace(b[i]) { i += 1 } }
        func isTokenChar(_ c: UInt8) -> Bool {
            // RFC 3261 token: alphanum and - . ! % * _ + ` ' ~
            switch c {
            case 0x30...0x39, 0x41...0x5A, 0x61...0x7A: return true
            case UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "!"), UInt8(ascii: "%"), UInt8(ascii: "*"),
                 UInt8(ascii: "_"), UInt8(ascii: "+"), UInt8(ascii: "`"), UInt8(ascii: "'"), UInt8(ascii: "~"):
                return true
            default: return false
            }
        }
        func token() -> [UInt8] {
            let start = i
            while i < b.count, isTokenChar(b[i]) { i += 1 }
            return Array(b[start..<i])
        }
        skipSpace()
        let scheme = token()
        guard !scheme.isEmpty else { return .failure(.malformed("no scheme")) }
        guard String(decoding: scheme, as: UTF8.self).lowercased() == "digest" else { return .failure(.notDigest) }
        guard i < b.count, isSpace(b[i]) else { return .failure(.malformed("no parameters")) }
        var params: [String: String] = [:]
        var quoted: Set<String> = []
        while true {
            skipSpace()
            let nameBytes = token()
            guard !nameBytes.isEmpty else { return .failure(.malformed("expected a parameter name")) }
            let name = String(decoding: nameBytes, as: UTF8.self).lowercased()
            skipSpace()
            guard i < b.count, b[i] == UInt8(ascii: "=") else { return .failure(.malformed("expected '=' after \(name)")) }
            i += 1
            skipSpace()
            var v: [UInt8] = []
            if i < b.count, b[i] == UInt8(ascii: "\"") {
                i += 1
                var closed = false
                while i < b.count {
                    let c = b[i]
                    if c == UInt8(ascii: "\\") {
                        guard i + 1 < b.count else { break }
                        v.append(b[i + 1])
                        i += 2
                        continue
                    }
                    if c == UInt8(ascii: "\"") { closed = true; i += 1; break }
                    if c < 0x20 && c != 0x09 { return .failure(.malformed("control character in \(name)")) }
                    v.append(c)
                    i += 1
                }
                guard closed else { return .failure(.malformed("unterminated quoted string in \(name)")) }
                quoted.insert(name)
            } else {
                v = token()
                guard !v.isEmpty else { return .failure(.malformed("empty value for \(name)")) }
            }
            guard v.count <= maxParameterLength else { return .failure(.malformed("\(name) too long")) }
            guard params[name] == nil else { return .failure(.malformed("\(name) given twice")) }
            params[name] = String(decoding: v, as: UTF8.self)
            skipSpace()
            if i >= b.count { break }
            guard b[i] == UInt8(ascii: ",") else { return .failure(.malformed("expected ',' after \(name)")) }
            i += 1
        }
        guard let username = params["username"], let realm = params["realm"], let nonce = params["nonce"],
              let uri = params["uri"], let response = params["response"] else {
            return .failure(.malformed("username, realm, nonce, uri and response are required"))
        }
        var c = DigestCredentials(username: username, realm: realm, nonce: nonce, uri: uri, response: response)
        if let a = params["algorithm"] {
            guard let alg = DigestAlgorithm(token: a) else { return .failure(.unsupportedAlgorithm(a)) }
            c.algorithm = alg
        }
        guard response.utf8.count == c.algorithm.hexLength, response.utf8.allSatisfy({ isHexDigit($0) }) else {
            return .failure(.malformed("response is not a \(c.algorithm.rawValue) digest"))
        }
        if params["userhash"]?.lowercased() == "true" { return .failure(.malformed("userhash is not supported")) }
        c.opaque = params["opaque"]
        if let q = params["qop"] {
            guard let qop = DigestQOP(rawValue: q.lowercased()) else { return .failure(.malformed("unknown qop '\(q)'")) }
            c.qop = qop
            guard let nc = params["nc"], nc.utf8.count == 8, nc.utf8.allSatisfy({ isHexDigit($0) }), let n = UInt32(nc, radix: 16), n > 0 else {
                return .failure(.malformed("qop needs nc of 8 hex digits (not 0)"))
            }
            guard let cnonce = params["cnonce"], !cnonce.isEmpty else { return .failure(.malformed("qop needs cnonce")) }
            c.nc = nc
            c.cnonce = cnonce
        }
        return .success(c)
    }

    private static func isHexDigit(_ c: UInt8) -> Bool {
        (0x30...0x39).contains(c) || (0x41...0x46).contains(c) || (0x61...0x66).contains(c)
    }

    /// Only the realm of a Digest value (has_credentials, picking the
    /// header for a realm), without requiring the other parameters.
    static func realm<C: Collection>(of value: C) -> String? where C.Element == UInt8 {
        // A full parse would refuse values with other problems; here a
        // value whose realm is readable counts for its realm.
        let text = String(decoding: Array(value.prefix(maxValueLength)), as: UTF8.self)
        guard text.lowercased().hasPrefix("digest") else { return nil }
        var rest = Substring(text)
        while let r = rest.range(of: "realm", options: .caseInsensitive) {
            let before = rest[..<r.lowerBound].last
            var after = rest[r.upperBound...].drop(while: { $0 == " " || $0 == "\t" })
            rest = rest[r.upperBound...]
            guard before == nil || before == " " || before == "," || before == "\t", after.first == "=" else { continue }
            after = after.dropFirst().drop(while: { $0 == " " || $0 == "\t" })
            if after.first == "\"" {
                let body = after.dropFirst()
                guard let end = body.firstIndex(of: "\"") else { return nil }
                return String(body[..<end])
            }
            return String(after.prefix(while: { $0 != "," && $0 != " " }))
        }
        return nil
    }
}

/// Builds a WWW-Authenticate / Proxy-Authenticate value (RFC 7616 §3.3).
enum DigestChallenge {
    static func value(realm: String, nonce: String, algorithm: DigestAlgorithm, qop: [DigestQOP], stale: Bool, opaque: String? = nil) -> String {
        var s = "Digest realm=\"\(quote(realm))\", nonce=\"\(nonce)\""
        if let opaque { s += ", opaque=\"\(quote(opaque))\"" }
        s += ", algorithm=\(algorithm.rawValue)"
        if !qop.isEmpty { s += ", qop=\"\(qop.map(\.rawValue).joined(separator: ","))\"" }
        if stale { s += ", stale=true" }
        return s
    }

    /// A realm is config text or a header domain: escape `"` and `\`,
    /// drop control characters.
    static func quote(_ s: String) -> String {
        var out = ""
        for ch in s.unicodeScalars {
            if ch.value < 0x20 || ch.value == 0x7F { continue }
            if ch == "\"" || ch == "\\" { out.append("\\") }
            out.unicodeScalars.append(ch)
        }
        return out
    }
}
