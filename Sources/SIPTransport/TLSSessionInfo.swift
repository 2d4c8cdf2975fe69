import NIOSSL
import X509

/// What the script can learn about a TLS connection: `$tls_version`,
/// `$tls_cipher_info`, `$tls_peer_subject`, `$tls_peer_subject_cn`,
/// `$tls_peer_issuer`, `$tls_peer_verified`, `$tls_peer_server_name`,
/// `is_peer_verified()`.
public struct TLSSessionInfo: Sendable, Equatable {
    /// `TLSv1.2`, `TLSv1.3`.
    public var version: String?
    /// IANA name of the negotiated suite, read from the ServerHello.
    public var cipher: String?
    public var peerSubject: String?
    public var peerSubjectCN: String?
    public var peerIssuer: String?
    /// The peer presented a certificate and it verified against the
    /// domain's CA list (and, outbound, named the target per RFC 5922).
    public var peerVerified: Bool = false
    /// SNI: the name the client asked for (inbound) or sent (outbound).
    public var serverName: String?
    /// The TLS domain used.
    public var domain: String = ""
    /// The peer's certificate (DER), for identity checks such as RFC 5923.
    public var peerCertificateDER: [UInt8]?

    public init() {}

    static func versionName(_ v: NIOSSL.TLSVersion?) -> String? {
        switch v {
        case .tlsv1: return "TLSv1.0"
        case .tlsv11: return "TLSv1.1"
        case .tlsv12: return "TLSv1.2"
        case .tlsv13: return "TLSv1.3"
        default: return nil
        }
    }

    /// Fills the peer fields from its certificate.
    mutating func setPeer(_ cert: NIOSSLCertificate?) {
        guard let cert, let der = try? cert.toDERBytes(), let x = try? Certificate(derEncoded: der) else { return }
        peerCertificateDER = der
        peerSubject = x.subject.description
        peerIssuer = x.issuer.description
        for rdn in x.subject {
            for attr in rdn where attr.type == .RDNAttributeType.commonName {
                peerSubjectCN = String(describing: attr.value)
            }
        }
    }
}
