import NIOSSL
import SIPConfig

/// Evaluates an OpenSSL cipher string (`tls_ciphers_list`) against the
/// TLS ≤ 1.2 cipher suites this TLS library offers, with OpenSSL's rules:
/// `:`-separated (also `,` or space) elements, `!` removes for good, `-`
/// removes, `+` moves to the end, `A+B` is the intersection, aliases such as
/// `HIGH`, `ECDHE`, `AESGCM`, `CHACHA20`, `aRSA`, `!aNULL`.
///
/// swift-nio-ssl stops the process on a string that matches no cipher, so
/// SwiftSER evaluates the string itself and hands the exact list of suites
/// over; a string that matches nothing is a config error. TLS 1.3 suites
/// are fixed (AES-GCM and ChaCha20-Poly1305) and not affected.
public struct TLSCipherList: Sendable, Equatable {
    /// One supported suite and the attributes aliases select on.
    public struct Suite: Sendable, Equatable {
        public let openSSLName: String
        public let ianaName: String
        public let value: UInt16
        let tags: Set<String>

        /// True for ECDHE key exchange with an AEAD cipher (what BCP 195 recommends).
        public var isModern: Bool { tags.contains("ECDHE") && tags.contains("AEAD") }
    }

    public static let suites: [Suite] = [
        Suite(openSSLName: "ECDHE-ECDSA-AES128-GCM-SHA256", ianaName: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", value: 0xC02B, tags: ["ECDHE", "aECDSA", "ECDSA", "AES", "AES128", "AESGCM", "AEAD", "SHA256", "TLSv1.2"]),
        Suite(openSSLName: "ECDHE-RSA-AES128-GCM-SHA256", ianaName: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", value: 0xC02F, tags: ["ECDHE", "aRSA", "AES", "AES128", "AESGCM", "AEAD", "SHA256", "TLSv1.2"]),
        Suite(openSSLName: "ECDHE-ECDSA-AES256-GCM-SHA384", ianaName: "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", value: 0xC02C, tags: ["ECDHE", "aECDSA", "ECDSA", "AES", "AES256", "AESGCM", "AEAD", "SHA384", "TLSv1.2"]),
        Suite(openSSLName: "ECDHE-RSA-AES256-GCM-SHA384", ianaName: "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", value: 0xC030, tags: ["ECDHE", "aRSA", "AES", "AES256", "AESGCM", "AEAD", "SHA384", "TLSv1.2"]),
        Suite(openSSLName: "ECDHE-ECDSA-CHACHA20-POLY1305", ianaName: "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", value: 0xCCA9, tags: ["ECDHE", "aECDSA", "ECDSA", "CHACHA20", "AEAD", "SHA256", "TLSv1.2"]),
        Suite(openSSLName: "ECDHE-RSA-CHACHA20-POLY1305", ianaName: "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", value: 0xCCA8, tags: ["ECDHE", "aRSA", "CHACHA20", "AEAD", "SHA256", "TLSv1.2"]),
        Suite(openSSLName: "ECDHE-ECDSA-AES128-SHA", ianaName: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", value: 0xC009, tags: ["ECDHE", "aECDSA", "ECDSA", "AES", "AES128", "SHA1", "SHA", "TLSv1", "SSLv3"]),
        Suite(openSSLName: "ECDHE-RSA-AES128-SHA", ianaName: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", value: 0xC013, tags: ["ECDHE", "aRSA", "AES", "AES128", "SHA1", "SHA", "TLSv1", "SSLv3"]),
        Suite(openSSLName: "ECDHE-ECDSA-AES256-SHA", ianaName: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", value: 0xC00A, tags: ["ECDHE", "aECDSA", "ECDSA", "AES", "AES256", "SHA1", "SHA", "TLSv1", "SSLv3"]),
        Suite(openSSLName: "ECDHE-RSA-AES256-SHA", ianaName: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", value: 0xC014, tags: ["ECDHE", "aRSA", "AES", "AES256", "SHA1", "SHA", "TLSv1", "SSLv3"]),
        Suite(openSSLName: "AES128-GCM-SHA256", ianaName: "TLS_RSA_WITH_AES_128_GCM_SHA256", value: 0x009C, tags: ["kRSA", "RSA", "aRSA", "AES", "AES128", "AESGCM", "AEAD", "SHA256", "TLSv1.2"]),
        Suite(openSSLName: "AES256-GCM-SHA384", ianaName: "TLS_RSA_WITH_AES_256_GCM_SHA384", value: 0x009D, tags: ["kRSA", "RSA", "aRSA", "AES", "AES256", "AESGCM", "AEAD", "SHA384", "TLSv1.2"]),
        Suite(openSSLName: "AES128-SHA", ianaName: "TLS_RSA_WITH_AES_128_CBC_SHA", value: 0x002F, tags: ["kRSA", "RSA", "aRSA", "AES", "AES128", "SHA1", "SHA", "TLSv1", "SSLv3"]),
        Suite(openSSLName: "AES256-SHA", ianaName: "TLS_RSA_WITH_AES_256_CBC_SHA", value: 0x0035, tags: ["kRSA", "RSA", "aRSA", "AES", "AES256", "SHA1", "SHA", "TLSv1", "SSLv3"]),
    ]

    /// SwiftSER's default: ECDHE key exchange with AEAD ciphers only.
    public static let secureDefault = TLSCipherList(selected: suites.filter(\.isModern), ignored: [])

    /// The suites selected, in preference order.
    public let selected: [Suite]
    /// Names in the string that this library does not have (NULL, RC4, …).
    public let ignored: [String]

    /// True when every selected suite is ECDHE with AEAD.
    public var isModernOnly: Bool { selected.allSatisfy(\.isModern) }

    /// The list for swift-nio-ssl.
    public var nioCiphers: [NIOTLSCipher] { selected.map { NIOTLSCipher(rawValue: $0.value) } }

    /// `a:b:c` in OpenSSL names.
    public var openSSLString: String { selected.map(\.openSSLName).joined(separator: ":") }

    init(selected: [Suite], ignored: [String]) {
        self.selected = selected
        self.ignored = ignored
    }

    /// Aliases that select nothing here: the weak families BoringSSL left out.
    static let emptyAliases: Set<String> = [
        "NULL", "ENULL", "ANULL", "EXPORT", "EXP", "LOW", "MEDIUM", "RC4", "DES", "3DES", "MD5", "SEED", "IDEA",
        "CAMELLIA", "ADH", "AECDH", "PSK", "SRP", "DSS", "ADSS", "DH", "EDH", "DHE", "KDHE", "KEDH", "COMPLEMENTOFDEFAULT",
        "COMPLEMENTOFALL", "ARIA", "CCM", "CCM8", "GOST", "KGOST", "AGOST",
    ]

    static func matches(_ token: String) -> [Suite]? {
        let up = token.uppercased()
        switch up {
        case "ALL", "DEFAULT", "HIGH", "FIPS": return suites
        case "ECDHE", "EECDH", "KECDHE", "KEECDH", "ECDH", "KECDH": return suites.filter { $0.tags.contains("ECDHE") }
        case "KRSA", "RSA": return suites.filter { $0.tags.contains("kRSA") }
        case "ARSA": return suites.filter { $0.tags.contains("aRSA") }
        case "ECDSA", "AECDSA": return suites.filter { $0.tags.contains("aECDSA") }
        case "AES": return suites.filter { $0.tags.contains("AES") }
        case "AES128": return suites.filter { $0.tags.contains("AES128") }
        case "AES256": return suites.filter { $0.tags.contains("AES256") }
        case "AESGCM": return suites.filter { $0.tags.contains("AESGCM") }
        case "CHACHA20": return suites.filter { $0.tags.contains("CHACHA20") }
        case "AEAD": return suites.filter { $0.tags.contains("AEAD") }
        case "SHA", "SHA1": return suites.filter { $0.tags.contains("SHA1") }
        case "SHA256": return suites.filter { $0.tags.contains("SHA256") }
        case "SHA384": return suites.filter { $0.tags.contains("SHA384") }
        case "TLSV1.2": return suites.filter { $0.tags.contains("TLSv1.2") }
        case "TLSV1", "SSLV3", "TLSV1.0": return suites.filter { $0.tags.contains("TLSv1") }
        default: break
        }
        if emptyAliases.contains(up) { return [] }
        if let s = suites.first(where: { $0.openSSLName.uppercased() == up || $0.ianaName.uppercased() == up }) { return [s] }
        return nil
    }

    /// Evaluates `string`. Returns an error message when it selects no suite.
    public static func parse(_ string: String) -> Result<TLSCipherList, TLSCipherListError> {
        var list: [Suite] = []
        var banned: Set<UInt16> = []
        var ignored: [String] = []
        let elements = string.split(whereSeparator: { $0 == ":" || $0 == "," || $0 == " " }).map(String.init)
        for var element in elements {
            if element.hasPrefix("@") { continue } // @STRENGTH, @SECLEVEL=n
            var op: Character = " "
            if let f = element.first, "!-+".contains(f) {
                op = f
                element.removeFirst()
            }
            var selected: [Suite]? = nil
            var unknown = false
            for part in element.split(separator: "+").map(String.init) {
                guard let m = matches(part) else { unknown = true; break }
                selected = selected.map { cur in cur.filter { s in m.contains(s) } } ?? m
            }
            if unknown {
                ignored.append(element)
                continue
            }
            let chosen = selected ?? []
            if chosen.isEmpty && op == " " { ignored.append(element) }
            switch op {
            case "!":
                for s in chosen { banned.insert(s.value) }
                list.removeAll { s in chosen.contains(s) }
            case "-":
                list.removeAll { s in chosen.contains(s) }
            case "+":
                let moving = list.filter { s in chosen.contains(s) }
                list.removeAll { s in chosen.contains(s) }
                list.append(contentsOf: moving)
            default:
                for s in chosen where !banned.contains(s.value) && !list.contains(s) { list.append(s) }
            }
        }
        if list.isEmpty {
            return .failure(TLSCipherListError(string: string, ignored: ignored))
        }
        return .success(TLSCipherList(selected: list, ignored: ignored))
    }
}

public struct TLSCipherListError: Error, Sendable, Equatable, CustomStringConvertible {
    public let string: String
    public let ignored: [String]
    public var description: String {
        var s = "tls_ciphers_list '\(string)' selects no cipher suite this TLS library offers"
        if !ignored.isEmpty { s += " (not available or unknown: \(ignored.joined(separator: ", ")))" }
        return s + "; for example write \"ECDHE+AESGCM:ECDHE+CHACHA20\""
    }
}
