import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SIPConfig
import SIPTLS
import SIPTransport

/// The control socket `swiftser ctl` talks to: a UNIX stream socket
/// (mode 0600) speaking JSON-RPC 2.0 with Kamailio's method names
/// (`ControlMethods`). One request (or batch) per connection: the client
/// writes a JSON document ended by a newline (or closes its writing side),
/// the server answers with one JSON document and a newline, then closes.
public final class ControlServer: @unchecked Sendable { // `channel` is touched only by start() and stop(), which the owner calls in turn (stop: its service, which runs after start)
    let core: ProxyCore
    let config: Config
    let logger: Logger
    /// The level `cfg.get/cfg.set core debug` reads and changes.
    public let logLevel: RuntimeLogLevel
    /// When this control server (and so the proxy) started: `core.uptime`.
    let startedAt = Date()
    private var channel: Channel?
    private let reloadLock = NIOLock()
    /// Connections open now (bounded by `maxConnections`).
    private let open = NIOLockedValueBox(0)

    /// A request larger than this is refused (octets).
    public static let maxRequestSize = 65_536
    /// At most this many control connections at once; more are closed at once.
    public static let maxConnections = 16
    /// A client that sends no complete request within this time is closed.
    public static let requestTimeout: TimeAmount = .seconds(10)
    /// At most this many calls in one batch.
    public static let maxBatch = 64

    public init(core: ProxyCore, config: Config, logger: Logger, logLevel: RuntimeLogLevel? = nil) {
        self.core = core
        self.config = config
        self.logger = logger
        self.logLevel = logLevel ?? RuntimeLogLevel(config.core.logLevel)
    }

    public enum StartError: Error, CustomStringConvertible {
        case notASocket(String)
        /// The private directory the socket is bound in could not be made (errno).
        case privateDirectory(String, Int32)
        /// The path of the socket while it is bound is longer than a UNIX
        /// socket address holds (107 octets).
        case pathTooLong(String)
        /// The bound socket could not be moved to its path (errno).
        case rename(String, Int32)
        public var description: String {
            switch self {
            case .notASocket(let p): return "control_socket '\(p)' exists and is not a socket; refusing to replace it"
            case .privateDirectory(let d, let e): return "cannot make a private directory in '\(d)' to bind the control socket in: \(String(cString: strerror(e)))"
            case .pathTooLong(let p): return "control_socket: '\(p)' (the path while binding) is longer than 107 octets; use a shorter control_socket path"
            case .rename(let p, let e): return "cannot move the control socket to '\(p)': \(String(cString: strerror(e)))"
            }
        }
    }

    public func start(group: EventLoopGroup) throws {
        let path = config.core.controlSocket
        let dir = (path as NSString).deletingLastPathComponent
        if !dir.isEmpty { try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        // A stale socket from an earlier run is replaced; any other file is not.
        var st = stat()
        if lstat(path, &st) == 0 {
            guard (st.st_mode & S_IFMT) == S_IFSOCK else { throw StartError.notASocket(path) }
            unlink(path)
        }
        let bootstrap = ServerBootstrap(group: group)
            .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { [unowned self] ch in
                do {
                    try ch.pipeline.syncOperations.addHandler(ControlHandler(server: self))
                    return ch.eventLoop.makeSucceededVoidFuture()
                } catch {
                    return ch.eventLoop.makeFailedFuture(error)
                }
            }
        // No other user may connect, not even for an instant. bind() makes
        // the socket file with the process umask, and umask is process-wide
        // (changing it around bind would race with other threads creating
        // files), and a UNIX socket cannot be fchmod-ed before bind. So it
        // is bound in a fresh directory only we can enter (mkdtemp: 0700),
        // made 0600 there, and renamed into place: its path appears with
        // mode 0600 already. rename() also replaces a stale socket at once.
        let parent = dir.isEmpty ? "." : dir
        var template = Array((parent + "/.ctl.XXXXXX").utf8CString)
        let made = template.withUnsafeMutableBufferPointer { b in b.baseAddress.map { mkdtemp($0) != nil } ?? false }
        guard made else { throw StartError.privateDirectory(parent, errno) }
        let privateDir = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        defer { rmdir(privateDir) }
        chmod(privateDir, 0o700)
        let bound = privateDir + "/s"
        guard bound.utf8.count <= 107 else { throw StartError.pathTooLong(bound) }
        let ch = try bootstrap.bind(unixDomainSocketPath: bound).wait()
        guard chmod(bound, 0o600) == 0, rename(bound, path) == 0 else {
            let e = errno
            try? ch.close().wait()
            unlink(bound)
            throw StartError.rename(path, e)
        }
        channel = ch
    }

    /// Closes the socket and removes its file; does nothing when `start`
    /// did not bind it (the path may be a file that is not ours).
    public func stop() {
        guard let ch = channel else { return }
        channel = nil
        try? ch.close().wait()
        unlink(config.core.controlSocket)
    }

    /// Admits a new connection when fewer than `maxConnections` are open.
    func admit() -> Bool {
        open.withLockedValue { n in
            guard n < ControlServer.maxConnections else { return false }
            n += 1
            return true
        }
    }

    func release() { open.withLockedValue { $0 -= 1 } }

    /// The outcome of a TLS reload.
    public enum TLSReloadOutcome: Sendable {
        case reloaded(servers: Int, clients: Int)
        case notInUse
        case failed(String)
    }

    /// Re-reads every certificate, key and CA file and swaps in new TLS
    /// contexts: new connections use them, open ones keep theirs. A reload
    /// that fails keeps the running contexts.
    public func reloadTLSOutcome() -> TLSReloadOutcome {
        reloadLock.withLock {
            guard !config.tls.disabled, core.transport.tlsTable != nil else { return .notInUse }
            do {
                let table = try TLSDomainTable.build(config.tls)
                core.transport.reloadTLS(table)
                for w in table.warnings { logger.warning("\(w)") }
                logger.notice("TLS reloaded: \(table.servers.count) server and \(table.clients.count) client domain(s)")
                return .reloaded(servers: table.servers.count, clients: table.clients.count)
            } catch {
                logger.error("TLS reload failed, the running certificates stay in use: \(error)")
                return .failed("\(error)")
            }
        }
    }

    /// `reloadTLSOutcome()` as a sentence (SIGHUP's log, tests).
    public func reloadTLS() -> String {
        switch reloadTLSOutcome() {
        case .reloaded(let s, let c): return "TLS reloaded: \(s) server and \(c) client domain(s)"
        case .notInUse: return "TLS is not in use; nothing to reload"
        case .failed(let why): return "TLS reload failed, the running certificates stay in use: \(why)"
        }
    }

    /// Answers one request document (a call or a batch); nil when nothing
    /// is to be sent back (notifications only).
    public func handle(_ data: [UInt8]) -> [UInt8]? {
        let parsed: Any
        do {
            parsed = try JSONSerialization.jsonObject(with: Data(data), options: [])
        } catch {
            return encode(JSONRPC.errorResponse(id: NSNull(), .parseError("not JSON")))
        }
        if let batch = parsed as? [Any] {
            guard !batch.isEmpty else { return encode(JSONRPC.errorResponse(id: NSNull(), .invalidRequest("empty batch"))) }
            guard batch.count <= ControlServer.maxBatch else {
                return encode(JSONRPC.errorResponse(id: NSNull(), .invalidRequest("batch of \(batch.count) calls; at most \(ControlServer.maxBatch)")))
            }
            let answers = batch.compactMap { call($0) }
            return answers.isEmpty ? nil : encode(answers)
        }
        return call(parsed).map { encode($0) }
    }

    /// One call: its response object, or nil for a notification.
    func call(_ value: Any) -> [String: Any]? {
        guard let req = value as? [String: Any] else { return JSONRPC.errorResponse(id: NSNull(), .invalidRequest("a request is a JSON object")) }
        let id = req["id"]
        if let id, !(id is String || id is Int || id is Double || id is NSNumber || id is NSNull) {
            return JSONRPC.errorResponse(id: NSNull(), .invalidRequest("id must be a string, a number or null"))
        }
        guard req["jsonrpc"] as? String == "2.0" else { return JSONRPC.errorResponse(id: id ?? NSNull(), .invalidRequest("jsonrpc must be \"2.0\"")) }
        guard let method = req["method"] as? String else { return JSONRPC.errorResponse(id: id ?? NSNull(), .invalidRequest("method must be a string")) }
        let params: [Any]
        switch req["params"] {
        case nil: params = []
        case let a as [Any]: params = a
        case is [String: Any]: return JSONRPC.errorResponse(id: id ?? NSNull(), .invalidParams("params are positional (an array), as in Kamailio"))
        default: return JSONRPC.errorResponse(id: id ?? NSNull(), .invalidRequest("params must be an array"))
        }
        let result = ControlMethods(server: self).run(method, params)
        guard let id else { return nil } // a notification: no answer
        switch result {
        case .success(let r): return ["jsonrpc": "2.0", "result": r, "id": id]
        case .failure(let e): return JSONRPC.errorResponse(id: id, e)
        }
    }

    func encode(_ object: Any) -> [UInt8] {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]))
            ?? Data(#"{"jsonrpc":"2.0","error":{"code":-32603,"message":"result not encodable"},"id":null}"#.utf8)
        return Array(data) + [0x0A]
    }
}

/// JSON-RPC 2.0 error objects.
public enum JSONRPC {
    public struct Failure: Error, Sendable, Equatable {
        public var code: Int
        public var message: String
        /// The error object's `data` member, when there is more to say
        /// (cfg.reload: one line per config error).
        public var data: [String]?

        public init(code: Int, message: String, data: [String]? = nil) {
            self.code = code
            self.message = message
            self.data = data
        }

        public static func parseError(_ why: String) -> Failure { Failure(code: -32700, message: "Parse error: \(why)") }
        public static func invalidRequest(_ why: String) -> Failure { Failure(code: -32600, message: "Invalid Request: \(why)") }
        public static func methodNotFound(_ name: String) -> Failure { Failure(code: -32601, message: "Method not found: \(name)") }
        public static func invalidParams(_ why: String) -> Failure { Failure(code: -32602, message: "Invalid params: \(why)") }
        public static func internalError(_ why: String) -> Failure { Failure(code: -32603, message: "Internal error: \(why)") }
        /// Kamailio's RPC faults carry SIP-like codes (404 not found, 500 failed).
        public static func notFound(_ what: String) -> Failure { Failure(code: 404, message: what) }
        public static func failed(_ why: String) -> Failure { Failure(code: 500, message: why) }
    }

    static func errorResponse(id: Any, _ f: Failure) -> [String: Any] {
        var error: [String: Any] = ["code": f.code, "message": f.message]
        if let data = f.data { error["data"] = data }
        return ["jsonrpc": "2.0", "error": error, "id": id]
    }
}

/// Reads one request (up to a newline, or until the client stops
/// writing), hands it to the server off the event loop, writes the answer
/// and closes.
final class ControlHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let server: ControlServer
    private var buffer: [UInt8] = []
    private var admitted = false
    private var answered = false
    private var timeout: Scheduled<Void>?

    init(server: ControlServer) { self.server = server }

    func channelActive(context: ChannelHandlerContext) {
        guard server.admit() else {
            context.close(promise: nil)
            return
        }
        admitted = true
        let channel = context.channel
        timeout = context.eventLoop.scheduleTask(in: ControlServer.requestTimeout) { channel.close(promise: nil) }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        timeout?.cancel()
        if admitted {
            admitted = false
            server.release()
        }
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard admitted, !answered else { return }
        let b = unwrapInboundIn(data)
        buffer.append(contentsOf: b.readableBytesView)
        if let nl = buffer.firstIndex(of: 0x0A) {
            buffer.removeSubrange(nl...)
            answer(context: context)
        } else if buffer.count > ControlServer.maxRequestSize {
            buffer = []
            reply(context: context, server.encode(JSONRPC.errorResponse(id: NSNull(), .invalidRequest("request larger than \(ControlServer.maxRequestSize) octets"))))
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? ChannelEvent, case .inputClosed = e, admitted, !answered {
            if buffer.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) {
                context.close(promise: nil)
            } else {
                answer(context: context)
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func answer(context: ChannelHandlerContext) {
        answered = true
        timeout?.cancel()
        let request = buffer
        buffer = []
        let server = self.server
        let channel = context.channel
        // Methods may read files (tls.reload) or write the database
        // (ul.rm): run them off the event loops that carry SIP.
        DispatchQueue.global().async {
            let out = server.handle(request)
            channel.eventLoop.execute {
                guard let out else {
                    channel.close(promise: nil)
                    return
                }
                channel.writeAndFlush(ByteBuffer(bytes: out)).whenComplete { _ in channel.close(promise: nil) }
            }
        }
    }

    private func reply(context: ChannelHandlerContext, _ bytes: [UInt8]) {
        answered = true
        timeout?.cancel()
        let channel = context.channel
        channel.writeAndFlush(ByteBuffer(bytes: bytes)).whenComplete { _ in channel.close(promise: nil) }
    }
}
