import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SIPConfig

/// Errors of a DNS look-up.
public enum DNSError: Error, Sendable, CustomStringConvertible {
    case timeout(String)
    case malformed(String)

    public var description: String {
        switch self {
        case .timeout(let n): return "no answer from the DNS server for \(n)"
        case .malformed(let n): return "malformed DNS answer for \(n)"
        }
    }
}

/// A small stub resolver for RFC 3263: asks one DNS server over UDP (two
/// tries, one second each) and caches answers for their TTL (at most an
/// hour; "no such name" and no answer at all for 30 s). The server is `dns_server` or the first
/// `nameserver` of /etc/resolv.conf.
public final class DNSClient: @unchecked Sendable { // mutable state (cache, pending queries) is guarded by `lock`
    public let server: SocketAddress
    private let group: EventLoopGroup
    private let lock = NIOLock()
    private var channel: EventLoopFuture<Channel>?
    private var pending: [UInt16: (promise: EventLoopPromise<DNSAnswer>, name: String)] = [:]
    private var cache: [String: (answer: DNSAnswer, expires: NIODeadline)] = [:]
    private var nextID = UInt16.random(in: 0...UInt16.max)

    public init(server: SocketAddress, group: EventLoopGroup) {
        self.server = server
        self.group = group
    }

    /// The server named by `dns_server`, else by /etc/resolv.conf, else 127.0.0.1:53.
    public static func serverAddress(configured: String?) -> SocketAddress {
        if let configured, let s = DNSServerAddress(configured), let a = try? SocketAddress(ipAddress: s.host, port: s.port) { return a }
        if let text = try? String(contentsOfFile: "/etc/resolv.conf", encoding: .utf8) {
            for line in text.split(separator: "\n") {
                let f = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
                if f.count >= 2, f[0] == "nameserver", let a = try? SocketAddress(ipAddress: String(f[1]), port: 53) { return a }
            }
        }
        return try! SocketAddress(ipAddress: "127.0.0.1", port: 53)
    }

    /// Looks `name` up (from the cache when fresh).
    public func lookup(_ name: String, _ type: DNSRecordType) -> EventLoopFuture<DNSAnswer> {
        let loop = group.next()
        let key = "\(type.rawValue)|\(name.lowercased())"
        if let hit = lock.withLock({ cache[key] }), hit.expires > .now() { return loop.makeSucceededFuture(hit.answer) }
        return ask(name, type, on: loop, tries: 2).map { answer in
            let seconds = answer.responseCode == 3 || (answer.srv.isEmpty && answer.addresses.isEmpty && answer.naptr.isEmpty) ? 30 : min(Int64(answer.ttl), 3600)
            self.lock.withLock { self.cache[key] = (answer, .now() + .seconds(seconds)) }
            return answer
        }.flatMapError { error in
            // A server that does not answer is not asked again for 30 s:
            // the look-up then counts as empty (SERVFAIL).
            guard case DNSError.timeout = error else { return loop.makeFailedFuture(error) }
            let empty = DNSAnswer(id: 0, responseCode: 2)
            self.lock.withLock { self.cache[key] = (empty, .now() + .seconds(30)) }
            return loop.makeSucceededFuture(empty)
        }
    }

    /// The cached answer for `name`, when one is still fresh.
    public func cached(_ name: String, _ type: DNSRecordType) -> DNSAnswer? {
        let key = "\(type.rawValue)|\(name.lowercased())"
        return lock.withLock {
            guard let hit = cache[key], hit.expires > .now() else { return nil }
            return hit.answer
        }
    }

    /// Addresses of `name`: A records, else AAAA.
    public func addresses(of name: String) -> EventLoopFuture<[String]> {
        lookup(name, .a).flatMap { a in
            if !a.addresses.isEmpty { return self.group.next().makeSucceededFuture(a.addresses) }
            return self.lookup(name, .aaaa).map(\.addresses)
        }
    }

    private func ask(_ name: String, _ type: DNSRecordType, on loop: EventLoop, tries: Int) -> EventLoopFuture<DNSAnswer> {
        let promise = loop.makePromise(of: DNSAnswer.self)
        let id = lock.withLock { () -> UInt16 in
            nextID &+= 1
            pending[nextID] = (promise, name)
            return nextID
        }
        let query = DNSMessage.query(id: id, name: name, type: type)
        socket().whenComplete { result in
            switch result {
            case .success(let ch):
                ch.writeAndFlush(AddressedEnvelope(remoteAddress: self.server, data: ByteBuffer(bytes: query)), promise: nil)
            case .failure(let e):
                self.finish(id, .failure(e))
            }
        }
        let timer = loop.scheduleTask(in: .seconds(1)) { self.finish(id, .failure(DNSError.timeout(name))) }
        promise.futureResult.whenComplete { _ in timer.cancel() }
        return promise.futureResult.flatMapError { error in
            if case DNSError.timeout = error, tries > 1 { return self.ask(name, type, on: loop, tries: tries - 1) }
            return loop.makeFailedFuture(error)
        }
    }

    fileprivate func finish(_ id: UInt16, _ result: Result<DNSAnswer, Error>) {
        guard let p = lock.withLock({ pending.removeValue(forKey: id) }) else { return }
        p.promise.completeWith(result)
    }

    fileprivate func received(_ bytes: [UInt8]) {
        guard let answer = try? DNSMessage.parse(bytes) else { return }
        finish(answer.id, .success(answer))
    }

    private func socket() -> EventLoopFuture<Channel> {
        lock.withLock {
            if let channel { return channel }
            let local = server.protocol == .inet6 ? "::" : "0.0.0.0"
            let f = DatagramBootstrap(group: group).channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture { try ch.pipeline.syncOperations.addHandler(DNSReplyHandler(client: self)) }
            }.bind(host: local, port: 0)
            channel = f
            return f
        }
    }

    /// Closes the socket.
    public func close() {
        lock.withLock { channel }?.whenSuccess { $0.close(promise: nil) }
    }
}

/// Hands every datagram on the DNS socket to its client.
private final class DNSReplyHandler: ChannelInboundHandler, @unchecked Sendable { // used only on its channel's event loop
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    weak var client: DNSClient?
    init(client: DNSClient) { self.client = client }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        client?.received(Array(unwrapInboundIn(data).data.readableBytesView))
    }
}
