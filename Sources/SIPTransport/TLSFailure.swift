import NIOCore
import NIOSSL

/// Why a TLS handshake failed, as a value (tests and callers decide on the
/// case; `description` is the plain sentence for the log). Made from the
/// library's error by `TLSFailure(error)`.
public enum TLSFailure: Sendable, Equatable, CustomStringConvertible {
    /// The client sent no certificate and tls_require_certificate=1 requires one.
    case noClientCertificate
    /// The server requires a certificate from us.
    case certificateRequired
    /// The peer's certificate does not chain to a CA in tls_ca_list, or is expired or not yet valid.
    case notTrusted
    /// The peer's verified chain has more intermediate CAs than tls_verify_depth (the depth) allows.
    case chainTooLong(depth: Int)
    /// The peer does not trust our certificate (unknown CA alert).
    case peerUnknownCA
    /// The peer refused our certificate (bad certificate alert).
    case peerBadCertificate
    /// The peer refused our certificate as expired.
    case peerCertificateExpired
    /// The peer offered no suite that tls_ciphers_list allows.
    case noSharedCipher
    /// No cipher suite available at all.
    case noCiphersAvailable
    /// The peer aborted the handshake (handshake failure alert).
    case peerAborted
    /// The peer's TLS versions are outside tls_method.
    case unsupportedVersion
    /// The peer refuses our TLS versions (protocol version alert).
    case peerRefusedVersion
    /// Not TLS, or a TLS version outside tls_method.
    case wrongVersionNumber
    /// Plain HTTP sent to a TLS port.
    case plainHTTP
    /// An HTTP CONNECT sent to a TLS port.
    case httpProxyRequest
    /// The peer does not speak TLS.
    case notTLS
    case decryptionFailed
    /// The peer closed the connection without a TLS close_notify.
    case uncleanShutdown
    /// Anything else, in the library's words.
    case other(String)

    /// The failure's group for metrics (`swiftser_tls_handshake_failures_total{reason}`):
    /// a fixed set of labels, never text from the library or the peer.
    public enum Group: Int, CaseIterable, Sendable {
        case noClientCertificate, notTrusted, chainTooLong, peerRefusedCertificate, noSharedCipher, version, notTLS, peerAborted, other

        public var label: String {
            switch self {
            case .noClientCertificate: return "no_client_certificate"
            case .notTrusted: return "not_trusted"
            case .chainTooLong: return "chain_too_long"
            case .peerRefusedCertificate: return "peer_refused_certificate"
            case .noSharedCipher: return "no_shared_cipher"
            case .version: return "version"
            case .notTLS: return "not_tls"
            case .peerAborted: return "peer_aborted"
            case .other: return "other"
            }
        }
    }

    public var group: Group {
        switch self {
        case .noClientCertificate, .certificateRequired: return .noClientCertificate
        case .notTrusted: return .notTrusted
        case .chainTooLong: return .chainTooLong
        case .peerUnknownCA, .peerBadCertificate, .peerCertificateExpired: return .peerRefusedCertificate
        case .noSharedCipher, .noCiphersAvailable: return .noSharedCipher
        case .unsupportedVersion, .peerRefusedVersion, .wrongVersionNumber: return .version
        case .plainHTTP, .httpProxyRequest, .notTLS: return .notTLS
        case .peerAborted, .uncleanShutdown: return .peerAborted
        case .decryptionFailed, .other: return .other
        }
    }

    /// A TLS version mismatch of either side.
    public var isVersionMismatch: Bool {
        switch self {
        case .unsupportedVersion, .peerRefusedVersion, .wrongVersionNumber: return true
        default: return false
        }
    }

    /// The library reports handshake errors as BoringSSL's error strings:
    /// they are read here, once, into a case.
    init(_ error: Error) {
        let text = String(describing: error)
        let table: [(String, TLSFailure)] = [
            ("PEER_DID_NOT_RETURN_A_CERTIFICATE", .noClientCertificate),
            ("CERTIFICATE_REQUIRED", .certificateRequired),
            ("CERTIFICATE_VERIFY_FAILED", .notTrusted),
            ("TLSV1_ALERT_UNKNOWN_CA", .peerUnknownCA),
            ("SSLV3_ALERT_BAD_CERTIFICATE", .peerBadCertificate),
            ("SSLV3_ALERT_CERTIFICATE_EXPIRED", .peerCertificateExpired),
            ("NO_SHARED_CIPHER", .noSharedCipher),
            ("NO_CIPHERS_AVAILABLE", .noCiphersAvailable),
            ("SSLV3_ALERT_HANDSHAKE_FAILURE", .peerAborted),
            ("UNSUPPORTED_PROTOCOL", .unsupportedVersion),
            ("TLSV1_ALERT_PROTOCOL_VERSION", .peerRefusedVersion),
            ("WRONG_VERSION_NUMBER", .wrongVersionNumber),
            ("HTTP_REQUEST", .plainHTTP),
            ("HTTPS_PROXY_REQUEST", .httpProxyRequest),
            ("UNKNOWN_PROTOCOL", .notTLS),
            ("DECRYPTION_FAILED", .decryptionFailed),
            ("uncleanShutdown", .uncleanShutdown),
        ]
        for (needle, failure) in table where text.contains(needle) {
            self = failure
            return
        }
        if let e = error as? NIOSSLError {
            switch e {
            case .uncleanShutdown: self = .uncleanShutdown
            case .handshakeFailed(let inner): self = .other("handshake failed: \(inner)")
            default: self = .other("TLS error: \(e)")
            }
            return
        }
        if let e = error as? IOError {
            self = .other(e.description)
            return
        }
        self = .other(text)
    }

    public var description: String {
        switch self {
        case .noClientCertificate: return "no client certificate: the client sent none and tls_require_certificate=1 requires one"
        case .certificateRequired: return "no client certificate: the server requires one"
        case .notTrusted: return "certificate not trusted: it does not chain to a CA in tls_ca_list, or it is expired or not yet valid"
        case .chainTooLong(let depth):
            return "the peer's certificate chain is longer than tls_verify_depth=\(depth) allows (at most \(depth) intermediate CA certificate\(depth == 1 ? "" : "s") between it and a trusted CA)"
        case .peerUnknownCA: return "the peer does not trust our certificate (unknown CA)"
        case .peerBadCertificate: return "the peer refused our certificate (bad certificate)"
        case .peerCertificateExpired: return "the peer refused our certificate (expired)"
        case .noSharedCipher: return "no shared cipher: the peer offered no suite that tls_ciphers_list allows"
        case .noCiphersAvailable: return "no shared cipher"
        case .peerAborted: return "the peer aborted the handshake (handshake failure alert: often no shared cipher or a refused certificate)"
        case .unsupportedVersion: return "protocol version: the peer's TLS versions are outside tls_method"
        case .peerRefusedVersion: return "protocol version: the peer refuses our TLS versions"
        case .wrongVersionNumber: return "protocol version: not TLS, or a TLS version outside tls_method"
        case .plainHTTP: return "the peer sent plain HTTP to a TLS port"
        case .httpProxyRequest: return "the peer sent an HTTP CONNECT to a TLS port"
        case .notTLS: return "the peer does not speak TLS (plain SIP to a TLS port?)"
        case .decryptionFailed: return "decryption failed"
        case .uncleanShutdown: return "the peer closed the connection without a TLS close_notify"
        case .other(let words): return words
        }
    }
}
