/// Why a TCP or TLS connection closed: a value the proxy decides on by
/// case (an idle or shutdown close fails no branch; any other fails the
/// branches waiting on the connection), and a plain sentence for the log.
public enum CloseReason: Sendable, Equatable, CustomStringConvertible {
    /// The peer closed it.
    case peer
    /// The proxy is shutting down.
    case shuttingDown
    /// Idle for `tcp_connection_lifetime`.
    case idle
    /// A connection limit refused or evicted it (the limit, in words).
    case limit(String)
    /// No TLS handshake within `tls_handshake_timeout` (seconds).
    case handshakeTimeout(Int64)
    /// The TLS handshake failed (why, as a case).
    case handshakeFailed(TLSFailure)
    /// The peer's certificate did not pass the checks after the handshake.
    case verificationFailed(String)
    /// Any other error on an established connection (the plain reason).
    case error(String)
    /// The byte stream could not be cut into SIP messages.
    case framing(String)
    /// A started message did not complete within `tcp_msg_read_timeout` (seconds).
    case messageReadTimeout(Int64)
    /// Queued data was not sent in time: the peer does not read.
    case sendTimeout(String)
    /// A write queue passed its bound: the peer does not read.
    case writeQueue(String)

    public var description: String {
        switch self {
        case .peer: return "closed by the peer"
        case .shuttingDown: return "shutting down"
        case .idle: return "idle for tcp_connection_lifetime"
        case .limit(let why): return why
        case .handshakeTimeout(let s): return "TLS handshake not completed within tls_handshake_timeout (\(s) s)"
        case .handshakeFailed(let why): return "TLS handshake failed: \(why)"
        case .verificationFailed(let why): return "TLS verification failed: \(why)"
        case .error(let why): return why
        case .framing(let why): return "framing error: \(why)"
        case .messageReadTimeout(let s): return "message not completed within tcp_msg_read_timeout (\(s) s)"
        case .sendTimeout(let why): return why
        case .writeQueue(let why): return why
        }
    }
}
