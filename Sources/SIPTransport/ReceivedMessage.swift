import NIOCore
import SIPConfig
import SIPCore

/// A message as it arrived: the message, where from, on which socket, and
/// over which connection.
///
/// A class: it is handed from the transport to the core, the message
/// context and the transaction layer, and each hand-over is then one
/// reference instead of a copy of every field.
public final class ReceivedMessage: @unchecked Sendable { // every stored property is a `let` of a value type; SocketAddress, SIPConnection and UDPReplySocket are safe to share
    public let message: SIPMessage
    /// The peer's address (for UDP the datagram's source).
    public let source: SocketAddress
    /// The listen socket it arrived on (for an outbound connection: the
    /// listener of the same protocol and family that SwiftSER advertises).
    public let listener: ListenSocket
    public let proto: TransportProtocol
    /// The connection it came in on (TCP/TLS), for replies and reuse.
    public let connection: SIPConnection?
    /// The TLS session of the connection (nil for UDP and TCP); read from
    /// the connection when asked, not copied with every message.
    public var tls: TLSSessionInfo? { connection?.tls }
    /// The source IP as text, made once (a connection keeps its own).
    public let sourceIP: String
    public let sourcePort: Int
    /// UDP: the socket it arrived on, which sends a stateless reply
    /// directly (see `UDPReplySocket`).
    let udpSocket: UDPReplySocket?

    public convenience init(message: SIPMessage, source: SocketAddress, listener: ListenSocket, proto: TransportProtocol, connection: SIPConnection?) {
        self.init(message: message, source: source, sourceIP: connection?.remoteIP ?? source.ipText ?? "", listener: listener, proto: proto,
                  connection: connection, udpSocket: nil)
    }

    init(message: SIPMessage, source: SocketAddress, sourceIP: String, listener: ListenSocket, proto: TransportProtocol, connection: SIPConnection?,
         udpSocket: UDPReplySocket?) {
        self.message = message
        self.source = source
        self.sourceIP = sourceIP
        self.sourcePort = source.port ?? 0
        self.listener = listener
        self.proto = proto
        self.connection = connection
        self.udpSocket = udpSocket
    }
}

/// Where to send a message.
public struct Destination: Sendable, CustomStringConvertible {
    public var proto: TransportProtocol
    /// Host as text (IP literal or name); for TLS the name also drives SNI
    /// and the RFC 5922 check.
    public var host: String
    public var port: UInt16
    /// The resolved address, when known.
    public var address: SocketAddress?
    /// Prefer this connection when it is still open.
    public var connectionID: UInt64?
    /// The SIP domain the TLS peer must prove (RFC 5922); defaults to `host`.
    public var tlsServerName: String?
    /// RFC 3263 §4.2: look this SRV name up first (e.g. `_sips._tcp.example.com`)
    /// and try its targets in order; `host`:`port` when it has none.
    public var srvName: String?

    public init(proto: TransportProtocol, host: String, port: UInt16, address: SocketAddress? = nil, connectionID: UInt64? = nil, tlsServerName: String? = nil, srvName: String? = nil) {
        self.srvName = srvName
        self.proto = proto
        self.host = host
        self.port = port
        self.address = address
        self.connectionID = connectionID
        self.tlsServerName = tlsServerName
    }

    public var description: String {
        "\(proto.rawValue):\(host.utf8.contains(0x3A) ? "[\(host)]" : host):\(port)"
    }
}

/// Receives what the transport delivers. Called on the event loop of the
/// socket the message came in on.
public protocol SIPTransportDelegate: AnyObject, Sendable {
    func transport(_ transport: SIPTransport, received: ReceivedMessage)
    /// A TCP/TLS connection closed; `reason` says why.
    func transport(_ transport: SIPTransport, closed connection: SIPConnection, reason: CloseReason)
}

extension SIPTransportDelegate {
    public func transport(_ transport: SIPTransport, closed connection: SIPConnection, reason: CloseReason) {}
}

public enum SIPTransportError: Error, CustomStringConvertible {
    case tlsDisabled
    case noListener(TransportProtocol, String)
    case connectionClosed(String)
    case resolveFailed(String)
    case tooManyConnections(TransportProtocol)
    case tlsVerificationFailed(String)
    case sendTimeout
    /// The name a TLS connection would send as SNI and check the
    /// certificate against is not a host name.
    case invalidServerName(String)

    public var description: String {
        switch self {
        case .tlsDisabled: return "TLS is disabled (disable_tls=1)"
        case .noListener(let p, let f): return "no \(p.rawValue) listener for \(f) to send from"
        case .connectionClosed(let why): return "connection closed: \(why)"
        case .resolveFailed(let h): return "cannot resolve \(h)"
        case .tooManyConnections(let p): return "\(p.rawValue) connection limit reached"
        case .tlsVerificationFailed(let why): return "TLS verification failed: \(why)"
        case .sendTimeout: return "send timeout"
        case .invalidServerName(let n): return "'\(n.prefix(64))' cannot be a TLS server name"
        }
    }
}
