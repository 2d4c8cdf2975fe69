import Atomics
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SIPConfig
import SIPCore
import SIPTransport

/// One proxied request held by the shell: its pure machine
/// (`ProxyTransaction`) plus what the machine does not hold — the request's
/// context, the octets of each branch and the responses to forward.
/// Guarded by its shard's lock.
final class ServerTransaction: @unchecked Sendable { // state read and written only under its shard's lock
    let key: TransactionKey
    /// The request's script context: nil once the machine no longer needs
    /// it (`needsContext`: the final went upstream), so a transaction held
    /// 32 s in Accepted does not keep it.
    var ctx: MessageContext?
    /// The request as received (immutable, shared safely): its source and
    /// connection are the path of every response upstream.
    let request: ReceivedMessage
    let shard: Int
    var machine: ProxyTransaction
    /// The last response sent upstream, for retransmissions.
    var lastResponse: [UInt8]?
    var branches: [BranchData] = []
    /// The wake-up scheduled for `machine.nextDeadline`.
    var timer: TimerWheel.Timer?
    var timerDue: Millis?
    /// When it was made, for the request → final response latency.
    let created: Millis
    /// A final response went upstream (its latency is recorded once).
    var finalSent = false

    /// What replies made here copy, taken from the request when the
    /// transaction is made (on the thread running its script), so building
    /// a reply under the shard lock never reads the live context.
    var replyRequest: SIPMessage?
    let localTag: String
    let toHasTag: Bool?
    /// The reason phrase the script gave with the status it replies (t_reply).
    var pendingReason: (Int, String)?
    /// The request's own script has returned; until then a failure_route
    /// that is due waits (`failureRouteDeferred`), so the context is never
    /// used by two threads at once.
    var requestScriptDone = false
    var failureRouteDeferred = false
    /// What an onreply_route sees of the request's script (t_on_reply,
    /// $var, flags), copied under the lock each time t_relay runs, so a
    /// response on another thread never reads the live context.
    var replyRoute: RouteBlock?
    var replyVars: [String: Value] = [:]
    var replyFlags: UInt64 = 0
    /// Bumped with every new wake-up; a wake-up of an older one is stale.
    var timerGeneration: UInt64 = 0
    /// Where its request's source is counted (`max_transactions_per_ip`).
    let sourceCells: SourceCounter.Cells

    init(key: TransactionKey, ctx: MessageContext, shard: Int, machine: ProxyTransaction, created: Millis, sourceCells: SourceCounter.Cells) {
        self.sourceCells = sourceCells
        self.created = created
        self.key = key
        self.ctx = ctx
        self.request = ctx.received
        self.shard = shard
        self.machine = machine
        self.isInvite = machine.isInvite
        self.replyRequest = ctx.requestForReplies
        self.localTag = ctx.localTag
        self.toHasTag = ctx.toHasTag
    }

    let isInvite: Bool
}

/// What the shell keeps of one branch.
struct BranchData {
    /// The branch's request; nil while its next hop is being resolved.
    var out: OutgoingRequest?
    var target: Target
    /// The last response received that may be forwarded (provisional or final).
    var response: SIPMessage?
    /// Its CANCEL, made once.
    var cancelBytes: [UInt8]?
    /// The stream connection its request was last written to: only that
    /// connection's failure ends the branch (several connections may go to
    /// one address, e.g. TLS ones for different names, RFC 5923).
    var connectionID: UInt64?
}

/// Every proxied transaction, in shards by key (one lock each, as
/// Kamailio's tm hashes into buckets); each event is decided by the
/// transaction's machine under its shard's lock and carried out after it.
final class TransactionLayer: @unchecked Sendable { // shards hold their own locks; the rest is immutable
    unowned let core: ProxyCore
    let settings: TimerSettings
    let shards: [Shard]
    /// The clock the machines are given (milliseconds, monotonic).
    let clock: @Sendable () -> Millis

    final class Shard: @unchecked Sendable { // every field is read and written under `lock`
        let lock = NIOLock()
        var servers: [TransactionKey: ServerTransaction] = [:]
        /// Branch parameter → its transaction and branch index.
        var clients: [String: (ServerTransaction, Int)] = [:]
    }

    /// One timer wheel per event loop: a wake-up is scheduled on the wheel
    /// of the loop that asks for it (no cross-thread wake-up), so timers
    /// fire where their transaction's messages were handled.
    private let wheels: [TimerWheel]

    private func wheel(for shard: Int) -> TimerWheel {
        for w in wheels where w.loop.inEventLoop { return w }
        return wheels[shard % wheels.count]
    }

    /// `max_transactions`, `max_transactions_per_ip`.
    let limits: TransactionLimits
    /// Transactions per source address (approximate, lock-free).
    let perSource = SourceCounter()

    init(core: ProxyCore) {
        self.core = core
        self.settings = TimerSettings(core.config.transactions)
        self.limits = TransactionLimits(core.config.transactions)
        let start = NIODeadline.now()
        self.clock = { Millis((NIODeadline.now() - start).nanoseconds / 1_000_000) }
        let n = max(1, min(16, System.coreCount * 2))
        self.shards = (0..<n).map { _ in Shard() }
        var loops: [EventLoop] = []
        for loop in core.transport.group.makeIterator() { loops.append(loop) }
        if loops.isEmpty { loops = [core.transport.group.next()] }
        self.wheels = loops.map { TimerWheel(loop: $0) }
    }

    /// Transactions in all shards: while there are none (a proxy answering
    /// statelessly), no key is built for an incoming request.
    private let count = ManagedAtomic<Int>(0)
    private var isEmpty: Bool { count.load(ordering: .relaxed) == 0 }
    /// Live transactions (Kamailio's tmx `active_transactions`; drain waits for it to reach 0).
    var activeCount: Int { count.load(ordering: .relaxed) }

    func shardIndex(_ k: TransactionKey) -> Int {
        Int(UInt(bitPattern: k.hashValue) % UInt(shards.count))
    }

    // MARK: Effects

    /// What one decision asks the shell to do once the lock is released.
    private struct Effects {
        var sends: [(bytes: [UInt8], to: Destination, branch: Int?)] = []
        var upstream: [[UInt8]] = []
        var runFailureRoute = false
        /// A context the transaction let go of: its last reference is
        /// dropped after the lock, not under it.
        var released: MessageContext?
    }

    /// Runs `decide` under the shard lock of `t`, turns the machine's
    /// actions into effects while still holding it (octets to send are
    /// chosen then), and carries them out after it.
    private func modify(_ t: ServerTransaction, _ decide: (inout ProxyTransaction, Millis) -> ProxyTransaction.Actions) {
        let shard = shards[t.shard]
        let now = clock()
        shard.lock.lock()
        let actions = decide(&t.machine, now)
        let effects = effectsLocked(t, actions, shard: shard)
        shard.lock.unlock()
        perform(effects, for: t)
    }

    /// Turns actions into effects (call with the shard lock held).
    private func effectsLocked(_ t: ServerTransaction, _ a: ProxyTransaction.Actions, shard: Shard) -> Effects {
        var e = Effects()
        for i in a.sendRequests {
            if let out = t.branches[i].out { e.sends.append((out.bytes, out.destination, i)) }
        }
        for i in a.sendAcks {
            if let out = t.branches[i].out {
                e.sends.append((HopByHop.ack(for: out.message, responseTo: t.branches[i].response?.headerValue(.to)), out.destination, nil))
            }
        }
        for i in a.sendCancels {
            guard let out = t.branches[i].out else { continue }
            let bytes = t.branches[i].cancelBytes ?? HopByHop.cancel(for: out.message)
            t.branches[i].cancelBytes = bytes
            e.sends.append((bytes, out.destination, nil))
        }
        if let u = a.upstream, let bytes = upstreamBytes(t, u, merging: a.mergeChallenges) {
            // A late 2xx forwarded after a non-2xx final does not replace
            // the response retransmissions repeat.
            let status: Int
            switch u { case .forward(_, let s), .local(let s): status = s }
            if status == t.machine.server.lastStatus { t.lastResponse = bytes }
            e.upstream.append(bytes)
            let metrics = core.metrics
            switch u {
            case .forward(_, let status):
                metrics.forwardedReply(status)
                if status >= 200 && !t.finalSent { recordFinal(t, metrics) }
            case .local(let status):
                metrics.sentReply(status)
                if status >= 200 && !t.finalSent { recordFinal(t, metrics) }
            }
        } else if a.resendUpstream, let bytes = t.lastResponse {
            e.upstream.append(bytes)
        }
        e.runFailureRoute = a.runFailureRoute
        if a.remove {
            if shard.servers.removeValue(forKey: t.key) != nil {
                count.wrappingDecrement(ordering: .relaxed)
                perSource.decrement(t.sourceCells)
            }
            for b in t.branches {
                if let out = b.out { shard.clients[out.branch] = nil }
            }
            t.timer?.cancel()
            t.timer = nil
            t.timerDue = nil
        } else {
            rescheduleLocked(t, shard: shard)
            releaseLocked(t, into: &e)
        }
        return e
    }

    /// Frees what the machine will not read again (after this decision's
    /// effects took their octets): an INVITE held 64*T1 in Accepted keeps
    /// its key, upstream path and reply-route variables, not its request's
    /// context, responses or branch octets. Call with the shard lock held.
    private func releaseLocked(_ t: ServerTransaction, into e: inout Effects) {
        let m = t.machine
        guard m.server.finalSent else { return }
        if !m.needsContext, t.ctx != nil {
            e.released = t.ctx
            t.ctx = nil
            t.replyRequest = nil
            t.pendingReason = nil
        }
        if !m.needsLastResponse { t.lastResponse = nil }
        for i in t.branches.indices {
            if !m.needsRequestOctets(i) { t.branches[i].out?.bytes = [] }
            if !m.needsResponse(i) { t.branches[i].response = nil }
        }
    }

    /// The octets of a response going upstream.
    private func upstreamBytes(_ t: ServerTransaction, _ u: ProxyTransaction.Upstream, merging: BranchMask) -> [UInt8]? {
        switch u {
        case .local(let status):
            let reason = t.pendingReason.flatMap { $0.0 == status ? $0.1 : nil } ?? Self.reasonPhrase(status)
            guard let replyRequest = t.replyRequest else { return nil }
            return core.replyBytes(to: t.request, request: replyRequest, code: status, reason: reason, toTag: t.localTag, toHasTag: t.toHasTag)
        case .forward(let i, _):
            guard var m = t.branches[i].response else { return nil }
            m.popFirstValue(.via)
            for j in merging {
                guard let other = t.branches[j].response else { continue }
                for f in other.headers(.wwwAuthenticate) { m.appendHeader(f) }
                for f in other.headers(.proxyAuthenticate) { m.appendHeader(f) }
            }
            return m.serialized()
        }
    }

    static func reasonPhrase(_ status: Int) -> String {
        switch status {
        case 100: return "Trying"
        case 408: return "Request Timeout"
        case 482: return "Loop Detected"
        case 487: return "Request Terminated"
        case 500: return "Server Internal Error"
        case 503: return "Service Unavailable"
        default: return status < 300 ? "OK" : "Error"
        }
    }

    /// One wake-up per transaction, at the machine's next deadline; a
    /// deadline that moves replaces it (a wake-up that would find nothing
    /// due costs more than a new timer). The timer holds its transaction
    /// until it fires or is cancelled (removal cancels it).
    private func rescheduleLocked(_ t: ServerTransaction, shard: Shard) {
        guard let due = t.machine.nextDeadline else {
            t.timer?.cancel()
            t.timer = nil
            t.timerDue = nil
            return
        }
        if let current = t.timerDue, current == due, t.timer != nil { return }
        t.timer?.cancel()
        t.timerDue = due
        t.timerGeneration &+= 1
        let generation = t.timerGeneration
        let delay = Int(clamping: max(0, due - clock()))
        t.timer = wheel(for: t.shard).schedule(milliseconds: delay) { [weak self, t] in
            self?.wake(t, generation: generation)
        }
    }

    private func wake(_ t: ServerTransaction, generation: UInt64) {
        let shard = shards[t.shard]
        let now = clock()
        shard.lock.lock()
        // A wake-up already replaced (cancelled after the wheel took it) is stale.
        guard generation == t.timerGeneration else {
            shard.lock.unlock()
            return
        }
        t.timer = nil
        t.timerDue = nil
        guard shard.servers[t.key] === t else {
            shard.lock.unlock()
            return
        }
        let a = t.machine.advance(now: now)
        let e = effectsLocked(t, a, shard: shard)
        shard.lock.unlock()
        perform(e, for: t)
    }

    /// The first final response of `t` (call with its shard's lock held).
    private func recordFinal(_ t: ServerTransaction, _ metrics: ProxyMetrics) {
        t.finalSent = true
        metrics.finalResponseLatency.record(ms: clock() - t.created)
    }

    private func perform(_ e: Effects, for t: ServerTransaction) {
        for bytes in e.upstream {
            // Nobody would read a failure below info level: no future (as sendReply).
            if core.logger.logLevel > .info, core.transport.replyUnobserved(size: bytes.count, to: t.request, { out in
                bytes.withUnsafeBytes { out.copyMemory(from: $0) }
                return bytes.count
            }) {
                continue
            }
            core.transport.reply(bytes, to: t.request).whenFailure { [logger = core.logger, request = t.request] error in
                logger.info("response not delivered to \(request.sourceIP):\(request.sourcePort): \(error)")
            }
        }
        for s in e.sends {
            core.metrics.forwardedRequest()
            switch core.transport.sendDirect(s.bytes, to: s.to) {
            case .sent:
                continue
            case .failed(let error) where error.isLoss:
                // A full send buffer loses the datagram; retransmissions
                // (Timer A/E) recover it as they would a loss on the way.
                continue
            case .failed:
                // Told after this decision's other sends (and after the
                // loop that makes a fork's other branches), as a failed
                // future would tell it: a first branch that fails at once
                // must not answer the request before the others exist.
                if let i = s.branch {
                    let loop = MultiThreadedEventLoopGroup.currentEventLoop ?? core.transport.group.next()
                    loop.execute { [self] in modify(t) { m, now in m.branchFailed(i, now: now) } }
                }
                continue
            case .notApplicable:
                break
            }
            let f: EventLoopFuture<Void>
            if let i = s.branch, s.to.proto != .udp {
                let shard = shards[t.shard]
                f = core.transport.send(s.bytes, to: s.to) { [weak t] c in
                    guard let t else { return }
                    shard.lock.withLock { if t.branches.indices.contains(i) { t.branches[i].connectionID = c.id } }
                }
            } else {
                f = core.transport.send(s.bytes, to: s.to)
            }
            if let i = s.branch {
                f.whenFailure { [weak self, weak t] error in
                    guard let self, let t else { return }
                    if let udp = error as? UDPSendError, udp.isLoss { return }
                    self.core.logger.info("request to \(s.to) failed: \(error)")
                    self.modify(t) { m, now in m.branchFailed(i, now: now) }
                }
            }
        }
        if e.runFailureRoute { runFailureRoute(t) }
    }

    /// failure_route, run outside every lock; what it adds (t_relay) or
    /// answers (t_reply) goes through the machine like any event.
    private func runFailureRoute(_ t: ServerTransaction) {
        let wait = shards[t.shard].lock.withLock { () -> Bool in
            if t.requestScriptDone { return false }
            t.failureRouteDeferred = true
            return true
        }
        if wait { return }
        // The context is held while a failure_route may run (`needsContext`).
        if let ctx = shards[t.shard].lock.withLock({ t.ctx }), let idx = ctx.failureRoute {
            ctx.failureRoute = nil
            ctx.status = modifyRead(t) { $0.best?.status }
            let prevKind = ctx.routeKind
            ctx.routeKind = .failure
            _ = core.run(block: idx, ctx)
            ctx.routeKind = prevKind
        }
        modify(t) { m, now in m.failureRouteFinished(now: now) }
    }

    private func modifyRead<T>(_ t: ServerTransaction, _ body: (ProxyTransaction) -> T) -> T {
        shards[t.shard].lock.withLock { body(t.machine) }
    }

    /// t_is_canceled(): read under the shard lock.
    func isCanceled(_ t: ServerTransaction) -> Bool { modifyRead(t) { $0.canceled } }

    /// The request's script returned: a failure_route that became due
    /// meanwhile runs now.
    func requestScriptFinished(_ t: ServerTransaction) {
        let run = shards[t.shard].lock.withLock { () -> Bool in
            t.requestScriptDone = true
            defer { t.failureRouteDeferred = false }
            return t.failureRouteDeferred
        }
        if run { runFailureRoute(t) }
    }

    // MARK: Requests

    func exists(for m: SIPMessage) -> Bool {
        let method: SIPMethod? = (m.method == .cancel || m.method == .ack) ? .invite : nil
        guard let k = Matching.key(m, method: method) else { return false }
        let s = shards[shardIndex(k)]
        return s.lock.withLock { s.servers[k] != nil }
    }

    private func find(_ k: TransactionKey) -> ServerTransaction? {
        let s = shards[shardIndex(k)]
        return s.lock.withLock { s.servers[k] }
    }

    /// Retransmissions, ACKs of non-2xx finals and CANCELs of known
    /// transactions. True when the request needs nothing more.
    func absorb(_ r: ReceivedMessage, checked: SIPMessage.Checked? = nil) -> Bool {
        if isEmpty { return false }
        let m = r.message
        switch m.method {
        case .ack?:
            guard let k = Matching.key(m, method: .invite, checked: checked), let t = find(k) else { return false }
            var absorbed = false
            modify(t) { machine, now in
                let (a, actions) = machine.ackReceived(now: now)
                absorbed = a
                return actions
            }
            return absorbed
        case .cancel?:
            guard let k = Matching.key(m, method: .invite, checked: checked), let t = find(k) else { return false }
            // 200 for the CANCEL itself (its own transaction, answered at once).
            core.sendReply(to: r, request: m, code: 200, reason: "OK")
            modify(t) { machine, now in machine.cancel(now: now) }
            return true
        default:
            guard let k = Matching.key(m, checked: checked), let t = find(k) else { return false }
            modify(t) { machine, now in machine.requestRetransmitted(now: now) }
            return true
        }
    }

    /// t_newtran(): the server transaction for the request being processed.
    @discardableResult
    func newServerTransaction(_ ctx: MessageContext) -> ServerTransaction? {
        if let t = ctx.transaction { return t }
        guard ctx.received.message.method != .ack, let k = Matching.key(ctx.received.message, checked: ctx.checked) else { return nil }
        let index = shardIndex(k)
        let s = shards[index]
        let now = clock()
        let isInvite = ctx.received.message.method == .invite
        let cells = SourceCounter.cells(hash: ctx.received.source.limitKeyHash)
        // The transaction, and whether it is this request's own (made now or by this context).
        let made: Result<(ServerTransaction, Bool), TransactionLimits.Refusal> = s.lock.withLock {
            // An existing transaction: this request is its own only when
            // it is the context that made it (read here, under the lock).
            if let t = s.servers[k] { return .success((t, t.ctx === ctx)) }
            // Reserve a place in both counts first, then decide: two
            // threads at the cap cannot both pass it; a refusal gives back.
            let total = count.loadThenWrappingIncrement(ordering: .relaxed)
            let fromSource = perSource.increment(cells)
            if let refusal = limits.admit(total: total, fromSource: fromSource) {
                count.wrappingDecrement(ordering: .relaxed)
                perSource.decrement(cells)
                return .failure(refusal)
            }
            let machine = ProxyTransaction(isInvite: isInvite, upstreamReliable: ctx.received.proto != .udp, settings: settings, now: now)
            let t = ServerTransaction(key: k, ctx: ctx, shard: index, machine: machine, created: now, sourceCells: cells)
            s.servers[k] = t
            rescheduleLocked(t, shard: s)
            return .success((t, true))
        }
        let t: ServerTransaction, isOwn: Bool
        switch made {
        case .success(let r): (t, isOwn) = r
        case .failure(let refusal):
            ctx.transactionRefused = refusal
            ctx.lastError = (503, "Service Unavailable")
            core.metrics.refusedTransaction(refusal)
            return nil
        }
        if !isOwn {
            // Another copy of a request whose transaction another thread
            // made meanwhile: a retransmission (Kamailio's t_newtran does
            // the same): the last response goes out again, nothing else.
            modify(t) { m, now in m.requestRetransmitted(now: now) }
            ctx.duplicate = true
            ctx.replied = true
            return nil
        }
        ctx.transaction = t
        return t
    }

    /// A reply made here (t_reply, or sl_send_reply on a transaction).
    func reply(_ t: ServerTransaction, code: Int, reason: String) {
        modify(t) { m, now in
            t.pendingReason = (code, reason)
            return m.reply(code, now: now).actions
        }
    }

    // MARK: t_relay

    /// t_relay(): forwards the request statefully to every target. False
    /// when no branch could be sent (the script may then reply).
    func relay(_ ctx: MessageContext) -> Bool {
        let m = ctx.received.message
        // ACK (to a 2xx) and CANCEL without a transaction go on statelessly.
        if m.method == .ack || m.method == .cancel {
            return core.forwardStateless(ctx, forced: nil)
        }
        guard let t = newServerTransaction(ctx) else {
            if ctx.transactionRefused != nil {
                // At the cap: answered statelessly, with Retry-After; the
                // script's own error reply (sl_reply_error) sends nothing more.
                core.sendReply(ctx, code: 503, reason: "Service Unavailable")
                ctx.replied = true
                ctx.duplicate = true
                return false
            }
            return ctx.duplicate
        }
        if t.isInvite {
            // 100 Trying at once (§16.2), once.
            modify(t) { machine, now in machine.server.lastStatus == 0 ? machine.reply(100, now: now).actions : .init() }
        }
        // t_on_failure() arms failure_route for when every branch has failed;
        // what an onreply_route needs of the script is copied now.
        shards[t.shard].lock.withLock {
            if ctx.failureRoute != nil { t.machine.failureRouteArmed = true }
            t.replyRoute = ctx.replyRoute
            t.replyVars = ctx.vars
            t.replyFlags = ctx.flags
        }
        let targets = ctx.targets.isEmpty ? [Target(uri: ctx.message.requestURIString ?? "", destination: nil)] : ctx.targets
        ctx.targets = []
        if targets.count > 1 {
            switch Self.splitBreadth(ctx.received.message.headerValue("Max-Breadth"), branches: targets.count) {
            case .exceeded:
                ctx.lastError = (440, "Max-Breadth Exceeded")
                reply(t, code: 440, reason: "Max-Breadth Exceeded")
                ctx.replied = true
                return false
            case .perBranch(let n):
                ctx.maxBreadthPerBranch = n
            }
        }
        return createBranches(ctx, t, targets)
    }

    enum BreadthSplit: Equatable {
        /// Each parallel branch carries this Max-Breadth.
        case perBranch(Int)
        /// The request's breadth cannot cover that many branches: 440.
        case exceeded
    }

    /// RFC 5393: parallel branches share the request's Max-Breadth (60
    /// when it has none or it is not a number), evenly, at least one each;
    /// more branches than that is 440.
    static func splitBreadth(_ header: String?, branches: Int) -> BreadthSplit {
        let breadth = header.flatMap { Int($0.trimmingCharacters(in: .whitespaces)) } ?? 60
        guard branches > 0 else { return .perBranch(breadth) }
        return branches > breadth ? .exceeded : .perBranch(breadth / branches)
    }

    /// One branch per target. A target whose next hop needs a NAPTR look-up
    /// first (RFC 3263 §4.1) is added unresolved and sent when the answer
    /// is in — unless the request was cancelled or answered meanwhile.
    private func createBranches(_ ctx: MessageContext, _ t: ServerTransaction, _ targets: [Target]) -> Bool {
        var created = 0
        var firstError: ProxyCore.ForwardError?
        let shard = shards[t.shard]
        for target in targets {
            let index = shard.lock.withLock { t.machine.branches.count }
            ctx.transactionShard = t.shard
            var resolvedOut: OutgoingRequest?
            var lookup: String?
            do {
                resolvedOut = try core.prepare(ctx, target: target, forced: nil, branchIndex: index, mayDefer: true, stateful: true)
            } catch .needsLookup(let name) {
                lookup = name
            } catch {
                firstError = firstError ?? error
                core.logger.info("branch to \(LogText(target.uri)) not created: \(error)")
                continue
            }
            let reliable = resolvedOut.map { $0.destination.proto != .udp } ?? false
            var refused: ProxyTransaction.BranchRefusal?
            var added: Int?
            let now = clock()
            shard.lock.lock()
            switch t.machine.addBranch(now: now, reliable: reliable, resolved: resolvedOut != nil) {
            case .failure(let why):
                refused = why
                shard.lock.unlock()
            case .success(let r):
                added = r.index
                while t.branches.count <= r.index { t.branches.append(BranchData(out: nil, target: target)) }
                t.branches[r.index] = BranchData(out: resolvedOut, target: target)
                if let out = resolvedOut { shard.clients[out.branch] = (t, r.index) }
                let e = effectsLocked(t, r.actions, shard: shard)
                shard.lock.unlock()
                perform(e, for: t)
            }
            if let refused {
                core.logger.info("no more branches for this request: \(refused)")
                if refused == .tooMany { continue }
                break
            }
            guard let i = added else { continue }
            created += 1
            if let name = lookup {
                // The branch is prepared on the look-up's thread: from a copy
                // made now, not from this context, which the request's
                // script may still be using and changing.
                let snapshot = ctx.snapshotForBranch()
                core.transport.dns.lookup(name, .naptr).whenComplete { [weak self, weak t] _ in
                    guard let self, let t else { return }
                    self.resolveBranch(t, i, ctx: snapshot)
                }
            }
        }
        if created == 0 {
            let (code, reason) = firstError?.status ?? (503, "Service Unavailable")
            ctx.lastError = (code, reason)
            if !modifyRead(t, { $0.failureRouteRunning }) {
                reply(t, code: code, reason: reason)
                ctx.replied = true
            }
            return false
        }
        return true
    }

    /// The look-up for an unresolved branch is done: prepare it now, and
    /// let the machine decide whether it still goes out.
    private func resolveBranch(_ t: ServerTransaction, _ i: Int, ctx: MessageContext) {
        let target = modifyRead(t) { _ in t.branches[i].target }
        ctx.transactionShard = t.shard
        do {
            let out = try core.prepare(ctx, target: target, forced: nil, branchIndex: i, mayDefer: false, stateful: true)
            modify(t) { m, now in
                t.branches[i].out = out
                shards[t.shard].clients[out.branch] = (t, i)
                return m.branchResolved(i, reliable: out.destination.proto != .udp, now: now)
            }
        } catch {
            core.logger.info("branch to \(LogText(target.uri)) not created: \(error)")
            modify(t) { m, now in m.branchFailed(i, now: now) }
        }
    }

    /// Branches still waiting for a final response whose request went over
    /// a connection that just failed end as if a 503 came; branches to the
    /// same address over another connection go on.
    func connectionFailed(_ c: SIPConnection, reason: CloseReason) {
        for shard in shards {
            let waiting: [(ServerTransaction, Int)] = shard.lock.withLock {
                shard.clients.values.filter { entry in
                    let (t, i) = entry
                    guard let d = t.branches[i].out?.destination, !t.machine.branches[i].isDone else { return false }
                    return d.proto == c.proto && (t.branches[i].connectionID == c.id || d.connectionID == c.id)
                }
            }
            for (t, i) in waiting {
                core.logger.info("\(c) failed (\(reason)); branch \(i) ends as if a 503 came")
                modify(t) { m, now in m.branchFailed(i, now: now) }
            }
        }
    }

    // MARK: Responses

    /// A response to one of our branches. True when it was ours.
    func handleResponse(_ r: ReceivedMessage, checked: SIPMessage.Checked? = nil) -> Bool {
        let m = r.message
        guard let via = checked?.topVia ?? (try? m.topVia()) ?? nil, let branch = via.branch,
              let cseq = checked?.cseq ?? (try? m.cseq()) ?? nil, let status = m.statusCode,
              let si = Matching.shard(ofBranch: branch, shards: shards.count) else { return false }
        let shard = shards[si]
        guard let entry = shard.lock.withLock({ shard.clients[branch] }) else { return false }
        let (t, i) = entry
        if cseq.method == .cancel {
            modify(t) { machine, now in machine.cancelResponse(status, branch: i, now: now) }
            return true
        }
        guard cseq.method == t.request.message.method else { return false }
        // onreply_route, outside the lock, on what the script left.
        var response = m
        var forward = true
        let (route, vars, flags) = shard.lock.withLock { (t.replyRoute, t.replyVars, t.replyFlags) }
        if let idx = route ?? core.script.mainReply {
            let rctx = MessageContext(received: r, checked: checked)
            rctx.routeKind = .reply
            rctx.status = status
            rctx.vars = vars
            rctx.flags = flags
            if core.run(block: idx, rctx) == .drop && status < 200 { forward = false }
            response = rctx.message
        }
        modify(t) { machine, now in
            // Keep a response only when the machine takes it: a provisional
            // before the branch's final, its final, or a further 2xx of an
            // accepted INVITE branch — never one it ignores.
            let before = machine.branches[i]
            let actions = machine.response(status, branch: i, now: now, forward: forward)
            let takes = before.finalStatus == nil ? (status >= 200 || forward)
                : (machine.isInvite && (200..<300).contains(status) && before.state == .accepted)
            if takes { t.branches[i].response = response }
            return actions
        }
        return true
    }
}
