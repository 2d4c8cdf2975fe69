#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Logging
import NIOCore
import NIOPosix
import SIPConfig
import SIPCore

/// Why one datagram could not be sent. The socket stays open.
public struct UDPSendError: Error, Sendable, CustomStringConvertible {
    /// The `errno` of `sendto` (ENETUNREACH, EACCES, EMSGSIZE, EINVAL, …).
    public var code: Int32
    /// The destination, as text safe for logs.
    public var destination: String

    public var description: String {
        "sending to udp:\(destination) failed: \(String(cString: strerror(code))) (errno \(code))"
    }
}

/// The first handler of a UDP listener's pipeline: sends every datagram
/// itself with `sendto` on the listener's socket, so an error that concerns
/// one destination (unreachable network, permission, message too long, an
/// invalid address or port) fails that one write and is counted, and never
/// reaches the channel, which would close the socket on any error but a few.
/// Nothing is queued: a datagram the socket does not take at once (its
/// send buffer is full: EAGAIN) is dropped and counted like any error.
final class UDPSendHandler: ChannelOutboundHandler {
    typealias OutboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    private let fd: CInt
    private let counters: TransportCounters
    private let logger: Logger

    init(fd: CInt, counters: TransportCounters, logger: Logger) {
        self.fd = fd
        self.counters = counters
        self.logger = logger
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        // The descriptor is only ours while the channel is open (NIO closes
        // it on this loop; afterwards the number may belong to another socket).
        guard context.channel.isActive else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        let envelope = unwrapOutboundIn(data)
        let result: Int = envelope.data.withUnsafeReadableBytes { bytes in
            envelope.remoteAddress.withSockAddr { addr, size in
                while true {
                    let n = sendto(fd, bytes.baseAddress, bytes.count, sendFlags, addr, socklen_t(size))
                    if n >= 0 { return n }
                    if errno == EINTR { continue }
                    return -Int(errno)
                }
            }
        }
        if result >= 0 {
            promise?.succeed(())
            return
        }
        // Every error fails this datagram only, EAGAIN included (the
        // socket's send buffer is full: the datagram is dropped as a full
        // router queue would drop it, and SIP retransmits; nothing queues
        // without bound).
        let code = Int32(-result)
        counters.add(\.udpSendErrors)
        let error = UDPSendError(code: code, destination: LogText.escaped(envelope.remoteAddress.ipText.map { "\($0):\(envelope.remoteAddress.port ?? 0)" } ?? "\(envelope.remoteAddress)"))
        logger.info("\(error); the listener stays open")
        promise?.fail(error)
    }

    /// Opens and binds the UDP socket of a listener (non-blocking); the
    /// descriptor is handed to `DatagramBootstrap.withBoundSocket`.
    static func makeSocket(host: String, port: Int) throws -> CInt {
        let address = try SocketAddress.makeAddressResolvingHost(host, port: port)
        let family: CInt = address.protocol == .inet6 ? AF_INET6 : AF_INET
        #if canImport(Darwin)
        let fd = socket(family, SOCK_DGRAM, 0)
        #else
        let fd = socket(family, Int32(SOCK_DGRAM.rawValue), 0)
        #endif
        guard fd >= 0 else { throw IOError(errnoCode: errno, reason: "socket") }
        var ok = false
        defer { if !ok { closeDescriptor(fd) } }
        // No SO_REUSEADDR: on UDP it would let another socket bind the same
        // address and port and take a share of the datagrams (and UDP has
        // no TIME_WAIT for it to help with).
        let flags = fcntl(fd, F_GETFL, 0)
        guard flags >= 0, fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0 else { throw IOError(errnoCode: errno, reason: "fcntl(O_NONBLOCK)") }
        let rc = address.withSockAddr { addr, size in bindDescriptor(fd, addr, socklen_t(size)) }
        guard rc == 0 else { throw IOError(errnoCode: errno, reason: "bind") }
        ok = true
        return fd
    }
}

#if os(Linux)
private let sendFlags = Int32(MSG_NOSIGNAL)
#else
private let sendFlags: Int32 = 0
#endif

private func closeDescriptor(_ fd: CInt) { _ = close(fd) }
private func bindDescriptor(_ fd: CInt, _ addr: UnsafePointer<sockaddr>, _ len: socklen_t) -> CInt { bind(fd, addr, len) }
