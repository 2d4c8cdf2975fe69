import NIOCore
import SIPCore

/// One client of the load: a TCP/TLS connection or a UDP socket, with the
/// units (OPTIONS, REGISTER or calls) it has in flight, keyed by Call-ID.
/// Lives on one event loop; the `Driver` on the same loop paces it.
final class LoadClient<In>: ChannelInboundHandler, @unchecked Sendable { // used only on its channel's event loop
    typealias InboundIn = In

    private enum Stage { case single, inviting, byeing }
    private struct Pending {
        var started: NIODeadline
        var lastSent: NIODeadline
        var request: ByteBuffer
        var retransmits: Int
        var stage: Stage
        /// REGISTER: the number that picks the user, and whether the
        /// registrar's challenge has been answered.
        var sequence = 0
        var answered = false
    }

    let id: Int
    let scenario: Scenario
    let factory: RequestFactory
    let stats: Stats
    let target: SocketAddress
    let datagram: Bool
    /// Closed loop: start a new unit whenever one ends.
    var refill = false
    var deadline: NIODeadline
    private(set) var channel: Channel?
    private var framer = SIPStreamFramer()
    private var pending: [String: Pending] = [:]
    private var sequence = 0

    var inFlight: Int { pending.count }

    init(id: Int, scenario: Scenario, factory: RequestFactory, stats: Stats, target: SocketAddress, datagram: Bool, deadline: NIODeadline) {
        self.id = id; self.scenario = scenario; self.factory = factory; self.stats = stats
        self.target = target; self.datagram = datagram; self.deadline = deadline
    }

    func handlerAdded(context: ChannelHandlerContext) { channel = context.channel }

    /// Starts one unit of the scenario.
    func startOne() {
        guard let channel, channel.isActive, NIODeadline.now() < deadline else { return }
        sequence += 1
        let callID = "L\(RunTag.value)-\(id)-\(sequence)"
        let text: String
        let unitSequence = id &* 100_003 &+ sequence
        switch scenario {
        case .options: text = factory.options(callID: callID)
        case .register: text = factory.register(callID: callID, sequence: unitSequence)
        case .call: text = factory.invite(callID: callID)
        }
        let buffer = channel.allocator.buffer(string: text)
        let now = NIODeadline.now()
        pending[callID] = Pending(started: now, lastSent: now, request: buffer, retransmits: 0, stage: scenario == .call ? .inviting : .single,
                                  sequence: unitSequence)
        stats.started()
        write(buffer)
    }

    private func write(_ buffer: ByteBuffer) {
        guard let channel else { return }
        if datagram {
            channel.writeAndFlush(AddressedEnvelope(remoteAddress: target, data: buffer), promise: nil)
        } else {
            channel.writeAndFlush(buffer, promise: nil)
        }
    }

    /// Retransmits unanswered UDP requests (T1 doubling up to 4 s) and gives
    /// up on units older than `timeout`.
    func sweep(now: NIODeadline, timeout: TimeAmount) {
        var expired: [String] = []
        for (key, p) in pending {
            if now - p.started > timeout { expired.append(key); continue }
            guard datagram else { continue }
            let wait = TimeAmount.milliseconds(min(500 << p.retransmits, 4000))
            if now - p.lastSent > wait {
                pending[key]?.lastSent = now
                pending[key]?.retransmits += 1
                stats.retransmitted()
                write(p.request)
            }
        }
        for key in expired {
            pending[key] = nil
            stats.timedOut()
            if refill { startOne() }
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let value = unwrapInboundIn(data)
        if let envelope = value as? AddressedEnvelope<ByteBuffer> {
            handle(Array(envelope.data.readableBytesView))
        } else if let buffer = value as? ByteBuffer {
            framer.append(buffer.readableBytesView)
            while let event = try? framer.next() {
                if case .message(let bytes) = event { handle(bytes) }
            }
        }
    }

    private func handle(_ bytes: [UInt8]) {
        guard let message = try? SIPMessage.parse(bytes), let code = message.statusCode,
              let callID = message.callID, let p = pending[callID],
              let method = (try? message.cseq())??.method else { return }
        switch p.stage {
        case .single:
            guard code >= 200 else { return }
            if (code == 401 || code == 407), scenario == .register, !p.answered, let password = factory.password {
                answer(callID, p, challenge: message, password: password)
                return
            }
            finish(callID, p, ok: code < 300)
        case .inviting:
            guard method == .invite, code >= 200 else { return }
            guard code < 300 else { finish(callID, p, ok: false); return }
            let (ack, bye) = factory.ackAndBye(callID: callID, ok: message)
            guard let channel else { return }
            write(channel.allocator.buffer(string: ack))
            let byeBuffer = channel.allocator.buffer(string: bye)
            pending[callID]?.stage = .byeing
            pending[callID]?.request = byeBuffer
            pending[callID]?.lastSent = .now()
            pending[callID]?.retransmits = 0
            write(byeBuffer)
        case .byeing:
            guard method == .bye, code >= 200 else { return }
            finish(callID, p, ok: code < 300)
        }
    }

    /// Answers a registrar's digest challenge: the same REGISTER again,
    /// CSeq 2, with credentials. The unit ends with the answer to that.
    private func answer(_ callID: String, _ p: Pending, challenge: SIPMessage, password: String) {
        let values = (challenge.headers(.wwwAuthenticate) + challenge.headers(.proxyAuthenticate)).map(\.valueString)
        let user = factory.registerUser(sequence: p.sequence)
        guard let channel,
              let authorization = DigestAnswer.authorization(challenges: values, user: user, password: password, method: "REGISTER",
                                                             uri: "sip:\(factory.domain)", cnonce: "c\(callID)")
        else { finish(callID, p, ok: false); return }
        let buffer = channel.allocator.buffer(string: factory.register(callID: callID, sequence: p.sequence, cseq: 2, authorization: authorization))
        pending[callID]?.answered = true
        pending[callID]?.request = buffer
        pending[callID]?.lastSent = .now()
        pending[callID]?.retransmits = 0
        write(buffer)
    }

    private func finish(_ callID: String, _ p: Pending, ok: Bool) {
        pending[callID] = nil
        let micros = UInt64(max(0, (NIODeadline.now() - p.started).nanoseconds / 1000))
        stats.completed(microseconds: micros, ok: ok)
        if refill { startOne() }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        stats.failed()
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        // Units on a closed connection never finish.
        for _ in pending { stats.failed() }
        pending.removeAll()
        context.fireChannelInactive()
    }
}

/// Paces every client on one event loop: closed loop (each client keeps
/// `window` units in flight) or open loop at a total rate, spread round-robin.
final class Driver: @unchecked Sendable { // used only on `loop`
    let loop: EventLoop
    let stats: Stats
    private let starters: [() -> Void]
    private let sweepers: [(NIODeadline) -> Void]
    private let inFlight: () -> Int
    private var task: RepeatedTask?
    private var rate = 0.0
    private var credit = 0.0
    private var last = NIODeadline.now()
    private var next = 0
    private var ticks = 0
    let maxInFlight: Int

    init(loop: EventLoop, stats: Stats, starters: [() -> Void], sweepers: [(NIODeadline) -> Void], inFlight: @escaping () -> Int, maxInFlight: Int) {
        self.loop = loop; self.stats = stats; self.starters = starters; self.sweepers = sweepers; self.inFlight = inFlight; self.maxInFlight = maxInFlight
    }

    /// Runs the pacing tick every 2 ms; sweeps every 100 ms.
    func start() {
        loop.execute {
            self.last = .now()
            self.task = self.loop.scheduleRepeatedTask(initialDelay: .milliseconds(2), delay: .milliseconds(2)) { _ in self.tick() }
        }
    }

    /// Sets the open-loop rate (units per second); 0 for closed loop.
    func setRate(_ r: Double) { loop.execute { self.rate = r; self.credit = 0; self.last = .now() } }

    func stop() { loop.execute { self.task?.cancel() } }

    private func tick() {
        let now = NIODeadline.now()
        ticks += 1
        if ticks % 50 == 0 { for s in sweepers { s(now) } }
        guard rate > 0, !starters.isEmpty else { return }
        credit += rate * Double((now - last).nanoseconds) / 1e9
        last = now
        var room = maxInFlight - inFlight()
        while credit >= 1 {
            credit -= 1
            // Beyond the in-flight bound the offered unit is lost: count it.
            if room <= 0 { stats.started(); stats.failed(); continue }
            starters[next % starters.count]()
            next &+= 1
            room -= 1
        }
    }
}

/// Random per process and part of every Call-ID (and so of every branch),
/// so they are unique across runs against the same server (RFC 3261
/// §8.1.1.4, §8.1.1.7): with a counter alone, a second run's INVITE carried
/// the first run's branch, and a proxy still holding that call's
/// transaction (Accepted, RFC 6026, 32 s) rightly absorbed it as a
/// retransmission.
enum RunTag {
    static let value = String(UInt64.random(in: .min ... .max), radix: 36)
}
