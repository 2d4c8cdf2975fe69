import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import SIPConfig
import SIPCore
import SIPTLS
import X509

/// Every socket SwiftSER serves: the UDP, TCP and TLS listeners of the
/// config, the connection table, and outbound connections. The seed's
/// `init_tls` / `tls_init(socket)` / `destroy_tls` map to `start()` and
/// `shutdown()`; the default and per-domain `SSL_CTX` live in the
/// `TLSDomainTable` this transport holds (and swaps on reload).
public final class SIPTransport: @unchecked Sendable { // mutable state (channels, TLS table, pending connects) is guarded by `lock`
    public let config: Config
    public let group: EventLoopGroup
    public let logger: Logger
    let connections = ConnectionTable()
    /// Refusals, drops and queued bytes (see `TransportCounterValues`).
    public let counters = TransportCounters()
    private let tlsBox: NIOLockedValueBox<TLSDomainTable?>
    private let delegateBox = NIOLockedValueBox<SIPTransportDelegate?>(nil)
    private let lock = NIOLock()
    private var channels: [Channel] = []
    /// UDP listeners as bound, their channels, and a socket to send on
    /// from any thread (see `sendDirect`).
    private var udpChannels: [(ListenSocket, Channel, UDPDirectSocket?)] = []
    /// The TCP and TLS listening sockets (closed by `stopAccepting`).
    private var streamServerChannels: [Channel] = []
    private var pendingConnects: [String: EventLoopFuture<SIPConnection>] = [:]
    private var dnsClient: DNSClient?
    /// The listen sockets as bound (a configured port 0 replaced by the real one).
    public private(set) var listeners: [ListenSocket] = []
    let limits: SIPLimits

    public init(config: Config, tls: TLSDomainTable?, group: EventLoopGroup, logger: Logger) {
        self.config = config
        self.group = group
        self.logger = logger
        self.tlsBox = NIOLockedValueBox(tls)
        let maxMessage = config.core.maxMessageSize
        self.limits = SIPLimits(maxHeaderBytes: min(maxMessage, 64 * 1024), maxBodyBytes: maxMessage, maxHeaderFields: 256)
    }

    public var delegate: SIPTransportDelegate? {
        get { delegateBox.withLockedValue { $0 } }
        set { delegateBox.withLockedValue { $0 = newValue } }
    }

    /// The TLS domains in use; replaced by `reloadTLS`.
    public var tlsTable: TLSDomainTable? { tlsBox.withLockedValue { $0 } }

    /// Swaps in new TLS domains: new connections use them, open ones keep theirs.
    public func reloadTLS(_ table: TLSDomainTable) {
        tlsBox.withLockedValue { $0 = table }
    }

    // MARK: Start and stop

    /// Binds every listen socket. Throws naming the socket that failed.
    public func start() throws {
        try DescriptorLimit.raise(toFit: descriptorsNeeded, logger: logger)
        for l in config.listens {
            do {
                let (channel, bound, fd) = try bind(l)
                let direct = fd.flatMap { UDPDirectSocket(duplicating: $0, counters: counters, logger: logger) }
                // A listener whose channel closes (at shutdown, or on an
                // error SwiftNIO closes it for) sends no more this way:
                // its socket is not kept open by the copy.
                if let direct { channel.closeFuture.whenComplete { _ in direct.close() } }
                lock.withLock {
                    channels.append(channel)
                    listeners.append(bound)
                    if l.proto == .udp { udpChannels.append((bound, channel, direct)) } else { streamServerChannels.append(channel) }
                }
                logger.info("listening on \(bound)\(bound.advertisedHost.map { " advertise \($0)" } ?? "")")
            } catch {
                throw ListenError(listen: l, reason: String(describing: error))
            }
        }
    }

    public struct ListenError: Error, CustomStringConvertible {
        public var listen: ListenSocket
        public var reason: String
        public var description: String { "cannot listen on \(listen): \(reason)" }
    }

    /// The channel, the listener as bound, and for UDP the socket's descriptor.
    private func bind(_ l: ListenSocket) throws -> (Channel, ListenSocket, CInt?) {
        let channel: Channel
        var udpDescriptor: CInt? = nil
        // Handlers see the listener as bound (port 0 replaced by the real port).
        let box = ListenerBox(l)
        switch l.proto {
        case .udp:
            // The socket is made here so its descriptor is known: the
            // first handler sends on it itself (see UDPSendHandler).
            let fd = try UDPSendHandler.makeSocket(host: l.host, port: Int(l.port))
            udpDescriptor = fd
            let counters = self.counters, logger = self.logger
            // One recvmmsg per wake-up takes up to `udpReadBatch` datagrams,
            // each into its own 64 KiB slot of one receive buffer (SwiftNIO
            // reuses it once the datagrams are handled). With single reads
            // SwiftNIO calls recvmsg until it fails with EAGAIN: a second,
            // empty system call on every wake-up that brings one datagram.
            channel = try DatagramBootstrap(group: group)
                .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: Self.udpReadBatch * 65_536))
                .channelOption(.datagramVectorReadMessageCount, value: Self.udpReadBatch)
                .channelOption(.maxMessagesPerRead, value: 1)
                .channelInitializer { [unowned self] ch in
                    ch.addSync([UDPSendHandler(fd: fd, counters: counters, logger: logger),
                                SIPDatagramHandler(transport: self, listener: box, limits: self.limits, fd: fd)])
                }
                .withBoundSocket(fd).wait()
        case .tcp, .tls:
            if l.proto == .tls && tlsTable == nil { throw SIPTransportError.tlsDisabled }
            channel = try ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 256)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
                .childChannelOption(.writeBufferWaterMark, value: writeWaterMark)
                .childChannelInitializer { [unowned self] ch in
                    self.initializeInbound(ch, listener: box.value)
                }
                .bind(host: l.host, port: Int(l.port)).wait()
        }
        var bound = l
        if let p = channel.localAddress?.port { bound.port = UInt16(p) }
        box.value = bound
        return (channel, bound, udpDescriptor)
    }

    /// Datagrams one read of a UDP listener takes at most (its receive
    /// buffer is this many times 64 KiB).
    static let udpReadBatch = 16

    func streamSettings(_ proto: TransportProtocol) -> SIPStreamHandler.Settings {
        let tls = proto == .tls
        let table = tlsTable
        return SIPStreamHandler.Settings(
            handshakeTimeout: tls ? .seconds(Int64(table?.handshakeTimeout ?? TimeInterval(config.tls.handshakeTimeout))) : nil,
            sendTimeout: .seconds(Int64(tls ? config.tls.sendTimeout : config.core.tcpSendTimeout)),
            maxQueuedBytes: connectionQueueLimit,
            maxTotalQueuedBytes: config.core.tcpWriteQueueMax,
            limits: limits,
            maxConnections: tls ? config.core.tlsMaxConnections : config.core.tcpMaxConnections,
            maxOutbound: config.core.tcpMaxOutboundConnections,
            maxConnectionsPerIP: config.core.tcpMaxConnectionsPerIP,
            maxHandshakes: config.tls.maxHandshakes,
            idleLifetime: .seconds(Int64(config.core.tcpConnectionLifetime)),
            messageReadTimeout: .seconds(Int64(config.core.tcpMessageReadTimeout)))
    }

    /// One connection's write-queue bound: `tcp_conn_wq_max`, but never
    /// below one message of `max_message_size` (one reply always fits).
    public var connectionQueueLimit: Int { max(config.core.tcpConnWriteQueueMax, config.core.maxMessageSize) }

    /// The channel stops being writable (reading stops, the send timeout
    /// runs) past half the queue bound or 64 KiB, whichever is less, and is
    /// writable again below half of that.
    var writeWaterMark: ChannelOptions.Types.WriteBufferWaterMark {
        let high = min(connectionQueueLimit / 2, 64 * 1024)
        return ChannelOptions.Types.WriteBufferWaterMark(low: high / 2, high: high)
    }

    private func initializeInbound(_ ch: Channel, listener l: ListenSocket) -> EventLoopFuture<Void> {
        let stream = SIPStreamHandler(transport: self, listener: l, settings: streamSettings(l.proto), outbound: false)
        guard l.proto == .tls, let table = tlsTable else {
            return ch.addSync([stream])
        }
        let sniffer = TLSRecordSniffer(outbound: true) { [weak stream] suite in stream?.cipherSuite = suite }
        let local = HostPort(host: l.host, port: l.port)
        let loop = ch.eventLoop
        // The closure holds the channel and the stream handler weakly. (It
        // held the channel strongly and the SNI handler through a captured
        // variable: a cycle that kept every accepted TLS connection's
        // channel, pipeline and buffers after it closed, about 60 KB each.)
        let sni = ByteToMessageHandler(SNIHandler { [weak stream, weak ch] result in
            // Both are in the pipeline while it runs; if not, the hello
            // must not pass on unencrypted: fail, and the SNI handler waits.
            guard let stream, let ch else { return loop.makeFailedFuture(ChannelError.ioOnClosedChannel) }
            var name: String? = nil
            if case .hostname(let h) = result { name = h }
            let domain = table.server(local: local, serverName: name)
            stream.serverDomain = domain
            stream.sniName = name
            do {
                let check = domain.depthCheck { [weak stream] depth in stream?.chainLongerThan = depth }
                let ssl = try NIOSSLServerHandler(context: domain.context, verificationCallback: check)
                // After the SNI handler: just before the stream handler.
                try ch.pipeline.syncOperations.addHandler(ssl, position: .before(stream))
                return loop.makeSucceededVoidFuture()
            } catch {
                return loop.makeFailedFuture(error)
            }
        })
        return ch.addSync([sniffer, sni, stream])
    }

    /// Closes the TCP and TLS listening sockets: no new connection is
    /// accepted; open connections and the UDP sockets stay (drain).
    public func stopAccepting() {
        let servers = lock.withLock { () -> [Channel] in
            defer { streamServerChannels = [] }
            return streamServerChannels
        }
        for c in servers { try? c.close().wait() }
    }

    /// Longest `shutdown()` waits for connections to close: TLS sends its
    /// close_notify and waits a little for the peer's.
    public static let closeWait: TimeAmount = .seconds(3)

    /// Closes every listener and connection. With `waitForClose`, waits
    /// (at most `closeWait`) until the connections are closed, so TLS
    /// connections end with close_notify before the event loops stop.
    public func shutdown(waitForClose: Bool = false) {
        let all = lock.withLock { channels }
        for c in all { try? c.close().wait() }
        for direct in lock.withLock({ udpChannels.compactMap(\.2) }) { direct.close() }
        let open = connections.all
        for c in open { c.close(reason: .shuttingDown) }
        if waitForClose, !open.isEmpty {
            let done = DispatchSemaphore(value: 0)
            EventLoopFuture.andAllComplete(open.map { $0.channel.closeFuture }, on: group.next()).whenComplete { _ in done.signal() }
            _ = done.wait(timeout: .now() + .nanoseconds(Int(Self.closeWait.nanoseconds)))
        }
        lock.withLock { dnsClient }?.close()
        delegate = nil
    }

    // MARK: Delivery

    func deliver(_ r: ReceivedMessage) {
        delegate?.transport(self, received: r)
    }

    func registerOutbound(_ c: SIPConnection) {}

    func connectionClosed(_ c: SIPConnection, reason: CloseReason) {
        delegate?.transport(self, closed: c, reason: reason)
    }

    /// A random token for To tags and branches.
    public func makeTag() -> String {
        String(UInt64.random(in: 0...UInt64.max), radix: 36)
    }

    public func connection(id: UInt64) -> SIPConnection? { connections.connection(id: id) }

    /// An open connection to a peer (inbound or outbound).
    public func findConnection(proto: TransportProtocol, ip: String, port: Int) -> SIPConnection? {
        connections.find(proto: proto, ip: ip, port: port, identityKey: nil)
    }

    /// RFC 5923: lets requests to `ip:port` reuse connection `c`.
    public func addAlias(_ c: SIPConnection, ip: String, port: Int) {
        connections.alias(c, proto: c.proto, ip: ip, port: port)
    }

    public func connectionCount(_ proto: TransportProtocol) -> Int { connections.count(proto) }

    /// The open TCP and TLS connections, oldest first (read-only; for `tls.list`).
    public var openConnections: [SIPConnection] {
        connections.all.filter(\.isOpen).sorted { $0.id < $1.id }
    }

    /// Inbound connections from one source address (TCP and TLS, handshakes included).
    public func connectionCount(address: String) -> Int { connections.count(address: address) }

    /// Inbound TLS connections still in the handshake.
    public var handshakesInProgress: Int { connections.count(.tls, pool: .handshake) }

    /// Descriptors the configured limits can hold open (`Config.descriptorsNeeded`).
    public var descriptorsNeeded: Int { config.descriptorsNeeded }

    /// The listener of a protocol and address family that messages are sent from.
    public func listener(for proto: TransportProtocol, ipv6: Bool) -> ListenSocket? {
        lock.withLock {
            listeners.first { $0.proto == proto && $0.isIPv6 == ipv6 } ?? listeners.first { $0.proto == proto }
        }
    }

    // MARK: Sending

    /// Sends a reply back where a request came from: over its connection, or
    /// for UDP to the datagram's source (RFC 3581: the source port).
    @discardableResult
    public func reply(_ bytes: [UInt8], to r: ReceivedMessage) -> EventLoopFuture<Void> {
        if let c = r.connection {
            if c.isOpen { return c.send(ByteBuffer(bytes: bytes)) }
            guard let d = Self.reconnectDestination(for: r) else {
                return group.next().makeFailedFuture(SIPTransportError.connectionClosed("no Via to answer by"))
            }
            return send(bytes, to: d)
        }
        return sendUDP(bytes, to: r.source, from: r.listener)
    }

    /// Where a response goes when the connection its request came on is
    /// gone (RFC 3261 §18.2.2): a new connection to the address the request
    /// came from (the Via's `received`) and the port of the Via's sent-by
    /// (the client's old ephemeral port listens no more); over TLS the
    /// certificate must name the sent-by host. Nil without a Via.
    static func reconnectDestination(for r: ReceivedMessage) -> Destination? {
        guard let via = try? r.message.topVia() else { return nil }
        let port = via.port ?? r.proto.defaultPort
        return Destination(proto: r.proto, host: r.sourceIP, port: port, tlsServerName: r.proto == .tls ? via.hostName : nil)
    }

    /// `reply(_:to:)` for a caller that does not need the outcome: no
    /// promise or future is made. False when the reply needs the full path
    /// (its connection is gone, or waits for a handshake); the caller then
    /// uses `reply(_:to:)`.
    /// The reply is written by `write` straight into the send buffer (room
    /// for at least `size` octets; `write` returns the octets written).
    public func replyUnobserved(size: Int, to r: ReceivedMessage, _ write: (UnsafeMutableRawBufferPointer) -> Int) -> Bool {
        if let c = r.connection {
            return c.isOpen && c.sendUnobserved(size: size, write)
        }
        if let socket = r.udpSocket, socket.send(size: size, to: r.source, write) { return true }
        // Another thread than the listener's loop: the listener's socket
        // for any thread, through a buffer of our own (no hand-over).
        if size <= 65_536, let direct = lock.withLock({ udpChannels.first { $0.0 == r.listener }?.2 }) {
            let datagram = [UInt8](unsafeUninitializedCapacity: size) { out, count in
                count = min(max(write(UnsafeMutableRawBufferPointer(out)), 0), size)
            }
            switch datagram.withUnsafeBytes({ direct.send($0, to: r.source) }) {
            case .sent, .failed: return true
            case .notApplicable: break
            }
        }
        guard let ch = udpChannel(from: r.listener, to: r.source) else { return false }
        var buffer = ch.allocator.buffer(capacity: size)
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: size, write)
        ch.writeAndFlush(AddressedEnvelope(remoteAddress: r.source, data: buffer), promise: nil)
        return true
    }

    /// Sends a message to a destination, reusing or opening a connection.
    /// `carrier`, when given, learns the connection a stream message is
    /// written to (before the write), so a caller can tell which of several
    /// connections to one address its message depends on.
    @discardableResult
    public func send(_ bytes: [UInt8], to d: Destination, carrier: (@Sendable (SIPConnection) -> Void)? = nil) -> EventLoopFuture<Void> {
        let loop = group.next()
        if d.proto == .tls && (tlsTable == nil || config.tls.disabled) {
            return loop.makeFailedFuture(SIPTransportError.tlsDisabled)
        }
        if d.proto != .udp, let id = d.connectionID, let c = connections.connection(id: id), c.isOpen {
            carrier?(c)
            return c.send(ByteBuffer(bytes: bytes))
        }
        if d.srvName != nil && d.address == nil {
            return candidates(d, on: loop).flatMap { addresses in
                self.send(bytes, to: d, trying: addresses[...], on: loop, carrier: carrier)
            }
        }
        return resolve(d, on: loop).flatMap { address in
            self.send(bytes, to: d, trying: [address][...], on: loop, carrier: carrier)
        }
    }

    /// Sends to the first address that takes the message: UDP to the first,
    /// a stream to the first that connects (RFC 3263 §4.3 fail-over).
    private func send(_ bytes: [UInt8], to d: Destination, trying addresses: ArraySlice<SocketAddress>, on loop: EventLoop,
                      carrier: (@Sendable (SIPConnection) -> Void)?) -> EventLoopFuture<Void> {
        guard let address = addresses.first else { return loop.makeFailedFuture(SIPTransportError.resolveFailed(d.host)) }
        if d.proto == .udp {
            let l = listener(for: .udp, ipv6: address.protocol == .inet6)
            return sendUDP(bytes, to: address, from: l)
        }
        return connection(to: d, address: address).flatMap { c in
            carrier?(c)
            return c.send(ByteBuffer(bytes: bytes))
        }.flatMapError { error in
            guard addresses.count > 1 else { return loop.makeFailedFuture(error) }
            self.logger.info("\(d.proto.rawValue) to \(address) failed (\(error)); trying the next SRV target")
            return self.send(bytes, to: d, trying: addresses.dropFirst(), on: loop, carrier: carrier)
        }
    }

    /// The DNS client, made on first use.
    public var dns: DNSClient {
        lock.withLock {
            if let c = dnsClient { return c }
            let c = DNSClient(settings: DNSSettings(config.core), group: group)
            dnsClient = c
            return c
        }
    }

    /// RFC 3263 §4.2: the SRV targets of `d.srvName` in RFC 2782 order,
    /// each resolved to its addresses; without SRV records, `d.host`:`d.port`.
    func candidates(_ d: Destination, on loop: EventLoop) -> EventLoopFuture<[SocketAddress]> {
        let dns = self.dns
        let fallback: @Sendable () -> EventLoopFuture<[SocketAddress]> = { self.addresses(of: d.host, port: Int(d.port), on: loop) }
        guard let srvName = d.srvName else { return fallback() }
        return dns.lookup(srvName, .srv).flatMap { answer -> EventLoopFuture<[SocketAddress]> in
            // A single "." target: the service is decidedly not available (RFC 2782).
            let records = DNSMessage.order(answer.srv.filter { !$0.target.isEmpty })
            if answer.srv.count == 1 && answer.srv[0].target.isEmpty {
                return loop.makeFailedFuture(SIPTransportError.resolveFailed("\(srvName) (service not offered)"))
            }
            guard !records.isEmpty else { return fallback() }
            let lookups = records.map { r in
                self.addresses(of: r.target, port: Int(r.port), on: loop).recover { _ in [] }
            }
            return EventLoopFuture.whenAllSucceed(lookups, on: loop).flatMapThrowing { lists in
                let all = lists.flatMap { $0 }
                guard !all.isEmpty else { throw SIPTransportError.resolveFailed(srvName) }
                return all
            }
        }.flatMapError { error in
            if case SIPTransportError.resolveFailed = error { return loop.makeFailedFuture(error) }
            // Too many look-ups in progress: no other way round it (the system resolver) either.
            if case DNSError.overloaded = error { return loop.makeFailedFuture(SIPTransportError.resolveFailed("\(srvName) (dns_max_pending)")) }
            return fallback()
        }
    }

    /// A and AAAA addresses of a name: from `dns_server` when one is
    /// configured (falling back to the system resolver), else from the
    /// system resolver (which also reads /etc/hosts).
    private func addresses(of host: String, port: Int, on loop: EventLoop) -> EventLoopFuture<[SocketAddress]> {
        if let a = try? SocketAddress(ipAddress: host, port: port) { return loop.makeSucceededFuture([a]) }
        guard config.core.dnsServer != nil else { return systemResolve(host, port: port, on: loop).map { [$0] } }
        return dns.addresses(of: host).flatMapThrowing { ips in
            let list = ips.compactMap { try? SocketAddress(ipAddress: $0, port: port) }
            guard !list.isEmpty else { throw SIPTransportError.resolveFailed(host) }
            return list
        }.flatMapError { error in
            if case DNSError.overloaded = error { return loop.makeFailedFuture(SIPTransportError.resolveFailed("\(host) (dns_max_pending)")) }
            return self.systemResolve(host, port: port, on: loop).map { [$0] }
        }
    }

    /// The UDP socket of listener `l`, else the first of the address's family.
    private func udpChannel(from l: ListenSocket?, to address: SocketAddress) -> Channel? {
        lock.withLock {
            if let l, let c = udpChannels.first(where: { $0.0 == l })?.1 { return c }
            return udpChannels.first { $0.0.isIPv6 == (address.protocol == .inet6) }?.1
        }
    }

    private func sendUDP(_ bytes: [UInt8], to address: SocketAddress, from l: ListenSocket?) -> EventLoopFuture<Void> {
        guard let ch = udpChannel(from: l, to: address) else { return group.next().makeFailedFuture(SIPTransportError.noListener(.udp, "\(address)")) }
        return ch.writeAndFlush(AddressedEnvelope(remoteAddress: address, data: ByteBuffer(bytes: bytes)))
    }

    /// What `sendDirect` did.
    public enum DirectSend: Sendable {
        case sent
        /// The datagram could not be sent (counted and logged; the listener stays open).
        case failed(UDPSendError)
        /// This path does not apply: send with `send(_:to:)`.
        case notApplicable
    }

    /// A datagram to an IP address, written with one `sendto` on the UDP
    /// listener's socket from the calling thread: no promise, future,
    /// pipeline or hand-over to the listener's loop (a forwarded request or
    /// response costs about as much to send as a stateless reply).
    /// `.notApplicable` when that does not hold — a stream, a name to
    /// resolve, a transport shutting down — and the caller then uses
    /// `send(_:to:)`.
    public func sendDirect(_ bytes: [UInt8], to d: Destination) -> DirectSend {
        guard d.proto == .udp, d.srvName == nil else { return .notApplicable }
        let address: SocketAddress
        if let a = d.address {
            address = a
        } else {
            var host = Substring(d.host)
            if host.hasPrefix("["), host.hasSuffix("]") { host = host.dropFirst().dropLast() }
            // Only what can be an address literal is tried (a name would
            // cost a thrown error here and again on the full path).
            guard let first = host.utf8.first, (0x30...0x39).contains(first) || host.utf8.contains(0x3A),
                  let a = try? SocketAddress(ipAddress: String(host), port: Int(d.port)) else { return .notApplicable }
            address = a
        }
        let ipv6 = address.protocol == .inet6
        let socket: UDPDirectSocket? = lock.withLock {
            (udpChannels.first { $0.0.isIPv6 == ipv6 } ?? udpChannels.first)?.2
        }
        guard let socket else { return .notApplicable }
        return bytes.withUnsafeBytes { socket.send($0, to: address) }
    }

    func resolve(_ d: Destination, on loop: EventLoop) -> EventLoopFuture<SocketAddress> {
        if let a = d.address { return loop.makeSucceededFuture(a) }
        var host = d.host
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return addresses(of: host, port: Int(d.port), on: loop).map { $0[0] }
    }

    /// getaddrinfo on the thread pool, counted and bounded by the DNS client.
    private func systemResolve(_ host: String, port: Int, on loop: EventLoop) -> EventLoopFuture<SocketAddress> {
        dns.systemAddress(of: host, port: port, on: loop).flatMapErrorThrowing { error in
            if case DNSError.overloaded = error { throw SIPTransportError.resolveFailed("\(host) (dns_max_pending)") }
            throw SIPTransportError.resolveFailed(host)
        }
    }

    /// An open connection to `d` whose TLS identity fits, or a new one.
    func connection(to d: Destination, address: SocketAddress) -> EventLoopFuture<SIPConnection> {
        let loop = group.next()
        let ip = address.ipAddress ?? d.host
        let port = address.port ?? Int(d.port)
        var domain: TLSDomainContext? = nil
        var targetName: String? = nil
        var identity = ""
        if d.proto == .tls {
            guard let table = tlsTable else { return loop.makeFailedFuture(SIPTransportError.tlsDisabled) }
            let client = table.client(remote: HostPort(host: ip, port: UInt16(clamping: port)))
            domain = client
            let name = d.tlsServerName ?? client.domain.serverName ?? d.host
            // A name that cannot be a TLS server name (RFC 6066 §3: a DNS
            // host name, at most 253 octets) never reaches the TLS library.
            guard PeerIdentity.isIPLiteral(name) || Self.isValidServerName(name) else {
                return loop.makeFailedFuture(SIPTransportError.invalidServerName(name))
            }
            targetName = name
            identity = "\(client.domain.name)|\(name)"
        }
        // RFC 5923 §5 / RFC 5922: a connection the peer opened carries a
        // request over TLS only when the peer proved, with a verified
        // certificate, to be the name the request is for, or when the
        // target is the very IP address and port the peer connected from
        // (a phone's contact: whoever holds that address is the peer; an
        // alias never counts); else a new connection is made and the
        // server's certificate checked.
        let inboundFits: ((SIPConnection) -> Bool)? = d.proto == .tls ? { [targetName, domain] c in
            if let t = targetName, PeerIdentity.isIPLiteral(t), t == ip, c.remoteIP == ip || c.remote.ipAddress == ip, c.remote.port == port { return true }
            return Self.inboundIdentityFits(c.tls, name: targetName, allowWildcards: domain?.domain.allowWildcardCertificates ?? false)
        } : nil
        if let c = connections.find(proto: d.proto, ip: ip, port: port, identityKey: d.proto == .tls ? identity : nil, acceptsInbound: inboundFits) {
            return loop.makeSucceededFuture(c)
        }
        let key = ConnectionTable.peerKey(d.proto, ip, port) + "|" + identity
        let ipv6 = address.protocol == .inet6
        // The listener whose address the connection is said to belong to.
        guard var from = listener(for: d.proto, ipv6: ipv6) ?? listener(for: d.proto == .tls ? .tcp : .tls, ipv6: ipv6) ?? listener(for: .udp, ipv6: ipv6) else {
            return loop.makeFailedFuture(SIPTransportError.noListener(d.proto, "\(address)"))
        }
        from.proto = d.proto
        // Decide under the lock, connect after it: a connect can fail at
        // once on this thread, and its callbacks take the lock again.
        let (future, promise) = lock.withLock { () -> (EventLoopFuture<SIPConnection>, EventLoopPromise<SIPConnection>?) in
            if let pending = pendingConnects[key] { return (pending, nil) }
            let p = loop.makePromise(of: SIPConnection.self)
            pendingConnects[key] = p.futureResult
            return (p.futureResult, p)
        }
        if let promise {
            promise.futureResult.whenComplete { _ in self.lock.withLock { self.pendingConnects[key] = nil } }
            openConnection(d.proto, address: address, from: from, domain: domain, targetName: targetName, identity: identity, loop: loop)
                .cascade(to: promise)
        }
        return future
    }

    /// Whether an inbound TLS connection's peer is `name`: its certificate
    /// verified and naming it (RFC 5922 §7.2).
    public static func inboundIdentityFits(_ tls: TLSSessionInfo?, name: String?, allowWildcards: Bool) -> Bool {
        guard let tls, tls.peerVerified, let der = tls.peerCertificateDER, let name,
              let cert = try? Certificate(derEncoded: der) else { return false }
        return PeerIdentity.matches(cert, domain: name, allowWildcards: allowWildcards)
    }

    /// RFC 1035/1123 host name: 1-253 octets, labels of 1-63 letters,
    /// digits and hyphens, not starting or ending with a hyphen.
    public static func isValidServerName(_ name: String) -> Bool {
        var n = Substring(name)
        if n.hasSuffix(".") { n = n.dropLast() }
        guard !n.isEmpty, n.utf8.count <= 253 else { return false }
        for label in n.split(separator: ".", omittingEmptySubsequences: false) {
            let u = label.utf8
            guard (1...63).contains(u.count), u.first != UInt8(ascii: "-"), u.last != UInt8(ascii: "-") else { return false }
            for c in u {
                switch c {
                case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"): continue
                default: return false
                }
            }
        }
        return true
    }

    private func openConnection(_ proto: TransportProtocol, address: SocketAddress, from: ListenSocket, domain: TLSDomainContext?, targetName: String?, identity: String, loop: EventLoop) -> EventLoopFuture<SIPConnection> {
        let settings = streamSettings(proto)
        let registered = loop.makePromise(of: SIPConnection.self)
        let bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(.seconds(Int64(config.core.tcpConnectTimeout)))
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelOption(.writeBufferWaterMark, value: writeWaterMark)
            .channelInitializer { [unowned self] ch in
                let stream = SIPStreamHandler(transport: self, listener: from, settings: settings, outbound: true, identityKey: identity,
                                              clientDomain: domain, targetName: targetName, registered: registered)
                guard proto == .tls, let domain else { return ch.addSync([stream]) }
                let sni = targetName.flatMap { PeerIdentity.isIPLiteral($0) ? nil : $0 }
                do {
                    let check = domain.depthCheck { [weak stream] depth in stream?.chainLongerThan = depth }
                    let ssl = try NIOSSLClientHandler(context: domain.context, serverHostname: sni, verificationCallback: check)
                    let sniffer = TLSRecordSniffer(outbound: false) { [weak stream] suite in stream?.cipherSuite = suite }
                    return ch.addSync([sniffer, ssl, stream])
                } catch {
                    return ch.eventLoop.makeFailedFuture(error)
                }
            }
        let connect = bootstrap.connect(to: address)
        connect.whenFailure { registered.fail($0) }
        return connect.flatMap { _ in
            registered.futureResult
        }.flatMapErrorThrowing { error in
            self.logger.warning("cannot connect to \(proto.rawValue):\(address.ipAddress ?? "?"):\(address.port ?? 0): \(error)")
            throw error
        }
    }
}

extension Channel {
    /// Adds handlers from a channel initializer (which runs on the channel's loop).
    func addSync(_ handlers: [ChannelHandler]) -> EventLoopFuture<Void> {
        do {
            try pipeline.syncOperations.addHandlers(handlers)
            return eventLoop.makeSucceededVoidFuture()
        } catch {
            return eventLoop.makeFailedFuture(error)
        }
    }
}

/// The listen socket as bound, shared with the handlers created for it.
final class ListenerBox: @unchecked Sendable { // `_value` is guarded by `lock`
    private let lock = NIOLock()
    private var _value: ListenSocket
    init(_ l: ListenSocket) { _value = l }
    var value: ListenSocket {
        get { lock.withLock { _value } }
        set { lock.withLock { _value = newValue } }
    }
}
