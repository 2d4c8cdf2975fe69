#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Atomics
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

    /// The socket's send buffer was full (EAGAIN, ENOBUFS): the datagram is
    /// lost as a full router queue would lose it, not refused; the
    /// destination is fine and SIP's retransmissions recover it, so a
    /// transaction does not end its branch for it.
    public var isLoss: Bool { code == EAGAIN || code == EWOULDBLOCK || code == ENOBUFS }
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
            Self.send(fd: fd, bytes, to: envelope.remoteAddress)
        }
        if result >= 0 {
            promise?.succeed(())
            return
        }
        promise?.fail(Self.failed(code: Int32(-result), to: envelope.remoteAddress, counters: counters, logger: logger))
    }

    /// One `sendto` of `bytes` on `fd` (retried on EINTR): the octets sent,
    /// or minus the `errno`.
    static func send(fd: CInt, _ bytes: UnsafeRawBufferPointer, to address: SocketAddress) -> Int {
        address.withSockAddr { addr, size in
            while true {
                let n = sendto(fd, bytes.baseAddress, bytes.count, sendFlags, addr, socklen_t(size))
                if n >= 0 { return n }
                if errno == EINTR { continue }
                return -Int(errno)
            }
        }
    }

    /// Counts and logs a datagram that could not be sent. Every error fails
    /// that datagram only, EAGAIN included (the socket's send buffer is
    /// full: the datagram is dropped as a full router queue would drop it,
    /// and SIP retransmits; nothing queues without bound).
    static func failed(code: Int32, to address: SocketAddress, counters: TransportCounters, logger: Logger) -> UDPSendError {
        counters.add(\.udpSendErrors)
        let error = UDPSendError(code: code, destination: LogText.escaped(address.ipText.map { "\($0):\(address.port ?? 0)" } ?? "\(address)"))
        logger.info("\(error); the listener stays open")
        return error
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

/// A UDP listener's socket as the stateless reply path uses it. A reply
/// made on the socket's own event loop (a request answered while it is
/// being received) is written into one scratch buffer and sent with one
/// `sendto`: no `ByteBuffer` is allocated, and the write does not travel
/// the channel pipeline (whose `NIOAny` wrapping alone costs four dynamic
/// casts) nor look the socket up under the transport's lock. Anything else
/// (another thread, a reply larger than the scratch buffer, a closed
/// channel) goes the ordinary way through the channel.
final class UDPReplySocket: @unchecked Sendable { // fd and channel are constants; `scratch` is used only on the channel's event loop
    let fd: CInt
    let channel: Channel
    private let counters: TransportCounters
    private let logger: Logger
    /// Allocated on first use, on the loop; the largest UDP payload.
    private var scratch: UnsafeMutableRawBufferPointer?
    static let scratchSize = 65_536

    init(fd: CInt, channel: Channel, counters: TransportCounters, logger: Logger) {
        self.fd = fd
        self.channel = channel
        self.counters = counters
        self.logger = logger
    }

    deinit { scratch?.deallocate() }

    /// Writes a reply of at most `size` octets with `write` and sends it to
    /// `address`. False when this path does not apply (the caller then
    /// sends through the channel); a send that fails is counted and logged
    /// like any datagram and still returns true (the reply was dealt with).
    func send(size: Int, to address: SocketAddress, _ write: (UnsafeMutableRawBufferPointer) -> Int) -> Bool {
        // The descriptor is only ours while the channel is open, and the
        // channel closes on this loop: checked here, it stays open until we return.
        guard size <= Self.scratchSize, channel.eventLoop.inEventLoop, channel.isActive else { return false }
        let buffer: UnsafeMutableRawBufferPointer
        if let scratch {
            buffer = scratch
        } else {
            buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.scratchSize, alignment: 16)
            scratch = buffer
        }
        let n = min(max(write(buffer), 0), buffer.count)
        let result = UDPSendHandler.send(fd: fd, UnsafeRawBufferPointer(rebasing: buffer[0..<n]), to: address)
        if result < 0 { _ = UDPSendHandler.failed(code: Int32(-result), to: address, counters: counters, logger: logger) }
        return true
    }

}

/// A UDP listener's socket for sends from any thread (`SIPTransport.sendDirect`):
/// a descriptor of its own (`dup` of the listener's), so a send never
/// depends on the channel's loop or on the channel's descriptor staying
/// open. `sendto` on one socket from several threads is safe in the kernel;
/// the descriptor is closed only once no send is in flight.
final class UDPDirectSocket: Sendable {
    private let fd: CInt
    private let inFlight = ManagedAtomic<Int>(0)
    private let closed = ManagedAtomic<Bool>(false)
    private let counters: TransportCounters
    private let logger: Logger

    /// Nil when the descriptor cannot be duplicated (out of descriptors).
    init?(duplicating listenerFD: CInt, counters: TransportCounters, logger: Logger) {
        let copy = fcntl(listenerFD, F_DUPFD_CLOEXEC, 0)
        guard copy >= 0 else { return nil }
        self.fd = copy
        self.counters = counters
        self.logger = logger
    }

    deinit { if !closed.load(ordering: .sequentiallyConsistent) { closeDescriptor(fd) } }

    /// Sends `bytes` as one datagram now; `.notApplicable` once closed.
    func send(_ bytes: UnsafeRawBufferPointer, to address: SocketAddress) -> SIPTransport.DirectSend {
        inFlight.wrappingIncrement(ordering: .sequentiallyConsistent)
        defer { inFlight.wrappingDecrement(ordering: .sequentiallyConsistent) }
        guard !closed.load(ordering: .sequentiallyConsistent) else { return .notApplicable }
        let result = UDPSendHandler.send(fd: fd, bytes, to: address)
        if result < 0 { return .failed(UDPSendHandler.failed(code: Int32(-result), to: address, counters: counters, logger: logger)) }
        return .sent
    }

    /// No send starts after this; the descriptor is closed once the sends
    /// in flight (a `sendto` each, non-blocking) are done.
    func close() {
        guard closed.compareExchange(expected: false, desired: true, ordering: .sequentiallyConsistent).exchanged else { return }
        while inFlight.load(ordering: .sequentiallyConsistent) > 0 { sched_yield() }
        closeDescriptor(fd)
    }
}

#if os(Linux)
private let sendFlags = Int32(MSG_NOSIGNAL)
#else
private let sendFlags: Int32 = 0
#endif

private func closeDescriptor(_ fd: CInt) { _ = close(fd) }
private func bindDescriptor(_ fd: CInt, _ addr: UnsafePointer<sockaddr>, _ len: socklen_t) -> CInt { bind(fd, addr, len) }
