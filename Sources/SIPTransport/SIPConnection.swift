import NIOConcurrencyHelpers
import NIOCore
import SIPConfig

/// One TCP or TLS connection, inbound or outbound: the seed's
/// `struct tcp_connection` with its `extra_data` (the per-connection TLS
/// state, here `tls`).
public final class SIPConnection: @unchecked Sendable, CustomStringConvertible { // mutable fields are set on the channel's event loop or under the connection's lock
    public let id: UInt64
    public let proto: TransportProtocol
    public let remote: SocketAddress
    /// `remote`'s IP as text, made once.
    public let remoteIP: String
    /// What `tcp_max_connections_per_ip` counts this connection under.
    let limitKey: String
    public let local: SocketAddress?
    /// The listener a message from this connection is said to arrive on.
    public let listener: ListenSocket
    public let outbound: Bool
    /// When the connection was accepted or opened (`tls.list`'s age).
    public let openedAt = ContinuousClock.now
    let channel: Channel
    /// For outbound reuse: the TLS domain and SNI name it was opened with.
    let identityKey: String
    fileprivate let state = NIOLockedValueBox(State())
    /// Usable from the start (all but outbound TLS): `send` needs no lock.
    private let readyAtStart: Bool
    /// The most octets that may wait for the handshake (`tcp_conn_wq_max`).
    private let pendingLimit: Int

    struct State {
        var tls: TLSSessionInfo?
        /// Outbound TLS: messages waiting for the handshake and name check.
        var pending: [(ByteBuffer, EventLoopPromise<Void>?)] = []
        var pendingBytes = 0
        var ready = false
        /// Why pending messages were failed (outbound TLS refused for its
        /// chain, name or CRL, or the connection closed): later sends fail at
        /// once instead of waiting for the close, which may wait for the peer's close_notify.
        var refused: Error?
        var closeReason: CloseReason?
        /// RFC 5923: the peer's authenticated sent-by may reuse this connection.
        var aliases: [String] = []
    }

    init(id: UInt64, proto: TransportProtocol, channel: Channel, listener: ListenSocket, outbound: Bool, identityKey: String, ready: Bool,
         pendingLimit: Int = 32 * 1024) {
        self.pendingLimit = pendingLimit
        self.id = id
        self.proto = proto
        self.channel = channel
        self.remote = channel.remoteAddress ?? (try! SocketAddress(ipAddress: "0.0.0.0", port: 0))
        self.remoteIP = remote.ipText ?? ""
        self.limitKey = remote.limitKey
        self.local = channel.localAddress
        self.listener = listener
        self.outbound = outbound
        self.identityKey = identityKey
        self.readyAtStart = ready
        self.state.withLockedValue { $0.ready = ready }
    }

    public var tls: TLSSessionInfo? {
        get { state.withLockedValue { $0.tls } }
        set { state.withLockedValue { $0.tls = newValue } }
    }

    public var isOpen: Bool { channel.isActive }

    var closeReason: CloseReason? {
        get { state.withLockedValue { $0.closeReason } }
        set { state.withLockedValue { if $0.closeReason == nil { $0.closeReason = newValue } } }
    }

    public var description: String {
        "\(proto.rawValue) connection #\(id) \(outbound ? "to" : "from") \(remote.ipAddress ?? "?"):\(remote.port ?? 0)"
    }

    /// True while the stream handler delivers the messages of one read
    /// (touched on the event loop only). Replies written meanwhile are
    /// flushed once when the read ends, so pipelined requests cost one
    /// write (and one TLS record) instead of one each.
    var inReadBatch = false
    /// A write of the current read batch waits for its flush.
    var flushPending = false
    /// Replies without a promise made during the current read, gathered
    /// into one buffer: one pass through the pipeline, one TLS record and
    /// one write for all of them (event loop only).
    private var batch: ByteBuffer?
    static let batchLimit = 16 * 1024

    /// Hands the gathered replies to the pipeline (before a flush, or
    /// before a write that must come after them).
    func writeBatch() {
        if let b = batch {
            batch = nil
            channel.write(b, promise: nil)
        }
    }

    /// Sends octets; before an outbound TLS connection is verified they wait.
    public func send(_ buffer: ByteBuffer) -> EventLoopFuture<Void> {
        let promise = channel.eventLoop.makePromise(of: Void.self)
        // Only an outbound TLS connection ever waits; the others skip the lock.
        var refused: Error? = nil
        let queued = readyAtStart ? false : state.withLockedValue { s -> Bool? in
            if s.ready { return false }
            if let e = s.refused { refused = e; return nil }
            // Bounded like the write queue: a handshake that never ends
            // cannot make the messages for it pile up.
            if s.pendingBytes + buffer.readableBytes > pendingLimit { return nil }
            s.pendingBytes += buffer.readableBytes
            s.pending.append((buffer, promise))
            return true
        }
        if queued == nil {
            promise.fail(refused ?? SIPTransportError.sendTimeout)
        } else if queued == false {
            if channel.eventLoop.inEventLoop && inReadBatch {
                writeBatch()
                channel.write(buffer, promise: promise)
                flushPending = true
            } else {
                channel.writeAndFlush(buffer, promise: promise)
            }
        }
        return promise.futureResult
    }

    /// Sends without a promise, for a caller that does not need to know how
    /// the write went (no future is made). False when the message would
    /// have to wait for the handshake (outbound TLS): use `send(_:)`.
    /// The message is written by `write` straight into the send buffer,
    /// which has room for at least `size` octets; `write` returns the
    /// octets it wrote (see `SIPResponseBuilder.withResponse`).
    public func sendUnobserved(size: Int, _ write: (UnsafeMutableRawBufferPointer) -> Int) -> Bool {
        guard readyAtStart else { return false }
        if channel.eventLoop.inEventLoop && inReadBatch {
            // Replies made while a read is handled go into one buffer,
            // written and flushed when the read is done.
            if batch == nil { batch = channel.allocator.buffer(capacity: size) }
            batch!.writeWithUnsafeMutableBytes(minimumWritableBytes: size, write)
            flushPending = true
            // Many pipelined requests: hand the replies on before the
            // batch grows large, so the write-queue bounds see them.
            if batch!.readableBytes >= SIPConnection.batchLimit { writeBatch() }
        } else {
            var buffer = channel.allocator.buffer(capacity: size)
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: size, write)
            channel.writeAndFlush(buffer, promise: nil)
        }
        return true
    }

    /// Marks an outbound connection usable and flushes what waited.
    func markReady() {
        let pending = state.withLockedValue { s -> [(ByteBuffer, EventLoopPromise<Void>?)] in
            s.ready = true
            s.pendingBytes = 0
            defer { s.pending = [] }
            return s.pending
        }
        for (b, p) in pending { channel.write(b, promise: p) }
        channel.flush()
    }

    func failPending(_ error: Error) {
        let pending = state.withLockedValue { s -> [(ByteBuffer, EventLoopPromise<Void>?)] in
            s.refused = error
            s.pendingBytes = 0
            defer { s.pending = [] }
            return s.pending
        }
        for (_, p) in pending { p?.fail(error) }
    }

    public func close(reason: CloseReason) {
        closeReason = reason
        // Replies written earlier in the current read still go out.
        if channel.eventLoop.inEventLoop && flushPending {
            flushPending = false
            writeBatch()
            channel.flush()
        }
        channel.close(promise: nil)
    }
}

/// All open connections, by id and by peer, in pools: inbound per protocol
/// (`tcp_max_connections`, `tls_max_connections`), outbound
/// (`tcp_max_outbound_connections`, TCP and TLS together, counted apart so
/// a flood of inbound connections cannot stop the proxy from reaching its
/// next hops), and inbound TLS connections still in the handshake
/// (`tls_max_handshakes`). Inbound connections are also
/// counted per source address (`tcp_max_connections_per_ip`).
final class ConnectionTable: @unchecked Sendable {  // every field is guarded by `lock`
    enum Pool { case inbound, outbound, handshake }

    struct Limits {
        var connections: Int
        var perAddress: Int
        var handshakes: Int
    }

    enum Admission {
        case added
        /// Added; the oldest connection still in the handshake must be closed.
        case evicted(SIPConnection)
        case poolFull
        case addressFull
    }

    private struct PoolKey: Hashable {
        var proto: TransportProtocol
        var pool: Pool
    }

    private let lock = NIOLock()
    private var byID: [UInt64: SIPConnection] = [:]
    /// proto|ip|port → ids (inbound and outbound).
    private var byPeer: [String: [UInt64]] = [:]
    private var pools: [UInt64: Pool] = [:]
    private var counts: [PoolKey: Int] = [:]
    /// Inbound connections (handshake included) per source address.
    private var perAddress: [String: Int] = [:]
    /// Ids in the handshake, oldest first (at most `tls_max_handshakes`).
    private var handshakes: [UInt64] = []
    private var nextID: UInt64 = 1

    static func peerKey(_ proto: TransportProtocol, _ ip: String, _ port: Int) -> String {
        "\(proto.rawValue)|\(ip.lowercased())|\(port)"
    }

    func makeID() -> UInt64 {
        lock.withLock {
            defer { nextID += 1 }
            return nextID
        }
    }

    /// Adds a connection to a pool unless that pool or its source
    /// address is full. A full handshake pool makes room by giving up its
    /// oldest connection (which the caller closes).
    func add(_ c: SIPConnection, pool: Pool, limits: Limits) -> Admission {
        lock.withLock {
            let key = PoolKey(proto: c.proto, pool: pool)
            if pool != .outbound && perAddress[c.limitKey, default: 0] >= limits.perAddress { return .addressFull }
            var evicted: SIPConnection? = nil
            switch pool {
            case .handshake:
                if counts[key, default: 0] >= limits.handshakes {
                    guard let oldest = handshakes.first, let old = byID[oldest] else { return .poolFull }
                    // The old one leaves the pool now; its close removes the rest.
                    handshakes.removeFirst()
                    leavePool(old)
                    evicted = old
                }
                handshakes.append(c.id)
            case .inbound:
                if counts[key, default: 0] >= limits.connections { return .poolFull }
            case .outbound:
                // One pool for TCP and TLS together.
                let open = counts[PoolKey(proto: .tcp, pool: .outbound), default: 0] + counts[PoolKey(proto: .tls, pool: .outbound), default: 0]
                if open >= limits.connections { return .poolFull }
            }
            counts[key, default: 0] += 1
            pools[c.id] = pool
            if pool != .outbound { perAddress[c.limitKey, default: 0] += 1 }
            byID[c.id] = c
            byPeer[ConnectionTable.peerKey(c.proto, c.remoteIP, c.remote.port ?? 0), default: []].append(c.id)
            return evicted.map { .evicted($0) } ?? .added
        }
    }

    /// Moves a connection whose handshake completed into the inbound pool;
    /// false when that pool is full (the caller closes it).
    func promote(_ c: SIPConnection, limit: Int) -> Bool {
        lock.withLock {
            guard pools[c.id] == .handshake else { return pools[c.id] != nil }
            let key = PoolKey(proto: c.proto, pool: .inbound)
            if counts[key, default: 0] >= limit { return false }
            counts[PoolKey(proto: c.proto, pool: .handshake), default: 1] -= 1
            handshakes.removeAll { $0 == c.id }
            counts[key, default: 0] += 1
            pools[c.id] = .inbound
            return true
        }
    }

    /// Takes a connection out of its pool's counts (under the lock).
    private func leavePool(_ c: SIPConnection) {
        guard let pool = pools.removeValue(forKey: c.id) else { return }
        counts[PoolKey(proto: c.proto, pool: pool), default: 1] -= 1
        if pool != .outbound {
            let n = perAddress[c.limitKey, default: 1] - 1
            perAddress[c.limitKey] = n > 0 ? n : nil
        }
        if pool == .handshake { handshakes.removeAll { $0 == c.id } }
    }

    func remove(_ c: SIPConnection) {
        lock.withLock {
            leavePool(c)
            guard byID.removeValue(forKey: c.id) != nil else { return }
            let key = ConnectionTable.peerKey(c.proto, c.remoteIP, c.remote.port ?? 0)
            byPeer[key]?.removeAll { $0 == c.id }
            if byPeer[key]?.isEmpty == true { byPeer[key] = nil }
            for a in c.aliasKeys { byPeer[a]?.removeAll { $0 == c.id } }
        }
    }

    /// Adds a peer alias (RFC 5923) for a connection.
    func alias(_ c: SIPConnection, proto: TransportProtocol, ip: String, port: Int) {
        lock.withLock {
            let key = ConnectionTable.peerKey(proto, ip, port)
            if byPeer[key]?.contains(c.id) != true { byPeer[key, default: []].append(c.id) }
            c.aliasKeys.append(key)
        }
    }

    func connection(id: UInt64) -> SIPConnection? { lock.withLock { byID[id] } }

    /// An open connection to this peer whose TLS identity matches: an
    /// outbound one made for the same identity, or an inbound one that
    /// `acceptsInbound` takes (all of them when it is nil).
    func find(proto: TransportProtocol, ip: String, port: Int, identityKey: String?,
              acceptsInbound: ((SIPConnection) -> Bool)? = nil) -> SIPConnection? {
        let candidates: [SIPConnection] = lock.withLock {
            (byPeer[ConnectionTable.peerKey(proto, ip, port)] ?? []).compactMap { id in
                guard let c = byID[id], c.isOpen else { return nil }
                if let identityKey, c.outbound, c.identityKey != identityKey { return nil }
                return c
            }
        }
        // The inbound check may parse a certificate: outside the lock.
        // A connection being closed (refused, or over a limit) takes nothing new.
        return candidates.first { c in c.closeReason == nil && (c.outbound || acceptsInbound.map { $0(c) } ?? true) }
    }

    /// Open connections of a protocol (every pool).
    func count(_ proto: TransportProtocol) -> Int {
        lock.withLock { counts.filter { $0.key.proto == proto }.values.reduce(0, +) }
    }

    /// Connections of one pool.
    func count(_ proto: TransportProtocol, pool: Pool) -> Int {
        lock.withLock { counts[PoolKey(proto: proto, pool: pool), default: 0] }
    }

    /// Inbound connections from one source address (IPv6: its /64).
    func count(address: String) -> Int {
        let key = (try? SocketAddress(ipAddress: address, port: 0))?.limitKey ?? address
        return lock.withLock { perAddress[key, default: 0] }
    }

    var all: [SIPConnection] { lock.withLock { Array(byID.values) } }
}

extension SIPConnection {
    /// Table keys under which this connection is also found (RFC 5923 aliases).
    var aliasKeys: [String] {
        get { state.withLockedValue { $0.aliases } }
        set { state.withLockedValue { $0.aliases = newValue } }
    }
}
