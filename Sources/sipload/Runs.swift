import Foundation
import NIOConcurrencyHelpers
import NIOCore
import SIPCore

/// One measured interval: the offered load (nil: closed loop), what came
/// back, and what the server spent.
struct Step {
    var offered: Double?
    var seconds: Double
    var stats: Stats.Snapshot
    var serverCPU: Double
    var serverPSSKiB: Int

    var rate: Double { Double(stats.completed) / seconds }
    var ok: Bool { stats.lossRatio <= 0.001 && (offered.map { rate >= 0.9 * $0 } ?? true) }
    var cpuPerUnitMicros: Double { stats.completed == 0 ? 0 : serverCPU * 1e6 / Double(stats.completed) }
}

/// Measures an interval of `seconds` with the server sampled around it.
func measure(_ env: Environment, _ stats: Stats, offered: Double?, seconds: Double) -> Step {
    _ = stats.take()
    let cpu0 = env.sampler.cpuSeconds()
    let t0 = NIODeadline.now()
    Thread.sleep(forTimeInterval: seconds)
    let snapshot = stats.take()
    let elapsed = Double((NIODeadline.now() - t0).nanoseconds) / 1e9
    return Step(offered: offered, seconds: elapsed, stats: snapshot, serverCPU: env.sampler.cpuSeconds() - cpu0, serverPSSKiB: env.sampler.pssKiB())
}

/// Closed loop, fixed rate or find-the-maximum over persistent clients.
struct LoadRun {
    let env: Environment
    let command: SIPLoad

    func run() throws -> [Step] {
        let stats = Stats()
        let openLoop = command.rate != nil || command.findMax
        let far = NIODeadline.now() + .seconds(3600)
        var starters: [() -> Void] = [], sweepers: [(NIODeadline) -> Void] = [], counts: [() -> Int] = []
        var channels: [Channel] = []
        var refills: [() -> Void] = []
        let timeout = env.timeout
        for i in 0..<command.connections {
            func add<In>(_ client: LoadClient<In>) throws {
                channels.append(try env.open(client).wait())
                starters.append(client.startOne)
                sweepers.append { client.sweep(now: $0, timeout: timeout) }
                counts.append { client.inFlight }
                refills.append { client.refill = !openLoop; client.deadline = far }
            }
            if env.proto == "udp" {
                try add(LoadClient<AddressedEnvelope<ByteBuffer>>(id: i, scenario: env.scenario, factory: env.factory, stats: stats, target: env.target, datagram: true, deadline: far))
            } else {
                try add(LoadClient<ByteBuffer>(id: i, scenario: env.scenario, factory: env.factory, stats: stats, target: env.target, datagram: false, deadline: far))
            }
        }
        let driver = Driver(loop: env.loop, stats: stats, starters: starters, sweepers: sweepers,
                            inFlight: { counts.reduce(0) { $0 + $1() } }, maxInFlight: 20_000)
        driver.start()
        // The clients live on env.loop: their closures are handed over bound to it.
        let boundRefills = HandedToLoop(refills)
        let boundStarters = HandedToLoop(starters)
        try env.loop.submit { for r in boundRefills.value { r() } }.wait()
        defer {
            driver.stop()
            for ch in channels { try? ch.close().wait() }
        }
        if !openLoop {
            let window = command.window
            env.loop.execute { for s in boundStarters.value { for _ in 0..<window { s() } } }
            return [measure(env, stats, offered: nil, seconds: command.duration)]
        }
        if let rate = command.rate, !command.findMax {
            driver.setRate(rate)
            if command.warmup > 0 { Thread.sleep(forTimeInterval: command.warmup) }
            return [measure(env, stats, offered: rate, seconds: command.duration)]
        }
        var steps: [Step] = []
        var offered = command.startRate
        var spent = 0.0
        while spent + command.stepDuration <= command.duration + 0.001 {
            driver.setRate(offered)
            let step = measure(env, stats, offered: offered, seconds: command.stepDuration)
            steps.append(step)
            spent += step.seconds
            if !step.ok { break }
            offered *= command.stepFactor
        }
        return steps
    }
}

/// Sends one OPTIONS on a fresh connection, waits for the final answer and closes.
final class OneShot: ChannelInboundHandler, @unchecked Sendable { // used only on its channel's event loop
    typealias InboundIn = ByteBuffer
    let factory: RequestFactory
    let stats: Stats
    let keepOpen: Bool
    let answered: EventLoopPromise<Void>
    private var framer = SIPStreamFramer()
    private let started = NIODeadline.now()
    private static let counter = NIOLockedValueBox(0)

    init(factory: RequestFactory, stats: Stats, keepOpen: Bool, answered: EventLoopPromise<Void>) {
        self.factory = factory; self.stats = stats; self.keepOpen = keepOpen; self.answered = answered
    }

    func channelActive(context: ChannelHandlerContext) {
        let n = Self.counter.withLockedValue { $0 += 1; return $0 }
        stats.started()
        context.writeAndFlush(NIOAny(context.channel.allocator.buffer(string: factory.options(callID: "H\(RunTag.value)-\(n)"))), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        framer.append(unwrapInboundIn(data).readableBytesView)
        while let event = try? framer.next() {
            guard case .message(let bytes) = event, let m = try? SIPMessage.parse(bytes), let code = m.statusCode, code >= 200 else { continue }
            stats.completed(microseconds: UInt64(max(0, (NIODeadline.now() - started).nanoseconds / 1000)), ok: code < 300)
            answered.succeed(())
            if !keepOpen { context.close(promise: nil) }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) { context.close(promise: nil) }

    func channelInactive(context: ChannelHandlerContext) {
        answered.fail(ChannelError.ioOnClosedChannel)
        context.fireChannelInactive()
    }
}

/// `--new-connection`: `slots` loops of connect, handshake, OPTIONS, 200, close.
struct HandshakeRun {
    let env: Environment
    let slots: Int
    let duration: Double

    func run() throws -> Step {
        let stats = Stats()
        let deadline = NIODeadline.now() + .nanoseconds(Int64(duration * 1e9))
        let env = self.env
        @Sendable func go() {
            guard NIODeadline.now() < deadline else { return }
            let answered = env.loop.makePromise(of: Void.self)
            env.open(OneShot(factory: env.factory, stats: stats, keepOpen: false, answered: answered)).whenComplete { result in
                switch result {
                case .success(let ch): ch.closeFuture.whenComplete { _ in go() }
                case .failure:
                    // Counted once, by the failed promise below.
                    stats.started()
                    answered.fail(ChannelError.connectTimeout(.zero))
                    _ = env.loop.scheduleTask(in: .milliseconds(10)) { go() }
                }
            }
            answered.futureResult.whenFailure { _ in stats.failed() }
        }
        env.loop.execute { for _ in 0..<slots { go() } }
        return measure(env, stats, offered: nil, seconds: duration)
    }
}

/// Outcome of `--idle`.
struct IdleResult {
    var opened: Int
    var failed: Int
    var secondsToOpen: Double
    var pssBeforeKiB: Int
    var pssAfterKiB: Int
    var perConnectionKiB: Double { opened == 0 ? 0 : Double(pssAfterKiB - pssBeforeKiB) / Double(opened) }
}

/// `--idle N`: opens N connections (200 at a time), one answered OPTIONS on
/// each, samples the server's memory, holds them, closes them.
struct IdleRun {
    let env: Environment
    let count: Int
    let hold: Double

    func run() throws -> IdleResult {
        let stats = Stats()
        let before = env.sampler.pssKiB()
        let t0 = NIODeadline.now()
        let env = self.env, count = self.count
        let channels = NIOLockedValueBox<[Channel]>([])
        let done = env.loop.makePromise(of: Void.self)
        let state = NIOLockedValueBox((started: 0, finished: 0, failed: 0))
        @Sendable func next() {
            let go = state.withLockedValue { s -> Bool in
                guard s.started < count else { return false }
                s.started += 1
                return true
            }
            guard go else { return }
            let answered = env.loop.makePromise(of: Void.self)
            env.open(OneShot(factory: env.factory, stats: stats, keepOpen: true, answered: answered)).whenComplete { result in
                if case .success(let ch) = result { channels.withLockedValue { $0.append(ch) } } else { answered.fail(ChannelError.ioOnClosedChannel) }
            }
            answered.futureResult.whenComplete { result in
                let finished = state.withLockedValue { s -> Int in
                    s.finished += 1
                    if case .failure = result { s.failed += 1 }
                    return s.finished
                }
                if finished == count { done.succeed(()) } else { next() }
            }
        }
        env.loop.execute { for _ in 0..<min(200, count) { next() } }
        try done.futureResult.wait()
        let opened = NIODeadline.now() - t0
        Thread.sleep(forTimeInterval: 1)
        let after = env.sampler.pssKiB()
        Thread.sleep(forTimeInterval: max(0, hold - 1))
        for ch in channels.withLockedValue({ $0 }) { ch.close(promise: nil) }
        Thread.sleep(forTimeInterval: 0.5)
        let s = state.withLockedValue { $0 }
        return IdleResult(opened: count - s.failed, failed: s.failed, secondsToOpen: Double(opened.nanoseconds) / 1e9, pssBeforeKiB: before, pssAfterKiB: after)
    }
}

/// The printed outcome: a Markdown table or one JSON object.
struct Report {
    let scenario: String, proto: String, connections: Int, mode: String
    var steps: [Step] = []
    var idle: IdleResult?

    init(command c: SIPLoad) {
        scenario = c.newConnection ? "handshake" : (c.idle != nil ? "idle" : c.scenario.rawValue)
        proto = c.proto
        connections = c.idle ?? c.connections
        mode = c.findMax ? "find-max" : (c.rate != nil ? "rate" : (c.newConnection || c.idle != nil ? "connections" : "closed-loop"))
    }

    /// The best step that kept losses under 0.1 % (find-max), else the last.
    var best: Step? {
        if mode == "find-max" { return steps.filter(\.ok).max { $0.rate < $1.rate } ?? steps.first }
        return steps.last
    }

    private func object(_ s: Step) -> String {
        let st = s.stats
        let offered = s.offered.map { String(format: "%.0f", $0) } ?? "null"
        return String(format: "{\"offered\":%@,\"seconds\":%.3f,\"started\":%d,\"completed\":%d,\"rate\":%.1f,\"failures\":%d,\"timeouts\":%d,\"retransmissions\":%d,\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,\"server_cpu_s\":%.3f,\"server_cpu_pct\":%.1f,\"server_cpu_us_per_unit\":%.2f,\"server_pss_kib\":%d,\"ok\":%@}",
                      offered, s.seconds, st.started, st.completed, s.rate, st.failures, st.timeouts, st.retransmissions,
                      st.ms(50), st.ms(90), st.ms(99), Double(st.latency.max) / 1000, s.serverCPU, 100 * s.serverCPU / s.seconds,
                      s.cpuPerUnitMicros, s.serverPSSKiB, s.ok ? "true" : "false")
    }

    func print(json: Bool) {
        if json {
            var fields = "\"scenario\":\"\(scenario)\",\"proto\":\"\(proto)\",\"connections\":\(connections),\"mode\":\"\(mode)\""
            if let b = best { fields += ",\"result\":\(object(b))" }
            if !steps.isEmpty { fields += ",\"steps\":[\(steps.map(object).joined(separator: ","))]" }
            if let i = idle {
                fields += String(format: ",\"idle\":{\"opened\":%d,\"failed\":%d,\"seconds_to_open\":%.3f,\"pss_before_kib\":%d,\"pss_after_kib\":%d,\"kib_per_connection\":%.2f}",
                                 i.opened, i.failed, i.secondsToOpen, i.pssBeforeKiB, i.pssAfterKiB, i.perConnectionKiB)
            }
            Swift.print("{\(fields)}")
            return
        }
        if let i = idle {
            Swift.print("| scenario | proto | opened | failed | seconds to open | server PSS before KiB | after KiB | KiB per connection |")
            Swift.print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
            Swift.print(String(format: "| idle | %@ | %d | %d | %.2f | %d | %d | %.1f |", proto, i.opened, i.failed, i.secondsToOpen, i.pssBeforeKiB, i.pssAfterKiB, i.perConnectionKiB))
            return
        }
        Swift.print("| scenario | proto | conns | offered/s | achieved/s | failures | timeouts | retrans | p50 ms | p99 ms | server CPU % | CPU µs/unit |")
        Swift.print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for s in steps {
            Swift.print(String(format: "| %@ | %@ | %d | %@ | %.0f | %d | %d | %d | %.2f | %.2f | %.0f | %.1f |", scenario, proto, connections,
                               s.offered.map { String(format: "%.0f", $0) } ?? "closed loop", s.rate, s.stats.failures, s.stats.timeouts,
                               s.stats.retransmissions, s.stats.ms(50), s.stats.ms(99), 100 * s.serverCPU / s.seconds, s.cpuPerUnitMicros))
        }
        if mode == "find-max", let b = best { Swift.print(String(format: "\nmaximum with losses ≤ 0.1 %%: %.0f/s", b.rate)) }
    }
}

/// Closures made here and run only on the clients' event loop, handed to it
/// (NIOLoopBound would have to be made on that loop).
struct HandedToLoop<T>: @unchecked Sendable { // used only inside the loop's submit/execute it is given to
    let value: T
    init(_ value: T) { self.value = value }
}
