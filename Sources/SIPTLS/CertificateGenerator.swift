import Crypto
import _CryptoExtras
import Foundation
import SwiftASN1
import X509

/// Makes a CA and certificates signed by it (`swiftser certs …`), in place
/// of the seed's openssl scripts (§1.3.4). Keys are written mode 0600.
/// These are development certificates: valid `defaultValidDays` (90) unless
/// told otherwise, and never written over a file that exists.
public enum CertificateGenerator {
    /// Days a development CA or certificate is valid by default.
    public static let defaultValidDays = 90

    public enum KeyKind: String, Sendable, CaseIterable {
        case ecdsaP256 = "ec"
        case rsa2048 = "rsa2048"
        case rsa3072 = "rsa3072"
    }

    /// A certificate and its key, in memory.
    public struct Issued: Sendable {
        public var certificate: Certificate
        public var key: Certificate.PrivateKey

        public func certificatePEM() throws -> String { try certificate.serializeAsPEM().pemString }
        public func keyPEM() throws -> String { try key.serializeAsPEM().pemString }
    }

    public struct Request: Sendable {
        public var commonName: String
        public var dnsNames: [String] = []
        public var ipAddresses: [String] = []
        /// `sip:domain` URIs (RFC 5922 identities).
        public var sipURIs: [String] = []
        public var validDays = CertificateGenerator.defaultValidDays
        public var key: KeyKind = .ecdsaP256
        /// Validity start, for tests that need an expired certificate.
        public var notBefore = Date().addingTimeInterval(-3600)

        public init(commonName: String) { self.commonName = commonName }
    }

    static func makeKey(_ kind: KeyKind) throws -> Certificate.PrivateKey {
        switch kind {
        case .ecdsaP256: return Certificate.PrivateKey(P256.Signing.PrivateKey())
        case .rsa2048: return Certificate.PrivateKey(try _RSA.Signing.PrivateKey(keySize: .bits2048))
        case .rsa3072: return Certificate.PrivateKey(try _RSA.Signing.PrivateKey(keySize: .init(bitCount: 3072)))
        }
    }

    static func signatureAlgorithm(for key: Certificate.PrivateKey) -> Certificate.SignatureAlgorithm {
        String(describing: key).contains("RSA") ? .sha256WithRSAEncryption : .ecdsaWithSHA256
    }

    static func serial() -> Certificate.SerialNumber {
        var bytes = (0..<16).map { _ in UInt8.random(in: 0...255) }
        bytes[0] &= 0x7F
        bytes[0] |= 0x01
        return Certificate.SerialNumber(bytes: bytes)
    }

    /// A CA: self-signed, or an intermediate signed by `issuer`. With the
    /// default path length 0 it signs end-entity certificates only.
    public static func makeCA(commonName: String, validDays: Int = defaultValidDays, key kind: KeyKind = .ecdsaP256, notBefore: Date = Date().addingTimeInterval(-3600),
                              maxPathLength: Int = 0, issuer: Issued? = nil) throws -> Issued {
        let key = try makeKey(kind)
        let name = try DistinguishedName {
            OrganizationName("SwiftSER")
            CommonName(commonName)
        }
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.isCertificateAuthority(maxPathLength: maxPathLength))
            Critical(KeyUsage(keyCertSign: true, cRLSign: true))
            SubjectKeyIdentifier(hash: key.publicKey)
            if let issuer { AuthorityKeyIdentifier(keyIdentifier: try? issuer.certificate.extensions.subjectKeyIdentifier?.keyIdentifier) }
        }
        let signer = issuer?.key ?? key
        let cert = try Certificate(
            version: .v3, serialNumber: serial(), publicKey: key.publicKey,
            notValidBefore: notBefore, notValidAfter: notBefore.addingTimeInterval(TimeInterval(validDays) * 86_400),
            issuer: issuer?.certificate.subject ?? name, subject: name, signatureAlgorithm: signatureAlgorithm(for: signer),
            extensions: extensions, issuerPrivateKey: signer)
        return Issued(certificate: cert, key: key)
    }

    /// An end-entity certificate for a SIP server or client, signed by `ca`.
    /// Extended key usage carries both serverAuth and clientAuth, since a
    /// proxy is a TLS server to its clients and a TLS client to the next hop.
    public static func issue(_ req: Request, by ca: Issued) throws -> Issued {
        let key = try makeKey(req.key)
        let subject = try DistinguishedName {
            OrganizationName("SwiftSER")
            CommonName(req.commonName)
        }
        var sans: [GeneralName] = req.dnsNames.map { .dnsName($0) }
        for ip in req.ipAddresses {
            guard let bytes = ipBytes(ip) else { throw GeneratorError.badIPAddress(ip) }
            sans.append(.ipAddress(ASN1OctetString(contentBytes: ArraySlice(bytes))))
        }
        sans.append(contentsOf: req.sipURIs.map { .uniformResourceIdentifier($0) })
        let isRSA = req.key != .ecdsaP256
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.notCertificateAuthority)
            Critical(KeyUsage(digitalSignature: true, keyEncipherment: isRSA))
            try ExtendedKeyUsage([.serverAuth, .clientAuth])
            SubjectKeyIdentifier(hash: key.publicKey)
            AuthorityKeyIdentifier(keyIdentifier: try? ca.certificate.extensions.subjectKeyIdentifier?.keyIdentifier)
            if !sans.isEmpty { SubjectAlternativeNames(sans) }
        }
        let cert = try Certificate(
            version: .v3, serialNumber: serial(), publicKey: key.publicKey,
            notValidBefore: req.notBefore, notValidAfter: req.notBefore.addingTimeInterval(TimeInterval(req.validDays) * 86_400),
            issuer: ca.certificate.subject, subject: subject, signatureAlgorithm: signatureAlgorithm(for: ca.key),
            extensions: extensions, issuerPrivateKey: ca.key)
        return Issued(certificate: cert, key: key)
    }

    public enum GeneratorError: Error, CustomStringConvertible {
        case badIPAddress(String)
        case cannotWrite(String, String)
        /// The file is there already: nothing is written over it.
        case exists(String)
        public var description: String {
            switch self {
            case .badIPAddress(let s): return "'\(s)' is not an IPv4 or IPv6 address"
            case .cannotWrite(let p, let why): return "cannot write '\(p)': \(why)"
            case .exists(let p): return "'\(p)' exists already; it is not written over (move it away or choose another name)"
            }
        }
    }

    /// Octets of an IPv4 or IPv6 literal.
    public static func ipBytes(_ s: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, s, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, s, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
        return nil
    }

    /// Writes a certificate (0644) and its key (0600); neither is written
    /// when either file exists.
    public static func write(_ issued: Issued, certificate certPath: String, key keyPath: String) throws {
        for p in [certPath, keyPath] where FileManager.default.fileExists(atPath: p) { throw GeneratorError.exists(p) }
        try writeFile(certPath, try issued.certificatePEM(), mode: 0o644)
        try writeFile(keyPath, try issued.keyPEM(), mode: 0o600)
    }

    /// Writes a new file; one that exists (or a symbolic link there) is
    /// never written over (`O_EXCL`).
    public static func writeFile(_ path: String, _ text: String, mode: Int) throws {
        let dir = (path as NSString).deletingLastPathComponent
        if !dir.isEmpty { try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        // Create with the final mode so a key is never briefly world-readable.
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, mode_t(mode))
        guard fd >= 0 else {
            if errno == EEXIST { throw GeneratorError.exists(path) }
            throw GeneratorError.cannotWrite(path, String(cString: strerror(errno)))
        }
        defer { close(fd) }
        fchmod(fd, mode_t(mode))
        let bytes = Array(text.utf8)
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Foundation.write(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { throw GeneratorError.cannotWrite(path, String(cString: strerror(errno))) }
            off += n
        }
    }

    /// Reads a CA certificate and key written by `write`.
    public static func readCA(certificate: String, key: String) throws -> Issued {
        let c = try Certificate(pemEncoded: try String(contentsOfFile: certificate, encoding: .utf8))
        let k = try Certificate.PrivateKey(pemEncoded: try String(contentsOfFile: key, encoding: .utf8))
        return Issued(certificate: c, key: k)
    }
}
