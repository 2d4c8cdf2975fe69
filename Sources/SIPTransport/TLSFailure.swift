import NIOCore
import NIOSSL

/// Plain words for why a TLS handshake or connection failed, from the
/// library's error.
enum TLSFailureReason {
    static func describe(_ error: Error) -> String {
        let text = String(describing: error)
        let table: [(String, String)] = [
            ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "no client certificate: the client sent none and tls_require_certificate=1 requires one"),
            ("CERTIFICATE_REQUIRED", "no client certificate: the server requires one"),
            ("CERTIFICATE_VERIFY_FAILED", "certificate not trusted: it does not chain to a CA in tls_ca_list, or it is expired or not yet valid"),
            ("TLSV1_ALERT_UNKNOWN_CA", "the peer does not trust our certificate (unknown CA)"),
            ("SSLV3_ALERT_BAD_CERTIFICATE", "the peer refused our certificate (bad certificate)"),
            ("SSLV3_ALERT_CERTIFICATE_EXPIRED", "the peer refused our certificate (expired)"),
            ("NO_SHARED_CIPHER", "no shared cipher: the peer offered no suite that tls_ciphers_list allows"),
            ("NO_CIPHERS_AVAILABLE", "no shared cipher"),
            ("SSLV3_ALERT_HANDSHAKE_FAILURE", "the peer aborted the handshake (handshake failure alert: often no shared cipher or a refused certificate)"),
            ("UNSUPPORTED_PROTOCOL", "protocol version: the peer's TLS versions are outside tls_method"),
            ("TLSV1_ALERT_PROTOCOL_VERSION", "protocol version: the peer refuses our TLS versions"),
            ("WRONG_VERSION_NUMBER", "protocol version: not TLS, or a TLS version outside tls_method"),
            ("HTTP_REQUEST", "the peer sent plain HTTP to a TLS port"),
            ("HTTPS_PROXY_REQUEST", "the peer sent an HTTP CONNECT to a TLS port"),
            ("UNKNOWN_PROTOCOL", "the peer does not speak TLS (plain SIP to a TLS port?)"),
            ("DECRYPTION_FAILED", "decryption failed"),
            ("uncleanShutdown", "the peer closed the connection without a TLS close_notify"),
        ]
        for (needle, words) in table where text.contains(needle) { return words }
        if let e = error as? NIOSSLError {
            switch e {
            case .uncleanShutdown: return "the peer closed the connection without a TLS close_notify"
            case .handshakeFailed(let inner): return "handshake failed: \(inner)"
            default: return "TLS error: \(e)"
            }
        }
        if let e = error as? IOError { return e.description }
        return text
    }
}
