import Foundation
import NIOConcurrencyHelpers
import NIOCore
import SIPConfig
import SIPCore
import SIPTransport

/// The server side of a proxied request (RFC 3261 §17.2, §16): absorbs
/// retransmissions, keeps the last response, collects the branches' final
/// responses and sends the best one up.
final class ServerTransaction {
    let key: TransactionKey
    let ctx: MessageContext
    let isInvite: Bool
    unowned let layer: TransactionLayer
    var lastResponse: [UInt8]?
    var lastStatus = 0
    var finalSent = false
    var canceled = false
    var branches: [ClientBranch] = []
    var best: (status: Int, message: SIPMessage?, reason: String)?
    var failureRouteRunning = false
    var retransmitTimer: TimerWheel.Timer?
    var retransmitInterval = 0
    /// When the transaction is forgotten; replaced (not added to) when a
    /// final response shortens its life, so the timer heap holds one task
    /// per transaction.
    var removalTimer: TimerWheel.Timer?

    init(key: TransactionKey, ctx: MessageContext, layer: TransactionLayer) {
        self.key = key
        self.ctx = ctx
        self.isInvite = ctx.received.message.method == .invite
        self.layer = layer
    }

    var request: ReceivedMessage { ctx.received }

    /// A locally generated reply (t_reply, 100 Trying, errors).
    func reply(code: Int, reason: String) {
        layer.locked { replyLocked(code: code, reason: reason) }
    }

    func replyLocked(code: Int, reason: String) {
        guard !finalSent else { return }
        let bytes = layer.core.replyBytes(to: request, request: ctx.requestForReplies, code: code, reason: reason, toTag: ctx.localTag, toHasTag: ctx.toHasTag)
        sendLocked(bytes, status: code)
    }

    /// Sends a response up (already with our Via removed) and remembers it.
    func sendLocked(_ bytes: [UInt8], status: Int) {
        lastResponse = bytes
        lastStatus = status
        if status >= 200 { finalSent = true }
        layer.replyLater(bytes, to: request) { [weak layer] e in
            layer?.core.logger.info("response \(status) not delivered to \(self.request.sourceIP):\(self.request.sourcePort): \(e)")
        }
        if status >= 200 {
            if isInvite && status >= 300 && request.proto == .udp {
                // Timer G: retransmit the final response until the ACK.
                retransmitInterval = layer.core.config.transactions.t1
                armRetransmit()
            }
            layer.scheduleRemoval(self, after: request.proto == .udp ? 32 : 5)
        }
    }

    private func armRetransmit() {
        let t2 = layer.core.config.transactions.t2
        retransmitTimer = layer.wheel.schedule(milliseconds: retransmitInterval) { [weak self] in
            guard let self else { return }
            self.layer.locked {
                guard let bytes = self.lastResponse, self.retransmitTimer != nil else { return }
                self.layer.replyLater(bytes, to: self.request)
                self.retransmitInterval = min(self.retransmitInterval * 2, t2)
                self.armRetransmit()
            }
        }
    }

    func ackReceived() {
        retransmitTimer?.cancel()
        retransmitTimer = nil
    }
}

/// One client branch of a proxied request (RFC 3261 §17.1).
final class ClientBranch {
    let out: OutgoingRequest
    unowned let server: ServerTransaction
    let isInvite: Bool
    var provisional = false
    var finalStatus: Int?
    var retransmitTimer: TimerWheel.Timer?
    var timeoutTimer: TimerWheel.Timer?
    var interval: Int
    var cancelSent = false
    var cancelPending = false

    init(out: OutgoingRequest, server: ServerTransaction, t1: Int) {
        self.out = out
        self.server = server
        self.isInvite = out.message.method == .invite
        self.interval = t1
    }

    var done: Bool { finalStatus != nil }
}

/// All transactions, under one lock; their timers on one wheel.
final class TransactionLayer {
    unowned let core: ProxyCore
    let lock = NIOLock()
    let loop: EventLoop
    private var servers: [TransactionKey: ServerTransaction] = [:]
    private var clients: [String: ClientBranch] = [:]

    /// Every transaction timer (retransmissions, fr/fr_inv, removal).
    let wheel: TimerWheel

    init(core: ProxyCore) {
        self.core = core
        self.loop = core.transport.group.next()
        self.wheel = TimerWheel(loop: loop)
    }

    var settings: TransactionSettings { core.config.transactions }

    // MARK: The lock and the outbox

    /// A write decided under the lock.
    enum Write {
        case reply([UInt8], ReceivedMessage, onFailure: ((Error) -> Void)?)
        case send([UInt8], Destination)
    }

    /// Writes decided under the lock, performed once it is released. A
    /// write on the current event loop can flush, read and deliver the
    /// next inbound message synchronously, which would take this
    /// (non-recursive) lock again.
    private var outbox: [Write] = []

    /// Runs `body` under the lock, then performs the writes it queued.
    func locked<T>(_ body: () -> T) -> T {
        lock.lock()
        let result = body()
        if outbox.isEmpty {
            lock.unlock()
            return result
        }
        let pending = outbox
        outbox = []
        lock.unlock()
        perform(pending)
        return result
    }

    /// Queues a response for after the lock (call with the lock held).
    func replyLater(_ bytes: [UInt8], to r: ReceivedMessage, onFailure: ((Error) -> Void)? = nil) {
        outbox.append(.reply(bytes, r, onFailure: onFailure))
    }

    /// Queues a request for after the lock (call with the lock held).
    func sendLater(_ bytes: [UInt8], to d: Destination) {
        outbox.append(.send(bytes, d))
    }

    private func perform(_ writes: [Write]) {
        for w in writes {
            switch w {
            case .reply(let bytes, let r, let onFailure):
                let f = core.transport.reply(bytes, to: r)
                if let onFailure { f.whenFailure(onFailure) }
            case .send(let bytes, let d):
                core.transport.send(bytes, to: d)
            }
        }
    }

    /// RFC 3261 §17.2.3: top Via branch and sent-by, and the method (ACK
    /// and CANCEL map to the INVITE's), or for RFC 2543 peers the To tag,
    /// From tag, Call-ID, CSeq number and top Via.
    func key(_ m: SIPMessage, method: SIPMethod? = nil, checked: SIPMessage.Checked? = nil) -> TransactionKey? {
        guard let via = checked?.topVia ?? (try? m.topVia()) ?? nil, let cseq = checked?.cseq ?? (try? m.cseq()) ?? nil else { return nil }
        let meth = method ?? (m.method ?? cseq.method)
        if via.hasRFC3261Branch {
            return TransactionKey(branch: via.branch!, host: via.host.lowercased(), port: via.port ?? 0, method: meth)
        }
        // RFC 2543 peers: Call-ID, tags, CSeq and the sent-by (RFC 3261 §17.2.3).
        let to = checked.map { $0.toTag } ?? (try? m.to())??.tag
        let from = checked.map { $0.fromTag } ?? (try? m.from())??.tag
        return TransactionKey(branch: "", host: via.host, port: via.port ?? 0, method: meth,
                              legacy: "\(m.callID ?? "")|\(from ?? "")|\(to ?? "")|\(cseq.number)")
    }

    func exists(for m: SIPMessage) -> Bool {
        let method: SIPMethod? = (m.method == .cancel || m.method == .ack) ? .invite : nil
        guard let k = key(m, method: method) else { return false }
        return locked { servers[k] != nil }
    }

    /// Handles retransmissions, ACKs to non-2xx finals and CANCELs of
    /// known transactions. True when the request needs nothing more.
    func absorb(_ r: ReceivedMessage, checked: SIPMessage.Checked? = nil) -> Bool {
        // No server transaction at all (a proxy answering statelessly): no
        // key to build.
        if locked({ servers.isEmpty }) { return false }
        let m = r.message
        switch m.method {
        case .ack?:
            guard let k = key(m, method: .invite, checked: checked) else { return false }
            return locked {
                guard let t = servers[k], t.finalSent, t.lastStatus >= 300 else { return false }
                t.ackReceived()
                return true
            }
        case .cancel?:
            guard let k = key(m, method: .invite, checked: checked) else { return false }
            let t = locked { servers[k] }
            guard let t else { return false }
            // 200 for the CANCEL itself, then cancel every branch.
            core.sendReply(to: r, request: m, code: 200, reason: "OK")
            locked {
                t.canceled = true
                for b in t.branches where !b.done { cancelLocked(b) }
                if t.branches.allSatisfy({ $0.done }) && !t.finalSent {
                    t.replyLocked(code: 487, reason: "Request Terminated")
                }
            }
            return true
        default:
            guard let k = key(m, checked: checked) else { return false }
            return locked {
                guard let t = servers[k] else { return false }
                if let bytes = t.lastResponse { replyLater(bytes, to: r) }
                return true
            }
        }
    }

    /// t_newtran(): the server transaction for the request being processed.
    @discardableResult
    func newServerTransaction(_ ctx: MessageContext) -> ServerTransaction? {
        if let t = ctx.transaction { return t }
        guard ctx.received.message.method != .ack, let k = key(ctx.received.message, checked: ctx.checked) else { return nil }
        return locked {
            if let t = servers[k] {
                ctx.transaction = t
                return t
            }
            let t = ServerTransaction(key: k, ctx: ctx, layer: self)
            servers[k] = t
            ctx.transaction = t
            // A transaction the script never answers (t_newtran without a
            // reply) must not stay forever: drop it after the longest timer.
            let longest = Int64(max(settings.finalResponseTimeout, settings.inviteFinalResponseTimeout) / 1000) + 64
            scheduleRemoval(t, after: longest)
            return t
        }
    }

    func scheduleRemoval(_ t: ServerTransaction, after seconds: Int64) {
        t.removalTimer?.cancel()
        t.removalTimer = wheel.schedule(milliseconds: Int(seconds) * 1000) { [weak self, weak t] in
            guard let self, let t else { return }
            self.locked {
                t.retransmitTimer?.cancel()
                self.servers[t.key] = nil
                for b in t.branches {
                    b.retransmitTimer?.cancel()
                    b.timeoutTimer?.cancel()
                    self.clients[self.clientKey(b.out.branch, b.out.message.method ?? .invite)] = nil
                }
            }
        }
    }

    func clientKey(_ branch: String, _ method: SIPMethod) -> String { "\(branch)|\(method.name)" }

    // MARK: t_relay

    /// t_relay(): forwards the request statefully to every target. False
    /// when no branch could be sent (the script may then reply).
    func relay(_ ctx: MessageContext) -> Bool {
        let m = ctx.received.message
        // ACK (to a 2xx) and CANCEL without a transaction go on statelessly.
        if m.method == .ack || m.method == .cancel {
            return core.forwardStateless(ctx, forced: nil)
        }
        guard let t = newServerTransaction(ctx) else { return false }
        if t.isInvite && t.lastResponse == nil && !t.failureRouteRunning {
            t.reply(code: 100, reason: "Trying")
        }
        let targets = ctx.targets.isEmpty ? [Target(uri: ctx.message.requestURIString ?? "", destination: nil)] : ctx.targets
        ctx.targets = []
        return createBranches(ctx, t, targets, mayDefer: !t.failureRouteRunning)
    }

    /// One client branch per target. A target whose next hop needs a NAPTR
    /// look-up first (RFC 3263 §4.1) gets its branch when the answer is in;
    /// the server transaction already absorbs retransmissions meanwhile.
    /// In failure_route no branch is deferred (the route's outcome must be
    /// known when it ends): the default transport is used instead.
    private func createBranches(_ ctx: MessageContext, _ t: ServerTransaction, _ targets: [Target], mayDefer: Bool) -> Bool {
        var sent = 0
        var firstError: ProxyCore.ForwardError?
        var deferred: [(Target, String)] = []
        for target in targets {
            let index = locked { t.branches.count }
            let out: OutgoingRequest
            do {
                out = try core.prepare(ctx, target: target, forced: nil, branchIndex: index, mayDefer: mayDefer)
            } catch .needsLookup(let name) {
                deferred.append((target, name))
                continue
            } catch {
                firstError = firstError ?? error
                core.logger.info("branch to \(target.uri) not created: \(error)")
                continue
            }
            let b = ClientBranch(out: out, server: t, t1: settings.t1)
            locked {
                t.branches.append(b)
                clients[clientKey(out.branch, out.message.method ?? .invite)] = b
                startTimers(b)
            }
            send(b)
            sent += 1
        }
        if !deferred.isEmpty {
            let lookups = deferred.map { core.transport.dns.lookup($0.1, .naptr).map { _ in () }.recover { _ in () } }
            EventLoopFuture.andAllComplete(lookups, on: loop).whenComplete { [weak self, weak t] _ in
                guard let self, let t else { return }
                let created = self.createBranches(ctx, t, deferred.map(\.0), mayDefer: false)
                // Nothing went out at all: answer the request now.
                if !created && sent == 0 && self.locked({ t.branches.isEmpty }) && !t.finalSent {
                    let (code, reason) = firstError?.status ?? (503, "Service Unavailable")
                    t.reply(code: code, reason: reason)
                }
            }
            return true
        }
        if sent == 0, let e = firstError {
            ctx.lastError = e.status
            if !t.failureRouteRunning {
                t.reply(code: e.status.0, reason: e.status.1)
                ctx.replied = true
            }
            return false
        }
        return sent > 0
    }

    private func send(_ b: ClientBranch) {
        core.logger.debug("t_relay \(b.out.message.method?.name ?? "") to \(b.out.destination) branch \(b.out.branch)")
        core.transport.send(b.out.bytes, to: b.out.destination).whenFailure { [weak self, weak b] e in
            guard let self, let b else { return }
            self.core.logger.info("request to \(b.out.destination) failed: \(e)")
            self.locked { self.branchFinalLocked(b, status: 503, reason: "Service Unavailable", message: nil) }
        }
    }

    private func startTimers(_ b: ClientBranch) {
        let fr = settings.finalResponseTimeout
        b.timeoutTimer = wheel.schedule(milliseconds: fr) { [weak self, weak b] in
            guard let self, let b else { return }
            self.locked { self.timeoutLocked(b) }
        }
        if b.out.destination.proto == .udp { armRetransmit(b) }
    }

    private func armRetransmit(_ b: ClientBranch) {
        b.retransmitTimer = wheel.schedule(milliseconds: b.interval) { [weak self, weak b] in
            guard let self, let b else { return }
            self.locked {
                guard !b.done, !(b.isInvite && b.provisional) else { return }
                self.sendLater(b.out.bytes, to: b.out.destination)
                b.interval = b.isInvite ? b.interval * 2 : min(b.interval * 2, self.settings.t2)
                self.armRetransmit(b)
            }
        }
    }

    private func timeoutLocked(_ b: ClientBranch) {
        guard !b.done else { return }
        if b.isInvite && b.provisional { cancelLocked(b) }
        core.logger.info("no final response from \(b.out.destination) in time: 408")
        branchFinalLocked(b, status: 408, reason: "Request Timeout", message: nil)
    }

    /// Sends CANCEL for a branch (RFC 3261 §9.1), or waits for its first
    /// provisional response.
    private func cancelLocked(_ b: ClientBranch) {
        guard b.isInvite, !b.cancelSent, !b.done else { return }
        guard b.provisional else {
            b.cancelPending = true
            return
        }
        b.cancelSent = true
        sendLater(hopByHop(.cancel, for: b, to: b.out.message.header(.to)), to: b.out.destination)
    }

    /// ACK for a non-2xx final response to an INVITE (RFC 3261 §17.1.1.3).
    private func ackLocked(_ b: ClientBranch, response: SIPMessage) {
        sendLater(hopByHop(.ack, for: b, to: response.header(.to)), to: b.out.destination)
    }

    /// CANCEL or ACK for a branch: its Request-URI, its own Via only, From,
    /// the given To, Call-ID, its Route set, the INVITE's CSeq number.
    private func hopByHop(_ method: SIPMethod, for b: ClientBranch, to: SIPHeaderField?) -> [UInt8] {
        let r = b.out.message
        var text = "\(method.name) \(r.requestURIString ?? "") SIP/2.0\r\n"
        if let via = r.header(.via) { text += "Via: \(SIPHeaderField.firstValueString(via.value))\r\n" }
        if let h = r.header(.from) { text += "From: \(h.valueString)\r\n" }
        if let to { text += "To: \(to.valueString)\r\n" }
        if let h = r.header(.callID) { text += "Call-ID: \(h.valueString)\r\n" }
        for h in r.headers(.route) { text += "Route: \(h.valueString)\r\n" }
        text += "CSeq: \(((try? r.cseq()) ?? nil)?.number ?? 1) \(method.name)\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        return Array(text.utf8)
    }

    /// Branches still waiting for a final response over a connection that
    /// just failed end with 503.
    func connectionFailed(_ c: SIPConnection, reason: String) {
        let ip = c.remote.ipAddress ?? ""
        let port = c.remote.port ?? 0
        locked {
            let waiting = clients.values.filter { b in
                !b.done && b.out.destination.proto == c.proto && Int(b.out.destination.port) == port
                    && (b.out.destination.host == ip || b.out.destination.address?.ipAddress == ip || b.out.destination.connectionID == c.id)
            }
            for b in waiting {
                core.logger.info("\(c) failed (\(reason)); branch to \(b.out.destination) ends with 503")
                branchFinalLocked(b, status: 503, reason: "Service Unavailable", message: nil)
            }
        }
    }

    // MARK: Responses

    /// A response to one of our branches. True when it was ours.
    func handleResponse(_ r: ReceivedMessage, checked: SIPMessage.Checked? = nil) -> Bool {
        let m = r.message
        guard let via = checked?.topVia ?? (try? m.topVia()) ?? nil, let branch = via.branch, let cseq = checked?.cseq ?? (try? m.cseq()) ?? nil else { return false }
        if cseq.method == .cancel {
            // The answer to a CANCEL we sent: nothing to pass on.
            return locked { clients[clientKey(branch, .invite)] != nil }
        }
        guard let status = m.statusCode else { return false }
        let b = locked { clients[clientKey(branch, cseq.method)] }
        guard let b else { return false }
        let t = b.server
        // onreply_route
        var response = m
        if let idx = t.ctx.replyRoute ?? core.script.mainReply {
            let rctx = MessageContext(received: r, checked: checked)
            rctx.routeKind = .reply
            rctx.status = status
            rctx.vars = t.ctx.vars
            rctx.flags = t.ctx.flags
            if core.run(block: idx, rctx) == .drop && status < 200 { return true }
            response = rctx.message
        }
        locked {
            if status < 200 {
                guard !b.done else { return }
                let first = !b.provisional
                b.provisional = true
                b.retransmitTimer?.cancel()
                if first && b.isInvite {
                    // fr_inv_timer now bounds the wait for a final response.
                    b.timeoutTimer?.cancel()
                    b.timeoutTimer = wheel.schedule(milliseconds: settings.inviteFinalResponseTimeout) { [weak self, weak b] in
                        guard let self, let b else { return }
                        self.locked { self.timeoutLocked(b) }
                    }
                }
                if b.cancelPending { cancelLocked(b) }
                if status > 100 && !t.finalSent && !t.canceled {
                    var up = response
                    up.popFirstValue(.via)
                    t.sendLocked(up.serialized(), status: status)
                }
                return
            }
            if status < 300 {
                // 2xx: passed on at once, every one of them (RFC 3261 §16.7 step 5).
                let firstFinal = !b.done
                b.finalStatus = status
                b.retransmitTimer?.cancel()
                b.timeoutTimer?.cancel()
                var up = response
                up.popFirstValue(.via)
                t.sendLocked(up.serialized(), status: status)
                if firstFinal && t.isInvite { for other in t.branches where other !== b && !other.done { cancelLocked(other) } }
                return
            }
            if b.done { return } // retransmission of a final
            if b.isInvite { ackLocked(b, response: m) }
            if status >= 600 && t.isInvite { for other in t.branches where other !== b && !other.done { cancelLocked(other) } }
            branchFinalLocked(b, status: status, reason: m.reasonPhrase ?? "", message: response)
        }
        return true
    }

    /// A branch ended with a final non-2xx (received or made up); when all
    /// have, runs failure_route or sends the best response up.
    func branchFinalLocked(_ b: ClientBranch, status: Int, reason: String, message: SIPMessage?) {
        guard !b.done else { return }
        b.finalStatus = status
        b.retransmitTimer?.cancel()
        b.timeoutTimer?.cancel()
        let t = b.server
        if t.best == nil || better(status, than: t.best!.status) { t.best = (status, message, reason) }
        guard t.branches.allSatisfy({ $0.done }), !t.finalSent else { return }
        if t.branches.contains(where: { ($0.finalStatus ?? 0) < 300 && ($0.finalStatus ?? 0) >= 200 }) { return }
        // failure_route: the script may relay again (serial forking).
        if let idx = t.ctx.failureRoute, !t.canceled {
            t.ctx.failureRoute = nil
            t.ctx.status = t.best?.status
            t.failureRouteRunning = true
            let before = t.branches.count
            let pending = outbox
            outbox = []
            lock.unlock()
            perform(pending)
            let prevKind = t.ctx.routeKind
            _ = core.run(block: idx, t.ctx)
            t.ctx.routeKind = prevKind
            lock.lock()
            t.failureRouteRunning = false
            if t.finalSent { return }
            if t.branches.count > before && !t.branches.allSatisfy({ $0.done }) { return }
        }
        sendBestLocked(t)
    }

    private func sendBestLocked(_ t: ServerTransaction) {
        guard !t.finalSent, let best = t.best else { return }
        if t.canceled {
            t.replyLocked(code: 487, reason: "Request Terminated")
            return
        }
        if var m = best.message {
            if best.status == 503 {
                // RFC 3261 §16.7 step 6: a 503 from downstream goes up as 500.
                t.replyLocked(code: 500, reason: "Server Internal Error")
                return
            }
            m.popFirstValue(.via)
            t.sendLocked(m.serialized(), status: best.status)
        } else {
            t.replyLocked(code: best.status, reason: best.reason)
        }
    }

    /// RFC 3261 §16.7 step 6: 6xx first, then the lowest class, 4xx over 5xx.
    private func better(_ a: Int, than b: Int) -> Bool {
        func rank(_ s: Int) -> Int {
            switch s / 100 {
            case 6: return 0
            case 2: return -1
            case 3: return 1
            case 4: return s == 408 ? 4 : 2
            case 5: return s == 503 ? 5 : 3
            default: return 6
            }
        }
        return rank(a) < rank(b)
    }
}

extension SIPHeaderField {
    /// The first value of a list header as text.
    static func firstValueString(_ v: ArraySlice<UInt8>) -> String {
        String(decoding: firstListValue(v), as: UTF8.self)
    }
}

/// What identifies a server transaction (RFC 3261 §17.2.3): the branch,
/// sent-by and method of the top Via, or for RFC 2543 peers the dialog
/// identifiers and CSeq. Hashed as fields, no string built per request.
struct TransactionKey: Hashable, Sendable {
    var branch: String
    var host: String
    var port: UInt16
    var method: SIPMethod
    var legacy: String? = nil
}
