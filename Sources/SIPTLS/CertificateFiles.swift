import Foundation
import NIOSSL
import SIPConfig
import X509
import SwiftASN1

/// A problem with a certificate, key, CA or CRL file: which parameter,
/// which file, and the reason in plain words.
public struct TLSFileError: Error, Sendable, CustomStringConvertible {
    public var parameter: String
    public var path: String
    public var reason: String
    /// The TLS domain the file belongs to.
    public var domain: String?

    public var description: String {
        "\(parameter) '\(path)'\(domain.map { " (TLS domain \($0))" } ?? ""): \(reason)"
    }
}

/// What `swiftser check` and the start-up log say about a certificate.
public struct CertificateSummary: Sendable, CustomStringConvertible {
    public var subject: String
    public var issuer: String
    public var notValidAfter: Date
    public var keyType: String
    /// Subject alternative names as `DNS:x`, `IP:x`, `URI:x`.
    public var alternativeNames: [String]

    public var description: String {
        let fmt = ISO8601DateFormatter()
        return "subject \(subject), issuer \(issuer), expires \(fmt.string(from: notValidAfter)), key \(keyType)" +
            (alternativeNames.isEmpty ? "" : ", SAN \(alternativeNames.joined(separator: " "))")
    }
}

/// A certificate chain and its private key, read and checked.
public struct LoadedIdentity: @unchecked Sendable { // immutable after loading; NIOSSL's certificate and key types are not marked Sendable
    public var chain: [NIOSSLCertificate]
    public var key: NIOSSLPrivateKey
    public var summary: CertificateSummary
    public var warnings: [String]
}

/// Reading and checking the files a TLS domain names.
public enum CertificateFiles {
    static func read(_ path: String, parameter: String, domain: String?) throws(TLSFileError) -> Data {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw TLSFileError(parameter: parameter, path: path, reason: "no such file", domain: domain)
        }
        if isDir.boolValue {
            throw TLSFileError(parameter: parameter, path: path, reason: "is a folder; it must be a file", domain: domain)
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw TLSFileError(parameter: parameter, path: path, reason: "cannot be read (permission denied?)", domain: domain)
        }
        return data
    }

    /// PEM blocks of one kind (`CERTIFICATE`, `X509 CRL`, …) in a file.
    static func pemBlocks(_ text: String, _ label: String) -> [String] {
        var out: [String] = []
        var rest = Substring(text)
        let begin = "-----BEGIN \(label)-----"
        let end = "-----END \(label)-----"
        while let b = rest.range(of: begin), let e = rest.range(of: end, range: b.upperBound..<rest.endIndex) {
            out.append(String(rest[b.lowerBound..<e.upperBound]))
            rest = rest[e.upperBound...]
        }
        return out
    }

    /// Parses every certificate in a PEM file (a chain or a CA list).
    public static func certificates(at path: String, parameter: String, domain: String? = nil) throws(TLSFileError) -> [(Certificate, NIOSSLCertificate)] {
        let data = try read(path, parameter: parameter, domain: domain)
        guard let text = String(data: data, encoding: .utf8) else {
            throw TLSFileError(parameter: parameter, path: path, reason: "not a PEM file (binary content; convert DER with 'openssl x509 -inform der')", domain: domain)
        }
        let blocks = pemBlocks(text, "CERTIFICATE")
        guard !blocks.isEmpty else {
            throw TLSFileError(parameter: parameter, path: path, reason: "not a PEM certificate file (no '-----BEGIN CERTIFICATE-----' block)", domain: domain)
        }
        var out: [(Certificate, NIOSSLCertificate)] = []
        for (i, pem) in blocks.enumerated() {
            do {
                let x = try Certificate(pemEncoded: pem)
                let n = try NIOSSLCertificate(bytes: Array(pem.utf8), format: .pem)
                out.append((x, n))
            } catch {
                throw TLSFileError(parameter: parameter, path: path, reason: "certificate \(i + 1) in the file is not a valid X.509 certificate (\(error))", domain: domain)
            }
        }
        return out
    }

    static func keyType(_ k: Certificate.PublicKey) -> String {
        let d = String(describing: k)
        if d.contains("P256") { return "ECDSA P-256" }
        if d.contains("P384") { return "ECDSA P-384" }
        if d.contains("P521") { return "ECDSA P-521" }
        if d.contains("Ed25519") { return "Ed25519" }
        if d.contains("RSA") {
            if let bits = d.split(separator: " ").first(where: { Int($0) != nil }) { return "RSA \(bits)" }
            return "RSA"
        }
        return d
    }

    public static func summary(_ c: Certificate) -> CertificateSummary {
        var sans: [String] = []
        if let ext = try? c.extensions.subjectAlternativeNames {
            for n in ext {
                switch n {
                case .dnsName(let s): sans.append("DNS:\(s)")
                case .uniformResourceIdentifier(let s): sans.append("URI:\(s)")
                case .ipAddress(let b): sans.append("IP:\(PeerIdentity.ipString(Array(b.bytes)))")
                default: break
                }
            }
        }
        return CertificateSummary(subject: c.subject.description, issuer: c.issuer.description, notValidAfter: c.notValidAfter,
                                  keyType: keyType(c.publicKey), alternativeNames: sans)
    }

    /// Reads and checks a domain's certificate and key: files exist and are
    /// PEM, the key matches the certificate, the certificate is in its
    /// validity period (warning when it ends within 30 days), the key file
    /// is not readable by others (warning).
    public static func loadIdentity(_ domain: TLSDomain, now: Date = Date()) throws(TLSFileError) -> LoadedIdentity {
        let dname = domain.name
        var warnings: [String] = []
        let certs = try certificates(at: domain.certificate, parameter: "tls_certificate", domain: dname)
        let leaf = certs[0].0
        if leaf.notValidAfter < now {
            throw TLSFileError(parameter: "tls_certificate", path: domain.certificate, reason: "certificate expired on \(ISO8601DateFormatter().string(from: leaf.notValidAfter))", domain: dname)
        }
        if leaf.notValidBefore > now {
            throw TLSFileError(parameter: "tls_certificate", path: domain.certificate, reason: "certificate is not valid before \(ISO8601DateFormatter().string(from: leaf.notValidBefore))", domain: dname)
        }
        if leaf.notValidAfter.timeIntervalSince(now) < 30 * 86_400 {
            warnings.append("tls_certificate '\(domain.certificate)' (TLS domain \(dname)) expires on \(ISO8601DateFormatter().string(from: leaf.notValidAfter)), within 30 days")
        }
        // Key
        let keyData = try read(domain.privateKey, parameter: "tls_private_key", domain: dname)
        guard let keyText = String(data: keyData, encoding: .utf8), keyText.contains("-----BEGIN"), keyText.contains("PRIVATE KEY-----") else {
            throw TLSFileError(parameter: "tls_private_key", path: domain.privateKey, reason: "not a PEM private key (no '-----BEGIN … PRIVATE KEY-----' block)", domain: dname)
        }
        let encrypted = keyText.contains("ENCRYPTED PRIVATE KEY") || keyText.contains("Proc-Type: 4,ENCRYPTED")
        if encrypted && domain.privateKeyPassword == nil {
            throw TLSFileError(parameter: "tls_private_key", path: domain.privateKey, reason: "the key is encrypted; set tls_private_key_password", domain: dname)
        }
        let key: NIOSSLPrivateKey
        do {
            if let password = domain.privateKeyPassword, encrypted {
                key = try NIOSSLPrivateKey(bytes: Array(keyData), format: .pem) { setter in setter(Array(password.utf8)) }
            } else {
                key = try NIOSSLPrivateKey(bytes: Array(keyData), format: .pem)
            }
        } catch {
            throw TLSFileError(parameter: "tls_private_key", path: domain.privateKey,
                               reason: encrypted ? "cannot decrypt the key (wrong tls_private_key_password?)" : "not a valid private key (\(error))", domain: dname)
        }
        if !encrypted {
            // Compare the key's public half with the certificate's.
            var matched: Bool? = nil
            for label in ["PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY"] {
                if let pem = pemBlocks(keyText, label).first, let k = try? Certificate.PrivateKey(pemEncoded: pem) {
                    matched = k.publicKey == leaf.publicKey
                    break
                }
            }
            if matched == false {
                throw TLSFileError(parameter: "tls_private_key", path: domain.privateKey, reason: "the key does not match the certificate in '\(domain.certificate)'", domain: dname)
            }
        }
        if let attrs = try? FileManager.default.attributesOfItem(atPath: domain.privateKey),
           let mode = attrs[.posixPermissions] as? NSNumber, mode.intValue & 0o004 != 0 {
            warnings.append("tls_private_key '\(domain.privateKey)' is readable by every user on this machine; chmod 600 it")
        }
        return LoadedIdentity(chain: certs.map(\.1), key: key, summary: summary(leaf), warnings: warnings)
    }

    /// Reads a CA list; an expired CA is a warning, not an error.
    public static func loadCAList(_ path: String, domain: String?, now: Date = Date()) throws(TLSFileError) -> (certificates: [NIOSSLCertificate], parsed: [Certificate], warnings: [String]) {
        let certs = try certificates(at: path, parameter: "tls_ca_list", domain: domain)
        var warnings: [String] = []
        for (c, _) in certs where c.notValidAfter < now {
            warnings.append("tls_ca_list '\(path)': CA '\(c.subject)' expired on \(ISO8601DateFormatter().string(from: c.notValidAfter))")
        }
        return (certs.map(\.1), certs.map(\.0), warnings)
    }
}
