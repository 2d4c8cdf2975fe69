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
    private var listener: ListenSocket { listenerBox.value }
    private let limits: SIPLimits

    init(transport: SIPTransport, listener: ListenerBox, limits: SIPLimits) {
        self.transport = transport
        self.listenerBox = listener
        self.limits = limits
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        var buf = envelope.data
        let bytes = buf.readBytes(length: buf.readableBytes) ?? []
        // Keep-alives (CRLF or CRLFCRLF) on UDP: ignore.
        if bytes.allSatisfy({ $0 == 0x0D || $0 == 0x0A || $0 == 0x20 }) { return }
        do {
            let m = try SIPMessage.parse(bytes, framing: .datagram, limits: limits)
            transport.deliver(ReceivedMessage(message: m, source: envelope.remoteAddress, listener: listener, proto: .udp, connection: nil))
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

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // ICMP errors and the like: log and keep the socket open.
        transport.logger.debug("udp \(listener): \(error)")
    }
}
