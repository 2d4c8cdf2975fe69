import Crypto
import Foundation

/// The client side of RFC 3261 §22 / RFC 7616 digest for sipload's
/// REGISTER: reads a challenge and writes the Authorization value. MD5 and
/// SHA-256, `qop=auth` when offered (nonce count 1), RFC 2069 otherwise.
struct DigestAnswer {
    /// The parameters of one challenge (`Digest realm="…", nonce="…", …`).
    static func parameters(_ value: String) -> [String: String]? {
        var text = Substring(value).drop { $0 == " " }
        guard text.lowercased().hasPrefix("digest") else { return nil }
        text = text.dropFirst(6)
        var out: [String: String] = [:]
        while true {
            text = text.drop { $0 == " " || $0 == "," || $0 == "\t" }
            guard let eq = text.firstIndex(of: "=") else { break }
            let name = text[..<eq].trimmingCharacters(in: .whitespaces).lowercased()
            text = text[text.index(after: eq)...].drop { $0 == " " }
            if text.first == "\"" {
                text = text.dropFirst()
                guard let close = text.firstIndex(of: "\"") else { return nil }
                out[name] = String(text[..<close])
                text = text[text.index(after: close)...]
            } else {
                let end = text.firstIndex(of: ",") ?? text.endIndex
                out[name] = text[..<end].trimmingCharacters(in: .whitespaces)
                text = text[end...]
            }
        }
        return out
    }

    /// The Authorization value for the first challenge of `values` whose
    /// algorithm sipload knows; nil when none.
    static func authorization(challenges values: [String], user: String, password: String, method: String, uri: String,
                              cnonce: String) -> String? {
        for value in values {
            guard let p = parameters(value), let realm = p["realm"], let nonce = p["nonce"] else { continue }
            let algorithm = p["algorithm"] ?? "MD5"
            let hash: (String) -> String
            switch algorithm.uppercased() {
            case "MD5": hash = { Insecure.MD5.hash(data: Data($0.utf8)).map { String(format: "%02x", $0) }.joined() }
            case "SHA-256": hash = { SHA256.hash(data: Data($0.utf8)).map { String(format: "%02x", $0) }.joined() }
            default: continue
            }
            let ha1 = hash("\(user):\(realm):\(password)")
            let ha2 = hash("\(method):\(uri)")
            let auth = p["qop"].map { $0.split(separator: ",").contains { $0.trimmingCharacters(in: .whitespaces) == "auth" } } ?? false
            var header = "Digest username=\"\(user)\", realm=\"\(realm)\", nonce=\"\(nonce)\", uri=\"\(uri)\", algorithm=\(algorithm)"
            if auth {
                let response = hash("\(ha1):\(nonce):00000001:\(cnonce):auth:\(ha2)")
                header += ", qop=auth, nc=00000001, cnonce=\"\(cnonce)\", response=\"\(response)\""
            } else {
                header += ", response=\"\(hash("\(ha1):\(nonce):\(ha2)"))\""
            }
            if let opaque = p["opaque"] { header += ", opaque=\"\(opaque)\"" }
            return header
        }
        return nil
    }
}
