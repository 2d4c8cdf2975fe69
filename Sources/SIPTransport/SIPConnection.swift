import NIOConcurrencyHelpers
import NIOCore
import SIPConfig

/// One TCP or TLS connection, inbound or outbound: the seed's
/// `struct tcp_connection` with its `extra_data` (the per-connection TLS
/// state, here `tls`).
public final class SIPConnection: @unchecked Sendable, CustomStringConvertible {
    public let id: UInt64
    public let proto: TransportProtocol
    public let remote: SocketAddress
    /// `remote`'s IP as text, made once.
    public let remoteIP: String
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

    struct State {
        var tls: TLSSessionInfo?
        /// Outbound TLS: messages waiting for the handshake and name check.
        var pending: [(ByteBuffer, EventLoopPromise<Void>?)] = []
        var ready = false
        var closeReason: String?
        /// RFC 5923: the peer's authenticated sent-by may reuse this connection.
        var aliases: [String] = []
    }

    init(id: UInt64, proto: TransportProtocol, channel: Channel, listener: ListenSocket, outbound: Bool, identityKey: String, ready: Bool) {
        self.id = id
        self.proto = proto
        self.channel = channel
        self.remote = channel.remoteAddress ?? (try! SocketAddress(ipAddress: "0.0.0.0", port: 0))
        self.remoteIP = remote.ipText ?? ""
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

    var closeReason: String? {
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
        let queued = readyAtStart ? false : state.withLockedValue { s -> Bool in
            if s.ready { return false }
            s.pending.append((buffer, promise))
            return true
        }
        if !queued {
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
            defer { s.pending = [] }
            return s.pending
        }
        for (b, p) in pending { channel.write(b, promise: p) }
        channel.flush()
    }

    func failPending(_ error: Error) {
        let pending = state.withLockedValue { s -> [(ByteBuffer, EventLoopPromise<Void>?)] in
            defer { s.pending = [] }
            return s.pending
        }
        for (_, p) in pending { p?.fail(error) }
    }

    public func close(reason: String) {
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

/// All open connections, by id and by peer, with per-protocol counts
/// (`tcp_max_connections`, `tls_max_connections`).
final class ConnectionTable: @unchecked Sendable {
    private let lock = NIOLock()
    private var byID: [UInt64: SIPConnection] = [:]
    /// proto|ip|port → ids (inbound and outbound).
    private var byPeer: [String: [UInt64]] = [:]
    private var counts: [TransportProtocol: Int] = [:]
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

    /// Adds a connection unless the protocol's limit is reached.
    func add(_ c: SIPConnection, limit: Int) -> Bool {
        lock.withLock {
            if counts[c.proto, default: 0] >= limit { return false }
            counts[c.proto, default: 0] += 1
            byID[c.id] = c
            byPeer[ConnectionTable.peerKey(c.proto, c.remoteIP, c.remote.port ?? 0), default: []].append(c.id)
            return true
        }
    }

    func remove(_ c: SIPConnection) {
        lock.withLock {
            guard byID.removeValue(forKey: c.id) != nil else { return }
            counts[c.proto, default: 1] -= 1
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

    /// An open connection to this peer whose TLS identity matches.
    func find(proto: TransportProtocol, ip: String, port: Int, identityKey: String?) -> SIPConnection? {
        lock.withLock {
            for id in byPeer[ConnectionTable.peerKey(proto, ip, port)] ?? [] {
                guard let c = byID[id], c.isOpen else { continue }
                if let identityKey, c.outbound, c.identityKey != identityKey { continue }
                return c
            }
            return nil
        }
    }

    func count(_ proto: TransportProtocol) -> Int { lock.withLock { counts[proto, default: 0] } }
    var all: [SIPConnection] { lock.withLock { Array(byID.values) } }
}

extension SIPConnection {
    /// Table keys under which this connection is also found (RFC 5923 aliases).
    var aliasKeys: [String] {
        get { state.withLockedValue { $0.aliases } }
        set { state.withLockedValue { $0.aliases = newValue } }
    }
}
