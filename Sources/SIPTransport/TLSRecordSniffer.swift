import Foundation
import NIOCore

/// Reads the cipher suite from the ServerHello as it passes (outbound on a
/// server connection, inbound on a client connection).
/// swift-nio-ssl has no accessor for the negotiated suite; the ServerHello
/// carries it in clear in every TLS version. After that it only passes data on.
final class TLSRecordSniffer: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let outbound: Bool
    private var buffered = ByteBuffer()
    private let found: (UInt16) -> Void
    private var done = false

    /// - Parameter outbound: true on a server (the ServerHello is written),
    ///   false on a client (it is read).
    init(outbound: Bool, found: @escaping (UInt16) -> Void) {
        self.outbound = outbound
        self.found = found
    }

    // Inbound, look first: the handshake completes while the data is
    // passed on, and the suite must be known by then.
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if !outbound && !done { inspect(unwrapInboundIn(data), context: context) }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if outbound && !done { inspect(unwrapOutboundIn(data), context: context) }
        context.write(data, promise: promise)
    }

    private func inspect(_ buf: ByteBuffer, context: ChannelHandlerContext) {
        var b = buf
        buffered.writeBuffer(&b)
        // Record: type(1)=22 version(2) length(2); handshake: type(1)=2 length(3)
        // ServerHello: version(2) random(32) session_id<1> cipher_suite(2)
        let view = buffered.readableBytesView
        guard view.count >= 5 else { return }
        let start = view.startIndex
        guard view[start] == 22 else { finish(context); return }
        guard view.count >= 5 + 4 + 2 + 32 + 1 else {
            if view.count > 16 * 1024 { finish(context) }
            return
        }
        guard view[start + 5] == 2 else { finish(context); return }
        let sidLen = Int(view[start + 5 + 4 + 2 + 32])
        let suiteAt = start + 5 + 4 + 2 + 32 + 1 + sidLen
        guard view.count >= suiteAt - start + 2 else { return }
        found(UInt16(view[suiteAt]) << 8 | UInt16(view[suiteAt + 1]))
        finish(context)
    }

    /// Stops looking. The handler stays in the pipeline as a pass-through:
    /// changing the pipeline in the middle of the handshake's first writes
    /// stalled it.
    private func finish(_ context: ChannelHandlerContext) {
        done = true
        buffered = ByteBuffer()
    }

    /// IANA names of the suites BoringSSL offers.
    static func name(_ v: UInt16) -> String {
        switch v {
        case 0x1301: return "TLS_AES_128_GCM_SHA256"
        case 0x1302: return "TLS_AES_256_GCM_SHA384"
        case 0x1303: return "TLS_CHACHA20_POLY1305_SHA256"
        case 0xC02B: return "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
        case 0xC02C: return "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"
        case 0xC02F: return "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
        case 0xC030: return "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"
        case 0xCCA8: return "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"
        case 0xCCA9: return "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
        case 0xC009: return "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"
        case 0xC00A: return "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA"
        case 0xC013: return "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"
        case 0xC014: return "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA"
        case 0x009C: return "TLS_RSA_WITH_AES_128_GCM_SHA256"
        case 0x009D: return "TLS_RSA_WITH_AES_256_GCM_SHA384"
        case 0x002F: return "TLS_RSA_WITH_AES_128_CBC_SHA"
        case 0x0035: return "TLS_RSA_WITH_AES_256_CBC_SHA"
        default: return String(format: "0x%04X", v)
        }
    }
}
