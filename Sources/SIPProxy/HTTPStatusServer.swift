import Dispatch
import Atomics
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import SIPConfig

/// The HTTP listener of `http_listen`: `GET /metrics` (Prometheus text),
/// `/health` (liveness: 200 while the process answers) and `/ready`
/// (readiness: 200 when the SIP listeners are bound, the location
/// database answers and no drain has begun; 503 otherwise). Plain
/// NIOHTTP1, one request per connection. With a control server (`http_rpc`,
/// on for loopback peers by default) also `POST /rpc`: a JSON-RPC 2.0
/// request or batch in the body, answered as on the control socket.
///
/// Bounded: at most `maxConnections` connections at once (more are closed
/// on accept), a request (line, header fields and body) of at most
/// `maxRequestBytes` octets, and `timeout` for the whole connection.
public final class HTTPStatusServer: Sendable {
    public static let maxConnections = 8
    /// Head (8 KiB) and a JSON-RPC body as large as the control socket takes.
    public static let maxRequestBytes = 8 * 1024 + ControlServer.maxRequestSize
    public static let timeout = TimeAmount.seconds(5)

    let core: ProxyCore
    let address: HTTPListenAddress
    let logger: Logger
    /// `POST /rpc` is answered by this control server (nil: 404).
    let control: ControlServer?
    /// Who may use `/rpc`.
    let rpcAccess: HTTPRPCAccess
    private let open = ManagedAtomic<Int>(0)
    private let channel = NIOLockedValueBox<Channel?>(nil)

    public init(core: ProxyCore, address: HTTPListenAddress, logger: Logger, control: ControlServer? = nil, rpcAccess: HTTPRPCAccess = .loopback) {
        self.core = core
        self.address = address
        self.logger = logger
        self.control = rpcAccess == .off ? nil : control
        self.rpcAccess = rpcAccess
    }

    /// The port bound (the configured one, or the one chosen for port 0).
    public var port: Int? { channel.withLockedValue { $0 }?.localAddress?.port }

    public func start(group: EventLoopGroup) throws {
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 16)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { [self] ch in
                // Over the limit: refused (the bootstrap closes a channel
                // whose initializer fails).
                guard open.wrappingIncrementThenLoad(ordering: .relaxed) <= Self.maxConnections else {
                    open.wrappingDecrement(ordering: .relaxed)
                    return ch.eventLoop.makeFailedFuture(ChannelError.inappropriateOperationForState)
                }
                ch.closeFuture.whenComplete { [open] _ in open.wrappingDecrement(ordering: .relaxed) }
                // The whole exchange must end within the timeout.
                let timer = ch.eventLoop.scheduleTask(in: Self.timeout) { ch.close(promise: nil) }
                ch.closeFuture.whenComplete { _ in timer.cancel() }
                do {
                    let sync = ch.pipeline.syncOperations
                    try sync.addHandler(RequestSizeLimit(limit: Self.maxRequestBytes))
                    try sync.configureHTTPServerPipeline(withPipeliningAssistance: false, withErrorHandling: true)
                    try sync.addHandler(StatusHandler(server: self))
                    return ch.eventLoop.makeSucceededVoidFuture()
                } catch {
                    return ch.eventLoop.makeFailedFuture(error)
                }
            }
            .childChannelOption(ChannelOptions.maxMessagesPerRead, value: 1)
        let ch = try bootstrap.bind(host: address.host, port: address.port).wait()
        channel.withLockedValue { $0 = ch }
        logger.info("HTTP status listener on \(ch.localAddress.map { "\($0)" } ?? "?"): /metrics /health /ready\(control == nil ? "" : " /rpc")")
    }

    public func stop() {
        try? channel.withLockedValue { $0 }?.close().wait()
    }

    /// Why the proxy is not ready, or nil when it is.
    func notReadyReason() -> String? {
        if core.metrics.isDraining { return "draining" }
        if core.transport.listeners.isEmpty { return "no SIP listener bound" }
        if !core.location.isReachable() { return "location database not reachable" }
        return nil
    }

    /// Whether `peer` may call `/rpc`.
    func rpcAllowed(from peer: SocketAddress?) -> Bool {
        switch rpcAccess {
        case .off: return false
        case .any: return true
        case .loopback:
            guard let ip = peer?.ipAddress else { return false }
            return ip.hasPrefix("127.") || ip == "::1" || ip.hasPrefix("::ffff:127.")
        }
    }

    /// The path of a request target, without its query.
    static func bare(_ uri: String) -> String {
        uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? uri
    }

    /// Status, content type and body for a GET of `path`.
    func respond(method: HTTPMethod, path: String) -> (HTTPResponseStatus, String, [UInt8]) {
        guard method == .GET || method == .HEAD else { return (.methodNotAllowed, "text/plain", Array("GET or HEAD only\n".utf8)) }
        switch Self.bare(path) {
        case "/metrics":
            return (.ok, "text/plain; version=0.0.4; charset=utf-8", core.metrics.render(core: core))
        case "/health":
            return (.ok, "text/plain", Array("ok\n".utf8))
        case "/ready":
            if let why = notReadyReason() { return (.serviceUnavailable, "text/plain", Array("not ready: \(why)\n".utf8)) }
            return (.ok, "text/plain", Array("ready\n".utf8))
        case "/rpc" where control != nil:
            return (.methodNotAllowed, "text/plain", Array("POST a JSON-RPC 2.0 request\n".utf8))
        default:
            return (.notFound, "text/plain", Array("not found\n".utf8))
        }
    }
}

/// Closes a connection whose peer sends more than `limit` octets (the
/// server reads one request per connection, so this bounds the request).
private final class RequestSizeLimit: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    let limit: Int
    var seen = 0
    init(limit: Int) { self.limit = limit }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        seen += unwrapInboundIn(data).readableBytes
        if seen > limit {
            context.close(promise: nil)
            return
        }
        context.fireChannelRead(data)
    }
}

private final class StatusHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let server: HTTPStatusServer
    var head: HTTPRequestHead?
    var answered = false
    /// The body of a `POST /rpc` (other bodies are ignored).
    var rpcBody: [UInt8]?
    init(server: HTTPStatusServer) { self.server = server }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            if h.method == .POST, HTTPStatusServer.bare(h.uri) == "/rpc", server.control != nil { rpcBody = [] }
        case .body(let b):
            // Its size is bounded by RequestSizeLimit.
            rpcBody?.append(contentsOf: b.readableBytesView)
        case .end:
            guard let h = head, !answered else { return }
            answered = true
            if let body = rpcBody, let control = server.control {
                guard server.rpcAllowed(from: context.channel.remoteAddress) else {
                    send(context, h, .forbidden, "text/plain", Array("/rpc answers loopback peers only (http_rpc)\n".utf8))
                    return
                }
                // Methods may read files or write the database: off the event loop.
                let channel = context.channel
                let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                DispatchQueue.global().async {
                    let out = control.handle(body)
                    channel.eventLoop.execute {
                        let (handler, context) = loopBound.value
                        if let out {
                            handler.send(context, h, .ok, "application/json", out)
                        } else {
                            handler.send(context, h, .noContent, nil, [])
                        }
                    }
                }
                return
            }
            let (status, type, body) = server.respond(method: h.method, path: h.uri)
            send(context, h, status, type, body)
        }
    }

    func send(_ context: ChannelHandlerContext, _ h: HTTPRequestHead, _ status: HTTPResponseStatus, _ type: String?, _ body: [UInt8]) {
        var headers = HTTPHeaders()
        if let type { headers.add(name: "Content-Type", value: type) }
        if status != .noContent { headers.add(name: "Content-Length", value: String(body.count)) }
        headers.add(name: "Connection", value: "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: h.version, status: status, headers: headers))), promise: nil)
        if h.method != .HEAD && !body.isEmpty {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        }
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }
}
