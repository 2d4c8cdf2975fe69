import NIOConcurrencyHelpers

/// What the transport refused, dropped or closed to stay within its limits,
/// and the bytes it holds queued for peers that do not read. Read by tests
/// and operators (`SIPTransport.counters`); updated on rare paths only.
public struct TransportCounterValues: Sendable, Equatable {
    /// UDP datagrams whose `sendto` failed (the listener stays open).
    public var udpSendErrors = 0
    /// Connections closed because their write queue passed `tcp_conn_wq_max`.
    public var queueLimitCloses = 0
    /// Connections closed because the queued bytes of all connections would pass `tcp_wq_max`.
    public var globalQueueLimitCloses = 0
    /// Keep-alive pongs written.
    public var pongsSent = 0
    /// Keep-alive pongs not sent because one was still pending or the peer does not read.
    public var pongsSkipped = 0
    /// Times a connection stopped being read because its peer did not read (back-pressure).
    public var readPauses = 0
    /// Connections refused by `tcp_max_connections_per_ip`.
    public var perAddressRefusals = 0
    /// Connections refused by `tcp_max_connections` / `tls_max_connections`.
    public var poolRefusals = 0
    /// Connections in the TLS handshake closed to make room for a new one (`tls_max_handshakes`).
    public var handshakeEvictions = 0
    /// Connections closed because a started message did not complete within `tcp_msg_read_timeout`.
    public var messageReadTimeouts = 0
    /// Inbound and outbound TLS handshakes that completed.
    public var tlsHandshakesCompleted = 0
    /// TLS handshakes that failed (an alert, no shared cipher, a certificate not trusted, not TLS, …).
    public var tlsHandshakesFailed = 0
    /// Failed handshakes by `TLSFailure.Group` (indexed by its raw value).
    public var tlsHandshakeFailuresByGroup = [Int](repeating: 0, count: TLSFailure.Group.allCases.count)
    /// TLS handshakes closed by `tls_handshake_timeout`.
    public var tlsHandshakeTimeouts = 0
    /// TLS connections closed right after their handshake by our checks (a revoked certificate, a server name that does not match, RFC 5922).
    public var tlsVerificationRefusals = 0
    /// Octets now queued on connections whose peers do not keep up (counted against `tcp_wq_max`).
    public var queuedBytes = 0
    /// The most octets one connection ever had queued.
    public var peakConnectionQueue = 0
    /// The most octets all connections together ever had queued.
    public var peakQueuedBytes = 0
}

public final class TransportCounters: Sendable {
    private let box = NIOLockedValueBox(TransportCounterValues())

    public var values: TransportCounterValues { box.withLockedValue { $0 } }

    func add(_ field: WritableKeyPath<TransportCounterValues, Int>, _ n: Int = 1) {
        box.withLockedValue { $0[keyPath: field] += n }
    }

    /// Moves a connection's share of the global queue from `old` to `new`
    /// octets; false (nothing changed) when that would pass `limit`.
    func requeue(from old: Int, to new: Int, limit: Int) -> Bool {
        box.withLockedValue { v in
            let total = v.queuedBytes - old + new
            if new > old && total > limit { return false }
            v.queuedBytes = max(0, total)
            v.peakQueuedBytes = max(v.peakQueuedBytes, v.queuedBytes)
            v.peakConnectionQueue = max(v.peakConnectionQueue, new)
            return true
        }
    }

    func addHandshakeFailure(_ group: TLSFailure.Group) {
        box.withLockedValue {
            $0.tlsHandshakesFailed += 1
            $0.tlsHandshakeFailuresByGroup[group.rawValue] += 1
        }
    }

    func notePeak(connection queued: Int) {
        box.withLockedValue { $0.peakConnectionQueue = max($0.peakConnectionQueue, queued) }
    }
}
