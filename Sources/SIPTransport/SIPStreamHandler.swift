import X509
import Logging
import NIOCore
import NIOSSL
import NIOTLS
import SIPConfig
import SIPCore
import SIPTLS

/// The last handler of a TCP or TLS connection: cuts the stream into
/// messages and hands them to the transport; answers keep-alive pings (one
/// pending at most); enforces the handshake timeout, the idle lifetime, the
/// message-read and send timeouts, the write-queue bounds and back-pressure;
/// registers the connection in its pool and removes it; logs every close
/// once with its reason. The seed's `tls_tcpconn_init`, `tls_read`,
/// `tls_blocking_write`, `tls_close` and `tls_tcpconn_clean` live here.
final class SIPStreamHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    struct Settings {
        var handshakeTimeout: TimeAmount?
        var sendTimeout: TimeAmount
        /// `tcp_conn_wq_max` (never below one largest message): this
        /// connection's queued octets; past it the connection closes.
        var maxQueuedBytes: Int
        /// `tcp_wq_max`: octets queued on all connections whose peers do not keep up.
        var maxTotalQueuedBytes: Int
        var limits: SIPLimits
        var maxConnections: Int
        /// `tcp_max_outbound_connections`: connections SwiftSER opens, TCP and TLS together.
        var maxOutbound: Int
        /// `tcp_max_connections_per_ip`: inbound connections from one address.
        var maxConnectionsPerIP: Int
        /// `tls_max_handshakes`: inbound TLS connections still in the handshake.
        var maxHandshakes: Int
        /// `tcp_connection_lifetime`: a connection with no read or write for this long closes.
        var idleLifetime: TimeAmount
        /// `tcp_msg_read_timeout`: a message whose first octets arrived must be complete within this.
        var messageReadTimeout: TimeAmount
    }

    /// Last read or write, for the idle lifetime (kept here rather than in
    /// an IdleStateHandler: one handler hop fewer per message). Times come
    /// from the event loop's clock (`EventLoop.now`: the system clock on a
    /// real loop, the virtual one on an `EmbeddedEventLoop` in tests).
    private var lastActivity = NIODeadline.uptimeNanoseconds(0)
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
    /// Octets handed to the pipeline since the last flush.
    private var unflushed = 0
    /// This connection's share of the global queue (`tcp_wq_max`): its
    /// queued octets while the peer does not keep up, else 0.
    private var accounted = 0
    /// A read was asked for while the connection was not writable (back-pressure).
    private var readDeferred = false
    /// A keep-alive pong is written and not yet sent.
    private var pongPending = false
    /// Closing for a limit: later writes of the same batch are dropped.
    private var closing = false
    /// The deadline of the message whose first octets are buffered.
    private var messageTimer: Scheduled<Void>?
    /// Messages completed, to tell whether the timed message is still the same one.
    private var messagesRead = 0
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
                              outbound: outbound, identityKey: identityKey, ready: !(outbound && isTLS), pendingLimit: settings.maxQueuedBytes)
        connection = c
        let pool: ConnectionTable.Pool = outbound ? .outbound : (isTLS ? .handshake : .inbound)
        let admitted = transport.connections.add(c, pool: pool, limits: ConnectionTable.Limits(
            connections: outbound ? settings.maxOutbound : settings.maxConnections, perAddress: settings.maxConnectionsPerIP, handshakes: settings.maxHandshakes))
        let refusal: String?
        switch admitted {
        case .added: refusal = nil
        case .evicted(let old):
            refusal = nil
            transport.counters.add(\.handshakeEvictions)
            old.close(reason: .limit("closed to make room for a new TLS handshake: tls_max_handshakes (\(settings.maxHandshakes)) in progress"))
        case .poolFull:
            transport.counters.add(\.poolRefusals)
            refusal = outbound ? "tcp_max_outbound_connections (\(settings.maxOutbound)) reached"
                : "\(listener.proto == .tls ? "tls_max_connections" : "tcp_max_connections") (\(settings.maxConnections)) reached"
        case .addressFull:
            transport.counters.add(\.perAddressRefusals)
            refusal = "tcp_max_connections_per_ip (\(settings.maxConnectionsPerIP)) reached for \(c.limitKey)"
        }
        if let refusal {
            logger.warning("refusing \(c): \(refusal)")
            c.closeReason = .limit("connection limit reached: \(refusal)")
            connection = nil
            registered?.fail(SIPTransportError.tooManyConnections(listener.proto))
            context.close(promise: nil)
            return
        }
        registered?.succeed(c)
        if outbound { transport.registerOutbound(c) }
        lastActivity = context.eventLoop.now
        armIdleTimer(context, at: lastActivity + settings.idleLifetime)
        logger.debug("\(c) opened on \(listener)")
        if isTLS, let t = settings.handshakeTimeout {
            handshakeTimer = context.eventLoop.assumeIsolated().scheduleTask(in: t) { [weak self] in
                guard let self, let c = self.connection else { return }
                self.transport.counters.add(\.tlsHandshakeTimeouts)
                c.closeReason = .handshakeTimeout(t.nanoseconds / 1_000_000_000)
                context.close(promise: nil)
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if connection == nil { registered?.fail(SIPTransportError.connectionClosed("closed before it was ready")) }
        handshakeTimer?.cancel()
        sendTimer?.cancel()
        idleTimer?.cancel()
        messageTimer?.cancel()
        unaccount()
        if let c = connection {
            transport.connections.remove(c)
            let reason = c.closeReason ?? .peer
            c.failPending(SIPTransportError.connectionClosed(reason.description))
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
    /// The TLS handshake completed (later errors are not handshake failures).
    private var handshakeDone = false

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if let c = connection {
            var reason = TLSFailure(error)
            if let depth = chainLongerThan { reason = .chainTooLong(depth: depth) }
            if isTLS && c.tls == nil && !handshakeDone {
                transport.counters.addHandshakeFailure(reason.group)
                c.closeReason = .handshakeFailed(reason)
                logger.warning("TLS handshake with \(c.remote.ipAddress ?? "?"):\(c.remote.port ?? 0) on \(listener) failed: \(reason)")
            } else {
                c.closeReason = .error(reason.description)
            }
        }
        context.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? TLSUserEvent, case .handshakeCompleted = e {
            handshakeTimer?.cancel()
            handshakeDone = true
            transport.counters.add(\.tlsHandshakesCompleted)
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
        // Out of the handshake pool, into the connection pool.
        if !outbound && !transport.connections.promote(c, limit: settings.maxConnections) {
            transport.counters.add(\.poolRefusals)
            logger.warning("refusing \(c) after its handshake: tls_max_connections (\(settings.maxConnections)) reached")
            c.closeReason = .limit("connection limit reached: tls_max_connections (\(settings.maxConnections)) reached")
            context.close(promise: nil)
            return
        }
        var info = TLSSessionInfo()
        let ssl = try? context.pipeline.syncOperations.handler(type: NIOSSLHandler.self)
        info.version = TLSSessionInfo.versionName(ssl?.tlsVersion)
        info.cipher = cipherSuite.map(TLSRecordSniffer.name)
        info.setPeer(ssl?.peerCertificate)
        // tls_crl: a revoked peer certificate ends the connection; so does
        // any peer certificate while the CRL is stale with tls_crl_stale=fail.
        if let domain = outbound ? clientDomain : serverDomain, let der = info.peerCertificateDER,
           domain.refusesForStaleCRL() || domain.isRevoked(peerDER: der) {
            let why = domain.refusesForStaleCRL()
                ? "the peer's certificate (\(info.peerSubject ?? "?")) cannot be checked: tls_crl is past its nextUpdate (tls_crl_stale=fail)"
                : "the peer's certificate (\(info.peerSubject ?? "?")) is revoked by tls_crl"
            logger.warning("TLS connection with \(c.remote.ipAddress ?? "?"):\(c.remote.port ?? 0) refused: \(why)")
            c.closeReason = .verificationFailed(why)
            transport.counters.add(\.tlsVerificationRefusals)
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
                        c.closeReason = .verificationFailed(why)
                        transport.counters.add(\.tlsVerificationRefusals)
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
        logger.debug("\(c): TLS established \(info.version ?? "?") \(info.cipher ?? "?") domain \(info.domain)\(info.peerSubject.map { " peer \(LogText($0))" } ?? "")")
        if outbound { c.markReady() }
    }

    // MARK: Reading

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let c = connection else { return }
        c.inReadBatch = true
        lastActivity = context.eventLoop.now
        var buf = unwrapInboundIn(data)
        buf.withUnsafeReadableBytes { framer.append($0) }
        buf.moveReaderIndex(forwardBy: buf.readableBytes)
        while true {
            let event: SIPStreamFramer.Event?
            do {
                event = try framer.next()
            } catch {
                c.closeReason = .framing(error.detail)
                logger.warning("\(c): unrecoverable framing error (\(error.detail)); closing")
                // Replies to the messages before the bad one still go out.
                if c.flushPending {
                    c.flushPending = false
                    c.writeBatch()
                    flush(context: context)
                }
                context.close(promise: nil)
                return
            }
            guard let event else { break }
            switch event {
            case .keepAlivePing:
                // RFC 5626 §4.4.1: answer CRLFCRLF with CRLF, through the
                // accounted write path, at most one pong pending: a peer
                // that streams pings and never reads gets no more.
                guard !pongPending && context.channel.isWritable else {
                    transport.counters.add(\.pongsSkipped)
                    break
                }
                pongPending = true
                transport.counters.add(\.pongsSent)
                var pong = context.channel.allocator.buffer(capacity: 2)
                pong.writeBytes([0x0D, 0x0A])
                c.writeBatch()
                let sent = context.eventLoop.makePromise(of: Void.self)
                sent.futureResult.assumeIsolated().whenComplete { [weak self] _ in self?.pongPending = false }
                write(context: context, data: wrapOutboundOut(pong), promise: sent)
                c.flushPending = true
            case .message(let bytes):
                messagesRead &+= 1
                deliver(bytes, context: context, connection: c)
            }
            if connection == nil { return }
        }
        // tcp_msg_read_timeout: a message begun must end in time. The
        // timer is not cancelled when the message completes (one timer per
        // period at most, not one per read): it looks when it fires.
        if messageTimer == nil && framer.hasPartialMessage { armMessageTimer(context) }
    }

    private func armMessageTimer(_ context: ChannelHandlerContext) {
        let started = messagesRead
        let timeout = settings.messageReadTimeout
        messageTimer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [weak self] in
            guard let self, let c = self.connection else { return }
            self.messageTimer = nil
            guard self.framer.hasPartialMessage else { return }
            if self.messagesRead != started {
                // That message completed; another one has begun since.
                self.armMessageTimer(context)
                return
            }
            self.transport.counters.add(\.messageReadTimeouts)
            c.closeReason = .messageReadTimeout(timeout.nanoseconds / 1_000_000_000)
            context.close(promise: nil)
        }
    }

    /// Checks the idle lifetime when it could have run out, and closes the
    /// connection when nothing was read or written since.
    private func armIdleTimer(_ context: ChannelHandlerContext, at deadline: NIODeadline) {
        idleTimer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [weak self] in
            guard let self, self.connection != nil else { return }
            let due = self.lastActivity + self.settings.idleLifetime
            if due <= context.eventLoop.now {
                self.connection?.closeReason = .idle
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
                flush(context: context)
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

    // MARK: Writing (send timeout, queue bounds, back-pressure)

    /// The channel stops being writable when more than its high-water mark
    /// (half of `tcp_conn_wq_max`, at most 64 KiB) waits to be sent: the peer is not
    /// reading. Reads then stop until it is writable again; if that lasts
    /// the send timeout, or the queue grows past the bound, the connection
    /// closes.
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            sendTimer?.cancel()
            sendTimer = nil
            unaccount()
            if readDeferred {
                readDeferred = false
                context.read()
            }
        } else if sendTimer == nil {
            let timeout = settings.sendTimeout
            sendTimer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [weak self] in
                guard let self, !context.channel.isWritable else { return }
                self.connection?.closeReason = .sendTimeout("send timeout: queued data not sent within \(self.isTLS ? "tls_send_timeout" : "tcp_send_timeout") (\(timeout.nanoseconds / 1_000_000_000) s); the peer does not read")
                context.close(promise: nil)
            }
        }
        context.fireChannelWritabilityChanged()
    }

    /// Back-pressure: nothing more is read from a peer while what it was
    /// sent waits (its requests would only add replies to the queue).
    func read(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            context.read()
        } else if !readDeferred {
            readDeferred = true
            transport.counters.add(\.readPauses)
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if closing {
            promise?.fail(SIPTransportError.connectionClosed(connection?.closeReason?.description ?? "closing"))
            return
        }
        lastActivity = context.eventLoop.now
        let size = unwrapOutboundIn(data).readableBytes
        // A long batch of replies goes out in parts: what waits unflushed
        // stays within half the bound.
        if unflushed > 0 && unflushed + size > settings.maxQueuedBytes / 2 {
            flush(context: context)
            if closing {
                promise?.fail(SIPTransportError.connectionClosed(connection?.closeReason?.description ?? "closing"))
                return
            }
        }
        if !context.channel.isWritable && !admitQueued(context, adding: size) {
            promise?.fail(SIPTransportError.sendTimeout)
            return
        }
        unflushed += size
        context.write(data, promise: promise)
    }

    func flush(context: ChannelHandlerContext) {
        context.flush()
        unflushed = 0
        // What the socket did not take stays queued: check the bounds.
        if !closing && !context.channel.isWritable { _ = admitQueued(context, adding: 0) }
    }

    /// Whether `adding` more octets keeps this connection within
    /// `tcp_conn_wq_max` and all connections within `tcp_wq_max`; when not,
    /// the connection closes. Updates this connection's share of the total.
    private func admitQueued(_ context: ChannelHandlerContext, adding: Int) -> Bool {
        let buffered = (try? context.channel.syncOptions?.getOption(.bufferedWritableBytes)) ?? 0
        let queued = buffered + unflushed + adding
        let counters = transport.counters
        if queued > settings.maxQueuedBytes {
            counters.notePeak(connection: buffered + unflushed)
            counters.add(\.queueLimitCloses)
            closeForLimit(context, "write queue over \(settings.maxQueuedBytes) octets (tcp_conn_wq_max): the peer does not read")
            return false
        }
        guard counters.requeue(from: accounted, to: queued, limit: settings.maxTotalQueuedBytes) else {
            counters.add(\.globalQueueLimitCloses)
            closeForLimit(context, "the write queues of all connections would pass tcp_wq_max (\(settings.maxTotalQueuedBytes) octets); this peer does not read")
            return false
        }
        accounted = queued
        return true
    }

    private func closeForLimit(_ context: ChannelHandlerContext, _ reason: String) {
        closing = true
        connection?.closeReason = .writeQueue(reason)
        unaccount()
        context.close(promise: nil)
    }

    /// Gives this connection's share of the global queue back.
    private func unaccount() {
        if accounted != 0 {
            _ = transport.counters.requeue(from: accounted, to: 0, limit: .max)
            accounted = 0
        }
    }
}

typealias X509Certificate = X509.Certificate
