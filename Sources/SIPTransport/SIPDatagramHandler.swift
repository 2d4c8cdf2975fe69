import Logging
import NIOCore
import SIPConfig
import SIPCore

/// Receives UDP datagrams on one listener: each datagram is one message
/// (RFC 3261 §18.3); a datagram that does not parse is answered with 400
/// when enough of it can be read, and dropped when it is a response.
final class SIPDatagramHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    private let transport: SIPTransport
    private let listenerBox: ListenerBox
    /// The listener as bound, read from its box without the box's lock once
    /// the real port is known (the box is filled in after the bind).
    private var boundListener: ListenSocket?
    private var listener: ListenSocket {
        if let boundListener { return boundListener }
        let l = listenerBox.value
        if l.port != 0 { boundListener = l }
        return l
    }
    private let limits: SIPLimits
    private let fd: CInt
    private var replySocket: UDPReplySocket?

    init(transport: SIPTransport, listener: ListenerBox, limits: SIPLimits, fd: CInt) {
        self.transport = transport
        self.listenerBox = listener
        self.limits = limits
        self.fd = fd
    }

    func handlerAdded(context: ChannelHandlerContext) {
        replySocket = UDPReplySocket(fd: fd, channel: context.channel, counters: transport.counters, logger: transport.logger)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        replySocket = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        var buf = envelope.data
        // The datagram is copied out of the receive buffer (the message
        // keeps its octets; SwiftNIO reuses the buffer for the next read).
        let bytes = buf.readBytes(length: buf.readableBytes) ?? []
        // Keep-alives (CRLF or CRLFCRLF) on UDP: ignore.
        if bytes.allSatisfy({ $0 == 0x0D || $0 == 0x0A || $0 == 0x20 }) { return }
        do {
            let m = try SIPMessage.parse(bytes, framing: .datagram, limits: limits)
            let source = envelope.remoteAddress
            transport.deliver(ReceivedMessage(message: m, source: source, sourceIP: Self.ipText(source), listener: listener, proto: .udp,
                                              connection: nil, udpSocket: replySocket))
        } catch {
            let from = "\(envelope.remoteAddress.ipAddress ?? "?"):\(envelope.remoteAddress.port ?? 0)"
            if let reply = SIPResponseBuilder.errorResponse(toUnparsed: bytes, error: error, toTag: transport.makeTag()) {
                transport.logger.info("malformed request from udp:\(from): \(error); answering \(error.statusCode)")
                let out = AddressedEnvelope(remoteAddress: envelope.remoteAddress, data: ByteBuffer(bytes: reply))
                context.writeAndFlush(wrapOutboundOut(out), promise: nil)
            } else {
                transport.logger.info("malformed message from udp:\(from) dropped: \(error)")
            }
        }
    }

    /// The source address as text. SwiftNIO already made it (with
    /// `inet_ntop`) when it read the datagram and keeps it as the address's
    /// `host`: shared here instead of formatted again.
    static func ipText(_ a: SocketAddress) -> String {
        // Only a numeric form is taken (a name given when an address is
        // made elsewhere is not the source IP).
        switch a {
        case .v4(let v4):
            let host = v4.host
            if !host.isEmpty, host.utf8.allSatisfy({ $0 == 0x2E || (0x30...0x39).contains($0) }) { return host }
        case .v6(let v6):
            let host = v6.host
            if host.utf8.contains(0x3A), host.utf8.allSatisfy({ $0 == 0x3A || $0 == 0x2E || (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }) {
                return host
            }
        default:
            break
        }
        return a.ipText ?? ""
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // ICMP errors and the like: log and keep the socket open.
        transport.logger.debug("udp \(listener): \(error)")
    }
}
