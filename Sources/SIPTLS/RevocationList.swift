import Foundation
import SwiftASN1
import X509

/// The certificates a CRL file (`tls_crl`) revokes: per issuer name, the
/// revoked serial numbers. The file is the operator's own configuration;
/// its signature is not checked here.
public struct RevocationList: Sendable {
    /// Issuer Name (DER) → revoked serial numbers (big-endian, no leading zeros).
    var revoked: [[UInt8]: Set<[UInt8]>] = [:]
    /// The earliest `nextUpdate` of the file's CRLs: when a fresher list
    /// is due. nil when none says.
    public private(set) var nextUpdate: Date?

    /// True when a CRL of the file is past its `nextUpdate` (RFC 5280
    /// §5.1.2.5): certificates revoked since are not in it.
    public func isStale(now: Date = Date()) -> Bool {
        nextUpdate.map { $0 < now } ?? false
    }

    public var count: Int { revoked.values.reduce(0) { $0 + $1.count } }

    static func trim(_ b: some Collection<UInt8>) -> [UInt8] {
        Array(b.drop(while: { $0 == 0 }))
    }

    /// Reads every `X509 CRL` block of a PEM file.
    public static func load(_ path: String, domain: String?) throws(TLSFileError) -> RevocationList {
        let data = try CertificateFiles.read(path, parameter: "tls_crl", domain: domain)
        let text = String(decoding: data, as: UTF8.self)
        let blocks = CertificateFiles.pemBlocks(text, "X509 CRL")
        guard !blocks.isEmpty else {
            throw TLSFileError(parameter: "tls_crl", path: path, reason: "not a PEM CRL file (no '-----BEGIN X509 CRL-----' block)", domain: domain)
        }
        var list = RevocationList()
        for pem in blocks {
            do {
                let doc = try PEMDocument(pemString: pem)
                try list.add(der: Array(doc.derBytes))
            } catch {
                throw TLSFileError(parameter: "tls_crl", path: path, reason: "not a valid CRL (\(error))", domain: domain)
            }
        }
        return list
    }

    /// CertificateList ::= SEQUENCE { tbsCertList, signatureAlgorithm, signature }
    /// TBSCertList ::= SEQUENCE { version INTEGER OPTIONAL, signature, issuer Name,
    ///   thisUpdate, nextUpdate OPTIONAL, revokedCertificates SEQUENCE OF
    ///   SEQUENCE { userCertificate INTEGER, revocationDate, extensions OPTIONAL } OPTIONAL, [0] extensions OPTIONAL }
    mutating func add(der: [UInt8]) throws {
        let root = try DER.parse(der)
        guard case .constructed(let top) = root.content, let tbs = top.first(where: { _ in true }),
              case .constructed(let fields) = tbs.content else {
            throw ASN1Error.invalidASN1Object(reason: "not a CertificateList")
        }
        var it = fields.makeIterator()
        var node = it.next()
        if node?.identifier == .integer { node = it.next() } // version
        node = it.next() // signature algorithm → issuer
        guard let issuer = node else { throw ASN1Error.invalidASN1Object(reason: "no issuer") }
        _ = it.next() // thisUpdate
        node = it.next()
        if let n = node, n.identifier == .utcTime || n.identifier == .generalizedTime {
            if let next = RevocationList.date(n) { nextUpdate = min(nextUpdate ?? next, next) }
            node = it.next()
        }
        var serials = revoked[Array(issuer.encodedBytes)] ?? []
        if let list = node, list.identifier == .sequence, case .constructed(let entries) = list.content {
            for entry in entries {
                guard case .constructed(let parts) = entry.content, let serial = parts.first(where: { _ in true }),
                      case .primitive(let bytes) = serial.content else { continue }
                serials.insert(RevocationList.trim(bytes))
            }
        }
        revoked[Array(issuer.encodedBytes)] = serials
    }

    /// A UTCTime or GeneralizedTime (RFC 5280 §4.1.2.5) as a Date.
    static func date(_ node: ASN1Node) -> Date? {
        var c = DateComponents()
        if node.identifier == .utcTime, let t = try? UTCTime(derEncoded: node) {
            (c.year, c.month, c.day, c.hour, c.minute, c.second) = (t.year, t.month, t.day, t.hours, t.minutes, t.seconds)
        } else if node.identifier == .generalizedTime, let t = try? GeneralizedTime(derEncoded: node) {
            (c.year, c.month, c.day, c.hour, c.minute, c.second) = (t.year, t.month, t.day, t.hours, t.minutes, t.seconds)
        } else {
            return nil
        }
        var cal = Calendar(identifier: .gregorian)
        guard let utc = TimeZone(identifier: "UTC") else { return nil }
        cal.timeZone = utc
        return cal.date(from: c)
    }

    /// True when the CRL lists this certificate.
    public func isRevoked(_ cert: Certificate) -> Bool {
        var s = DER.Serializer()
        guard (try? s.serialize(cert.issuer)) != nil else { return false }
        guard let serials = revoked[s.serializedBytes] else { return false }
        return serials.contains(RevocationList.trim(cert.serialNumber.bytes))
    }
}
