import X509
import Logging
import NIOCore
import NIOSSL
import NIOTLS
import SIPConfig
import SIPCore
import SIPTLS

/// The last handler of a TCP or TLS connection: cuts the stream into
/// messages and hands them to the transport; answers keep-alive pings;
/// enforces the handshake timeout, the idle lifetime, the send timeout and
/// the write-queue bound; registers and removes the connection; logs every
/// close once with its reason. The seed's `tls_tcpconn_init`, `tls_read`,
/// `tls_blocking_write`, `tls_close` and `tls_tcpconn_clean` live here.
final class SIPStreamHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    struct Settings {
        var handshakeTimeout: TimeAmount?
        var sendTimeout: TimeAmount
        var maxQueuedBytes: Int
        var limits: SIPLimits
        var maxConnections: Int
        /// `tcp_connection_lifetime`: a connection with no read or write for this long closes.
        var idleLifetime: TimeAmount
    }

    /// Last read or write, for the idle lifetime (kept here rather than in
    /// an IdleStateHandler: one handler hop fewer per message).
    private var lastActivity = NIODeadline.now()
    private var idleTimer: Scheduled<Void>?

    private let transport: SIPTransport
    private let listener: ListenSocket
    private let settings: Settings
    private let outbound: Bool
    private let identityKey: String
    /// Outbound TLS: the domain, and the name the server must prove.
    private let clientDomain: TLSDomainContext?
    private let targetName: String?
    /// Inbound TLS: the domain chosen for the listener (and SNI).
    var serverDomain: TLSDomainContext?
    var sniName: String?
    var cipherSuite: UInt16?

    private(set) var connection: SIPConnection?
    /// Outbound: completed when the connection is registered (or refused).
    let registered: EventLoopPromise<SIPConnection>?
    private var framer: SIPStreamFramer
    private var handshakeTimer: Scheduled<Void>?
    private var sendTimer: Scheduled<Void>?
    private var queuedWhileBlocked = 0
    private var logger: Logger { transport.logger }

    /// - Parameters:
    ///   - outbound: a connection SwiftSER opens (with `clientDomain`,
    ///     `targetName`, and `registered`, completed once it is in the table).
    init(transport: SIPTransport, listener: ListenSocket, settings: Settings, outbound: Bool, identityKey: String = "",
         clientDomain: TLSDomainContext? = nil, targetName: String? = nil, registered: EventLoopPromise<SIPConnection>? = nil) {
        self.transport = transport
        self.listener = listener
        self.settings = settings
        self.outbound = outbound
        self.identityKey = identityKey
        self.clientDomain = clientDomain
        self.targetName = targetName
        self.framer = SIPStreamFramer(limits: settings.limits)
        self.registered = registered
    }

    var isTLS: Bool { listener.proto == .tls }

    // MARK: Lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { activate(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        activate(context)
        context.fireChannelActive()
    }

    private func activate(_ context: ChannelHandlerContext) {
        guard connection == nil else { return }
        let c = SIPConnection(id: transport.connections.makeID(), proto: listener.proto, channel: context.channel, listener: listener,
                              outbound: outbound, identityKey: identityKey, ready: !(outbound && isTLS))
        connection = c
        guard transport.connections.add(c, limit: settings.maxConnections) else {
            logger.warning("refusing \(c): \(listener.proto == .tls ? "tls_max_connections" : "tcp_max_connections") (\(settings.maxConnections)) reached")
            c.closeReason = "connection limit reached"
            connection = nil
            registered?.fail(SIPTransportError.tooManyConnections(listener.proto))
            context.close(promise: nil)
            return
        }
        registered?.succeed(c)
        if outbound { transport.registerOutbound(c) }
        lastActivity = .now()
        armIdleTimer(context, at: lastActivity + settings.idleLifetime)
        logger.debug("\(c) opened on \(listener)")
        if isTLS, let t = settings.handshakeTimeout {
            handshakeTimer = context.eventLoop.scheduleTask(in: t) { [weak self] in
                guard let self, let c = self.connection else { return }
                c.closeReason = "TLS handshake not completed within tls_handshake_timeout (\(t.nanoseconds / 1_000_000_000) s)"
                context.close(promise: nil)
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if connection == nil { registered?.fail(SIPTransportError.connectionClosed("closed before it was ready")) }
        handshakeTimer?.cancel()
        sendTimer?.cancel()
        idleTimer?.cancel()
        if let c = connection {
            transport.connections.remove(c)
            let reason = c.closeReason ?? "closed by the peer"
            c.failPending(SIPTransportError.connectionClosed(reason))
            var details = ""
            if let t = c.tls { details = " [\(t.version ?? "?") \(t.cipher ?? "?")\(t.peerSubject.map { ", peer \($0)" } ?? "")]" }
            logger.info("\(c) closed: \(reason)\(details)")
            transport.connectionClosed(c, reason: reason)
            connection = nil
        }
        context.fireChannelInactive()
    }

    /// Set when the peer's verified chain had more intermediate CAs than
    /// `tls_verify_depth` allows (the depth).
    var chainLongerThan: Int?

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if let c = connection {
            var reason = TLSFailureReason.describe(error)
            if let depth = chainLongerThan {
                reason = "the peer's certificate chain is longer than tls_verify_depth=\(depth) allows (at most \(depth) intermediate CA certificate\(depth == 1 ? "" : "s") between it and a trusted CA)"
            }
            if isTLS && c.tls == nil {
                c.closeReason = "TLS handshake failed: \(reason)"
                logger.warning("TLS handshake with \(c.remote.ipAddress ?? "?"):\(c.remote.port ?? 0) on \(listener) failed: \(reason)")
            } else {
                c.closeReason = reason
            }
        }
        context.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? TLSUserEvent, case .handshakeCompleted = e {
            handshakeTimer?.cancel()
            handshakeCompleted(context)
            // The cipher suite is known: the sniffer leaves the per-message
            // path (one handler hop fewer per read and per write). Removed
            // on the next loop turn, never in the middle of the handshake's
            // writes.
            let pipeline = context.pipeline
            context.eventLoop.execute {
                if let sniffer = try? pipeline.syncOperations.context(handlerType: TLSRecordSniffer.self) {
                    pipeline.syncOperations.removeHandler(context: sniffer, promise: nil)
                }
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func handshakeCompleted(_ context: ChannelHandlerContext) {
        guard let c = connection else { return }
        var info = TLSSessionInfo()
        let ssl = try? context.pipeline.syncOperations.handler(type: NIOSSLHandler.self)
        info.version = TLSSessionInfo.versionName(ssl?.tlsVersion)
        info.cipher = cipherSuite.map(TLSRecordSniffer.name)
        info.setPeer(ssl?.peerCertificate)
        // tls_crl: a revoked peer certificate ends the connection.
        if let domain = outbound ? clientDomain : serverDomain, let der = info.peerCertificateDER, domain.isRevoked(peerDER: der) {
            let why = "the peer's certificate (\(info.peerSubject ?? "?")) is revoked by tls_crl"
            logger.warning("TLS connection with \(c.remote.ipAddress ?? "?"):\(c.remote.port ?? 0) refused: \(why)")
            c.closeReason = "TLS verification failed: \(why)"
            c.failPending(SIPTransportError.tlsVerificationFailed(why))
            context.close(promise: nil)
            return
        }
        if outbound {
            let domain = clientDomain!
            info.domain = domain.domain.name
            info.serverName = targetName
            if domain.domain.verify {
                // The chain was verified by the library; now RFC 5922.
                if domain.domain.verifyHostname, let name = targetName {
                    let ok = ssl?.peerCertificate.flatMap { cert -> Bool? in
                        guard let der = try? cert.toDERBytes(), let x = try? X509Certificate(derEncoded: der) else { return nil }
                        return PeerIdentity.matches(x, domain: name, allowWildcards: domain.domain.allowWildcardCertificates)
                    } ?? false
                    if !ok {
                        c.tls = info
                        let why = "server certificate does not name '\(name)' (RFC 5922: SAN sip: URI or DNS name, CN only without SAN\(domain.domain.allowWildcardCertificates ? "" : ", no wildcards"))"
                        logger.warning("TLS connection to \(c.remote.ipAddress ?? "?"):\(c.remote.port ?? 0) refused: \(why)")
                        c.closeReason = "TLS verification failed: \(why)"
                        c.failPending(SIPTransportError.tlsVerificationFailed(why))
                        context.close(promise: nil)
                        return
                    }
                }
                info.peerVerified = ssl?.peerCertificate != nil
            }
        } else {
            let domain = serverDomain
            info.domain = domain?.domain.name ?? ""
            info.serverName = sniName
            info.peerVerified = (domain?.domain.verify ?? false) && ssl?.peerCertificate != nil
        }
        c.tls = info
        logger.debug("\(c): TLS established \(info.version ?? "?") \(info.cipher ?? "?") domain \(info.domain)\(info.peerSubject.map { " peer \($0)" } ?? "")")
        if outbound { c.markReady() }
    }

    // MARK: Reading

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let c = connection else { return }
        c.inReadBatch = true
        lastActivity = .now()
        var buf = unwrapInboundIn(data)
        buf.withUnsafeReadableBytes { framer.append($0) }
        buf.moveReaderIndex(forwardBy: buf.readableBytes)
        while true {
            let event: SIPStreamFramer.Event?
            do {
                event = try framer.next()
            } catch {
                c.closeReason = "framing error: \(error.detail)"
                logger.warning("\(c): unrecoverable framing error (\(error.detail)); closing")
                // Replies to the messages before the bad one still go out.
                if c.flushPending {
                    c.flushPending = false
                    c.writeBatch()
                    context.flush()
                }
                context.close(promise: nil)
                return
            }
            guard let event else { break }
            switch event {
            case .keepAlivePing:
                // RFC 5626 §4.4.1: answer CRLFCRLF with CRLF.
                var pong = context.channel.allocator.buffer(capacity: 2)
                pong.writeBytes([0x0D, 0x0A])
                c.writeBatch()
                context.writeAndFlush(wrapOutboundOut(pong), promise: nil)
            case .message(let bytes):
                deliver(bytes, context: context, connection: c)
            }
            if connection == nil { return }
        }
    }

    /// Checks the idle lifetime when it could have run out, and closes the
    /// connection when nothing was read or written since.
    private func armIdleTimer(_ context: ChannelHandlerContext, at deadline: NIODeadline) {
        idleTimer = context.eventLoop.scheduleTask(deadline: deadline) { [weak self] in
            guard let self, self.connection != nil else { return }
            let due = self.lastActivity + self.settings.idleLifetime
            if due <= .now() {
                self.connection?.closeReason = "idle for tcp_connection_lifetime"
                context.close(promise: nil)
            } else {
                self.armIdleTimer(context, at: due)
            }
        }
    }

    /// The read is over: one flush for every reply it produced.
    func channelReadComplete(context: ChannelHandlerContext) {
        if let c = connection {
            c.inReadBatch = false
            if c.flushPending {
                c.flushPending = false
                c.writeBatch()
                context.flush()
            }
        }
        context.fireChannelReadComplete()
    }

    private func deliver(_ bytes: [UInt8], context: ChannelHandlerContext, connection c: SIPConnection) {
        do {
            let m = try SIPMessage.parse(bytes, framing: .stream, limits: settings.limits)
            let r = ReceivedMessage(message: m, source: c.remote, listener: listener, proto: listener.proto, connection: c)
            transport.deliver(r)
        } catch {
            logger.info("\(c): malformed message (\(error)); \(bytes.starts(with: Array("SIP/".utf8)) ? "response dropped" : "answering 400")")
            if let reply = SIPResponseBuilder.errorResponse(toUnparsed: bytes, error: error, toTag: transport.makeTag()) {
                _ = c.send(ByteBuffer(bytes: reply))
            }
        }
    }

    // MARK: Writing (send timeout, queue bound)

    /// The channel stops being writable when more than its high-water mark
    /// waits to be sent: the peer is not reading. If that lasts the send
    /// timeout, or the queue grows past the bound, the connection closes.
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            sendTimer?.cancel()
            sendTimer = nil
            queuedWhileBlocked = 0
        } else if sendTimer == nil {
            let timeout = settings.sendTimeout
            sendTimer = context.eventLoop.scheduleTask(in: timeout) { [weak self] in
                guard let self, !context.channel.isWritable else { return }
                self.connection?.closeReason = "send timeout: queued data not sent within \(self.isTLS ? "tls_send_timeout" : "tcp_send_timeout") (\(timeout.nanoseconds / 1_000_000_000) s); the peer does not read"
                context.close(promise: nil)
            }
        }
        context.fireChannelWritabilityChanged()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        lastActivity = .now()
        if !context.channel.isWritable {
            queuedWhileBlocked += unwrapOutboundIn(data).readableBytes
            if queuedWhileBlocked > settings.maxQueuedBytes {
                connection?.closeReason = "write queue over \(settings.maxQueuedBytes) octets: the peer does not read"
                promise?.fail(SIPTransportError.sendTimeout)
                context.close(promise: nil)
                return
            }
        }
        context.write(data, promise: promise)
    }
}

typealias X509Certificate = X509.Certificate
