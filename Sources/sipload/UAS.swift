import NIOCore
import SIPCore

/// The far end of the call scenario, on UDP: answers INVITE with 180 and
/// 200 (To tag, Contact, Record-Route copied), BYE and anything else but
/// ACK with 200. Replies go to the datagram's source, the proxy.
final class UAS: ChannelInboundHandler, @unchecked Sendable { // used only on its channel's event loop
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    /// Set on the event loop once the bound port is known.
    var contact = ""

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        guard let request = try? SIPMessage.parse(Array(envelope.data.readableBytesView)), request.isRequest,
              let method = request.method, method != .ack else { return }
        var copied = ""
        for name in [SIPHeaderName.via, .from] {
            for h in request.headers(name) { copied += "\(name.canonicalName): \(h.valueString)\r\n" }
        }
        var to = request.header(.to)?.valueString ?? ""
        if !to.contains(";tag=") { to += ";tag=uas" }
        copied += "To: \(to)\r\nCall-ID: \(request.callID ?? "")\r\nCSeq: \(request.header(.cseq)?.valueString ?? "")\r\n"
        func send(_ code: Int, _ reason: String, dialog: Bool) {
            var text = "SIP/2.0 \(code) \(reason)\r\n\(copied)"
            if dialog {
                for h in request.headers(.recordRoute) { text += "Record-Route: \(h.valueString)\r\n" }
                text += "Contact: <\(contact)>\r\n"
            }
            text += "Content-Length: 0\r\n\r\n"
            context.writeAndFlush(wrapOutboundOut(AddressedEnvelope(remoteAddress: envelope.remoteAddress, data: context.channel.allocator.buffer(string: text))), promise: nil)
        }
        if method == .invite {
            send(180, "Ringing", dialog: true)
            send(200, "OK", dialog: true)
        } else {
            send(200, "OK", dialog: false)
        }
    }
}
