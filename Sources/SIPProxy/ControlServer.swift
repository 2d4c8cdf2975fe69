import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SIPConfig
import SIPTLS
import SIPTransport

/// The control socket `swiftser ctl` talks to: a UNIX stream socket, one
/// command line in, the answer out, then close. Commands: `tls.reload`,
/// `tls.list`, `ul.dump`, `conn.count`, `version`.
public final class ControlServer: @unchecked Sendable {
    let core: ProxyCore
    let config: Config
    let logger: Logger
    private var channel: Channel?
    private let reloadLock = NIOLock()

    public init(core: ProxyCore, config: Config, logger: Logger) {
        self.core = core
        self.config = config
        self.logger = logger
    }

    public func start(group: EventLoopGroup) throws {
        let path = config.core.controlSocket
        let dir = (path as NSString).deletingLastPathComponent
        if !dir.isEmpty { try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        try? FileManager.default.removeItem(atPath: path)
        channel = try ServerBootstrap(group: group)
            .childChannelInitializer { [unowned self] ch in
                do {
                    try ch.pipeline.syncOperations.addHandler(ControlHandler(server: self))
                    return ch.eventLoop.makeSucceededVoidFuture()
                } catch {
                    return ch.eventLoop.makeFailedFuture(error)
                }
            }
            .bind(unixDomainSocketPath: path).wait()
        chmod(path, 0o600)
    }

    public func stop() {
        try? channel?.close().wait()
        try? FileManager.default.removeItem(atPath: config.core.controlSocket)
    }

    /// Re-reads every certificate, key and CA file and swaps in new TLS
    /// contexts: new connections use them, open ones keep theirs. A reload
    /// that fails keeps the running contexts.
    public func reloadTLS() -> String {
        reloadLock.withLock {
            guard !config.tls.disabled, core.transport.tlsTable != nil else { return "TLS is not in use; nothing to reload" }
            do {
                let table = try TLSDomainTable.build(config.tls)
                core.transport.reloadTLS(table)
                for w in table.warnings { logger.warning("\(w)") }
                let msg = "TLS reloaded: \(table.servers.count) server and \(table.clients.count) client domain(s)"
                logger.notice("\(msg)")
                return msg
            } catch {
                let msg = "TLS reload failed, the running certificates stay in use: \(error)"
                logger.error("\(msg)")
                return msg
            }
        }
    }

    func execute(_ line: String) -> String {
        let words = line.split(separator: " ").map(String.init)
        switch words.first ?? "" {
        case "tls.reload":
            return reloadTLS()
        case "tls.list":
            guard let t = core.transport.tlsTable else { return "TLS is not in use" }
            return (t.servers + t.clients).map { "\($0.domain.name): \($0.summary); \($0.domain.method); \($0.verificationDescription)" }.joined(separator: "\n")
        case "ul.dump":
            let now = Int64(Date().timeIntervalSince1970)
            let all = core.location.all(now: now)
            if all.isEmpty { return "no registrations" }
            return all.map { "\($0.aor) \($0.contact) expires=\($0.secondsLeft(now: now)) via \($0.proto):\($0.receivedIP):\($0.receivedPort)" }.joined(separator: "\n")
        case "conn.count":
            return TransportProtocol.allCases.filter { $0 != .udp }.map { "\($0.rawValue): \(core.transport.connectionCount($0))" }.joined(separator: "\n")
        case "version":
            return "SwiftSER"
        default:
            return "unknown command '\(line)'; commands: tls.reload, tls.list, ul.dump, conn.count, version"
        }
    }
}

final class ControlHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let server: ControlServer
    var buffer = ""

    init(server: ControlServer) { self.server = server }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var b = unwrapInboundIn(data)
        buffer += b.readString(length: b.readableBytes) ?? ""
        guard let nl = buffer.firstIndex(of: "\n") else { return }
        let line = buffer[..<nl].trimmingCharacters(in: .whitespaces)
        let answer = server.execute(line) + "\n"
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: answer))).whenComplete { _ in context.close(promise: nil) }
    }
}
