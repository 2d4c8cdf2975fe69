import SIPConfig
import Testing
@testable import SIPProxy

/// Drives one `ProxyTransaction` on a clock the test owns: each step
/// either feeds an event or moves the time to the next deadline and fires
/// it, and keeps every action for the assertions. No sockets, no sleeps.
struct Drive {
    var t: ProxyTransaction
    var now: Millis = 0
    var actions: [(at: Millis, a: ProxyTransaction.Actions)] = []

    init(invite: Bool = true, upstreamReliable: Bool = false, settings: TimerSettings = TimerSettings()) {
        t = ProxyTransaction(isInvite: invite, upstreamReliable: upstreamReliable, settings: settings, now: 0)
    }

    mutating func record(_ a: ProxyTransaction.Actions) { actions.append((now, a)) }

    @discardableResult
    mutating func branch(reliable: Bool = false, resolved: Bool = true) -> Int {
        switch t.addBranch(now: now, reliable: reliable, resolved: resolved) {
        case .success(let r):
            record(r.actions)
            return r.index
        case .failure:
            return -1
        }
    }

    mutating func respond(_ status: Int, on b: Int) { record(t.response(status, branch: b, now: now)) }
    /// A failure_route armed, one branch, answered 486: the route is due.
    mutating func branchAnswered486WithFailureRoute() -> Int {
        t.failureRouteArmed = true
        let b = branch()
        respond(486, on: b)
        return b
    }
    mutating func reply(_ status: Int) { record(t.reply(status, now: now).actions) }
    mutating func cancel() { record(t.cancel(now: now)) }

    /// Moves the clock to each deadline up to `limit` in turn.
    mutating func run(until limit: Millis) {
        while let d = t.nextDeadline, d <= limit {
            now = max(now, d)
            record(t.advance(now: now))
        }
        now = max(now, limit)
    }

    /// Times at which branch `b`'s request was sent.
    func sends(_ b: Int) -> [Millis] { actions.filter { $0.a.sendRequests.contains(b) }.map(\.at) }
    func cancels(_ b: Int) -> [Millis] { actions.filter { $0.a.sendCancels.contains(b) }.map(\.at) }
    func acks(_ b: Int) -> Int { actions.filter { $0.a.sendAcks.contains(b) }.count }
    var upstream: [ProxyTransaction.Upstream] { actions.compactMap(\.a.upstream) }
    var upstreamFinals: [Int] {
        upstream.compactMap { u in
            switch u {
            case .forward(_, let s), .local(let s): return s >= 200 ? s : nil
            }
        }
    }
    var resends: [Millis] { actions.filter(\.a.resendUpstream).map(\.at) }
    var removed: Bool { actions.contains { $0.a.remove } }
}

@Suite("Transaction machines: RFC 3261 §16-17 and RFC 6026 on an injected clock")
struct TransactionMachineTests {
    @Test("Timer A doubles from T1 over UDP until Timer B, which ends the branch as a 408 (§17.1.1.2)")
    func timerAandB() {
        var d = Drive()
        let b = d.branch()
        d.run(until: 40_000)
        #expect(d.sends(b) == [0, 500, 1_500, 3_500, 7_500, 15_500])
        #expect(d.upstreamFinals == [408])
    }

    @Test("No retransmission over a reliable transport; Timer B still applies")
    func reliableNoRetransmit() {
        var d = Drive()
        let b = d.branch(reliable: true)
        d.run(until: 29_999)
        #expect(d.sends(b) == [0])
        #expect(d.upstreamFinals.isEmpty)
        d.run(until: 30_000)
        #expect(d.upstreamFinals == [408])
    }

    @Test("A provisional stops INVITE retransmissions (§17.1.1.2)")
    func provisionalStopsInvite() {
        var d = Drive()
        let b = d.branch()
        d.run(until: 1_000)
        d.respond(180, on: b)
        d.run(until: 20_000)
        #expect(d.sends(b) == [0, 500])
        #expect(d.upstream == [.forward(branch: b, status: 180)])
    }

    @Test("A non-INVITE client keeps retransmitting at T2 after a 1xx until Timer F (§17.1.2.2)")
    func nonInviteAfterProvisional() {
        var d = Drive(invite: false)
        let b = d.branch()
        d.run(until: 4_000)
        d.respond(180, on: b)
        d.run(until: 40_000)
        // 0, 500, 1500, 3500, then every T2 from the last.
        #expect(d.sends(b) == [0, 500, 1_500, 3_500, 7_500, 11_500, 15_500, 19_500, 23_500, 27_500])
        #expect(d.upstreamFinals == [408])
    }

    @Test("Every retransmission of a non-2xx final is ACKed again; it goes up once (§17.1.1.2)")
    func ackEveryRetransmission() {
        var d = Drive()
        let b = d.branch()
        d.respond(486, on: b)
        d.respond(486, on: b)
        d.respond(486, on: b)
        #expect(d.acks(b) == 3)
        #expect(d.upstreamFinals == [486])
    }

    @Test("Timer D is 32 s over UDP and 0 over a stream; then the branch is gone")
    func timerD() {
        var u = Drive(upstreamReliable: true)
        let b = u.branch()
        u.respond(486, on: b)
        u.run(until: 31_999)
        #expect(u.t.branches[b].state == .completed)
        u.respond(486, on: b)
        #expect(u.acks(b) == 2)
        u.run(until: 32_000)
        #expect(u.t.branches[b].state == .terminated)

        var r = Drive(upstreamReliable: true)
        let c = r.branch(reliable: true)
        r.respond(486, on: c)
        r.run(until: 0)
        #expect(r.t.branches[c].state == .terminated)
    }

    @Test("Timer K is T4 over UDP and 0 over a stream (by the downstream transport); retransmitted finals are absorbed meanwhile")
    func timerK() {
        var u = Drive(invite: false, upstreamReliable: true)
        let b = u.branch()
        u.respond(404, on: b)
        #expect(u.t.branches[b].state == .completed)
        u.run(until: 4_999)
        u.respond(404, on: b)
        #expect(u.upstreamFinals == [404])
        #expect(u.t.branches[b].state == .completed)
        u.run(until: 5_000)
        #expect(u.t.branches[b].state == .terminated)

        var r = Drive(invite: false, upstreamReliable: false)
        let c = r.branch(reliable: true)
        r.respond(404, on: c)
        r.run(until: 0)
        #expect(r.t.branches[c].state == .terminated)
    }

    @Test("T1, T2, T4, fr_timer, fr_inv_timer and max_branches come from the config; Timer C is more than 3 minutes by default (§16.6 step 11)")
    func settingsFromConfig() {
        let defaults = Config(file: "t.cfg", configDirectory: "/tmp").transactions
        #expect(TimerSettings(defaults).timerC > 180_000)
        var c = defaults
        c.t1 = 250
        c.t2 = 2_000
        c.t4 = 3_000
        c.finalResponseTimeout = 10_000
        c.inviteFinalResponseTimeout = 200_000
        c.maxBranches = 4
        let s = TimerSettings(c)
        #expect(s.t1 == 250 && s.t2 == 2_000 && s.t4 == 3_000 && s.finalResponse == 10_000 && s.timerC == 200_000 && s.maxBranches == 4)
        #expect(s.sixtyFourT1 == 16_000)
        // Timer A runs from the configured T1.
        var d = Drive(settings: s)
        let b = d.branch()
        d.run(until: 10_000)
        #expect(d.sends(b) == [0, 250, 750, 1_750, 3_750, 7_750])
    }

    @Test("RFC 6026: a 2xx is forwarded, never retransmitted by the proxy; more 2xx go up; the INVITE's retransmissions are absorbed")
    func rfc6026() {
        var d = Drive()
        let a = d.branch()
        let b = d.branch()
        d.respond(180, on: a)
        d.respond(200, on: a)
        #expect(d.t.server.state == .accepted)
        #expect(d.t.requestRetransmitted(now: d.now).resendUpstream == false)
        // The other branch is cancelled once it has a provisional.
        d.respond(180, on: b)
        #expect(d.cancels(b) == [0])
        // The 2xx retransmitted by the callee, and a 2xx from the other fork, go up.
        d.respond(200, on: a)
        d.respond(200, on: b)
        #expect(d.upstreamFinals == [200, 200, 200])
        d.run(until: 100_000)
        #expect(d.resends.isEmpty)
        #expect(d.removed)
    }

    @Test("A forked non-INVITE passes up only its first final")
    func forkedMessage() {
        var d = Drive(invite: false)
        let a = d.branch()
        let b = d.branch()
        d.respond(200, on: a)
        d.respond(202, on: b)
        d.respond(404, on: b)
        #expect(d.upstreamFinals == [200])
    }

    @Test("Best response: 6xx before anything, then the lowest class; 4xx before 5xx (§16.7 step 6)")
    func bestResponse() {
        func best(_ statuses: [Int]) -> Int? {
            var d = Drive()
            let bs = statuses.map { _ in d.branch() }
            for (b, s) in zip(bs, statuses) { d.respond(s, on: b) }
            return d.upstreamFinals.last
        }
        #expect(best([486, 603, 302]) == 603)
        #expect(best([500, 486]) == 486)
        #expect(best([404, 302]) == 302)
        #expect(best([503, 503]) == 500)
        #expect(best([408, 404]) == 404)
        #expect(best([404, 401]) == 401)
    }

    @Test("A 6xx cancels the other branches at once")
    func sixxxCancels() {
        var d = Drive()
        let a = d.branch()
        let b = d.branch()
        d.respond(180, on: b)
        d.respond(603, on: a)
        #expect(d.cancels(b) == [0])
        #expect(d.upstreamFinals.isEmpty)
        d.respond(487, on: b)
        #expect(d.upstreamFinals == [603])
        #expect(d.acks(b) == 1)
    }

    @Test("503 from downstream, or made here after a transport error, goes up as 500 (§16.7 step 6)")
    func fiveOhThree() {
        var d = Drive()
        let a = d.branch()
        d.record(d.t.branchFailed(a, now: 0))
        #expect(d.upstream == [.local(status: 500)])
    }

    @Test("The challenges of every 401/407 are merged into the chosen one (§16.7 step 7)")
    func mergeChallenges() {
        var d = Drive()
        let a = d.branch()
        let b = d.branch()
        let c = d.branch()
        d.respond(401, on: a)
        d.respond(404, on: b)
        d.respond(407, on: c)
        let last = d.actions.last!.a
        #expect(last.upstream == .forward(branch: a, status: 401))
        #expect(Array(last.mergeChallenges) == [c])
    }

    @Test("Timer C is restarted by every provisional; when it fires a CANCEL goes out, and 64*T1 later the branch ends as 408")
    func timerC() {
        var s = TimerSettings()
        s.timerC = 181_000
        var d = Drive(settings: s)
        let b = d.branch()
        d.respond(180, on: b)
        d.run(until: 100_000)
        d.respond(183, on: b)
        d.run(until: 280_999)
        #expect(d.cancels(b).isEmpty)
        d.run(until: 312_999)
        #expect(d.cancels(b) == [281_000, 281_500, 282_500, 284_500, 288_500, 292_500, 296_500, 300_500, 304_500, 308_500, 312_500])
        #expect(d.upstreamFinals.isEmpty)
        d.run(until: 313_000)
        #expect(d.upstreamFinals == [408])
    }

    @Test("Provisionals are forwarded even after a CANCEL; the callee's 487 is ACKed and goes up")
    func provisionalAfterCancel() {
        var d = Drive()
        let b = d.branch()
        d.respond(180, on: b)
        d.cancel()
        #expect(d.cancels(b) == [0])
        d.respond(183, on: b)
        d.record(d.t.cancelResponse(200, branch: b, now: d.now))
        d.respond(487, on: b)
        #expect(d.upstream == [.forward(branch: b, status: 180), .forward(branch: b, status: 183), .forward(branch: b, status: 487)])
        #expect(d.acks(b) == 1)
        d.run(until: 10_000)
        #expect(d.cancels(b) == [0]) // its 200 stopped the CANCEL's retransmissions
    }

    @Test("CANCEL is its own client transaction: retransmitted by Timer E over UDP until Timer F")
    func cancelRetransmitted() {
        var d = Drive()
        let b = d.branch()
        d.respond(180, on: b)
        d.cancel()
        d.run(until: 40_000)
        #expect(d.cancels(b) == [0, 500, 1_500, 3_500, 7_500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500])
        #expect(d.upstreamFinals == [408])
    }

    @Test("A CANCEL before any provisional is held, sent when one comes, and not sent if a final comes first (§9.1)")
    func cancelHeld() {
        var d = Drive()
        let a = d.branch()
        let b = d.branch()
        d.cancel()
        #expect(d.cancels(a).isEmpty && d.cancels(b).isEmpty)
        d.respond(180, on: a)
        #expect(d.cancels(a) == [0])
        d.respond(486, on: b)
        #expect(d.cancels(b).isEmpty)
    }

    @Test("No branch after a CANCEL, a branch still resolving is dropped unsent, and 487 goes up")
    func noBranchAfterCancel() {
        var d = Drive()
        let b = d.branch(resolved: false)
        d.cancel()
        #expect(d.branch() == -1)
        d.record(d.t.branchResolved(b, reliable: false, now: d.now))
        #expect(d.sends(b).isEmpty)
        #expect(d.upstreamFinals == [487])
    }

    @Test("No branch after a final went upstream")
    func noBranchAfterFinal() {
        var d = Drive()
        d.reply(404)
        #expect(d.branch() == -1)
    }

    @Test("max_branches caps forking")
    func maxBranches() {
        var s = TimerSettings()
        s.maxBranches = 3
        var d = Drive(settings: s)
        #expect((0..<5).map { _ in d.branch() } == [0, 1, 2, -1, -1])
    }

    @Test("failure_route runs as an action when every branch failed; its new branch answers later (serial forking)")
    func failureRoute() {
        var d = Drive()
        d.t.failureRouteArmed = true
        let a = d.branch()
        d.respond(180, on: a)
        d.run(until: 180_000 + 32_000 + 1)
        let runs = d.actions.filter(\.a.runFailureRoute).count
        #expect(runs == 1)
        #expect(d.upstreamFinals.isEmpty)
        let b = d.branch()
        d.record(d.t.failureRouteFinished(now: d.now))
        #expect(d.upstreamFinals.isEmpty)
        d.respond(200, on: b)
        #expect(d.upstreamFinals == [200])
    }

    @Test("failure_route that adds nothing: the best response goes up when it ends")
    func failureRouteNothing() {
        var d = Drive()
        let a = d.branchAnswered486WithFailureRoute()
        #expect(d.actions.last!.a.runFailureRoute)
        d.record(d.t.failureRouteFinished(now: d.now))
        #expect(d.upstreamFinals == [486])
    }

    @Test("Server side: a non-2xx final is retransmitted by Timer G up to T2 until the ACK; then Timer I, then removal")
    func serverTimerG() {
        var d = Drive()
        let b = d.branch(reliable: true)
        d.respond(486, on: b)
        d.run(until: 9_000)
        #expect(d.resends == [500, 1_500, 3_500, 7_500])
        #expect(d.t.ackReceived(now: 9_000).absorbed)
        d.run(until: 13_999)
        #expect(d.resends.count == 4)
        #expect(!d.removed)
        d.run(until: 14_000)
        #expect(d.removed)
    }

    @Test("Server side: without an ACK, Timer H ends it at 64*T1")
    func serverTimerH() {
        var d = Drive()
        let b = d.branch(reliable: true)
        d.respond(486, on: b)
        d.run(until: 31_999)
        #expect(!d.removed)
        d.run(until: 32_000)
        #expect(d.removed)
        #expect(d.t.nextDeadline == nil)
    }

    @Test("Server side, non-INVITE: retransmissions get the last response; Timer J ends it (0 on a stream)")
    func serverNonInvite() {
        var d = Drive(invite: false)
        #expect(d.t.requestRetransmitted(now: 0).resendUpstream == false)
        let b = d.branch(reliable: true)
        d.respond(180, on: b)
        #expect(d.t.requestRetransmitted(now: 0).resendUpstream)
        d.respond(200, on: b)
        #expect(d.t.requestRetransmitted(now: 0).resendUpstream)
        d.run(until: 31_999)
        #expect(!d.removed)
        d.run(until: 32_000)
        #expect(d.removed)

        var r = Drive(invite: false, upstreamReliable: true)
        let c = r.branch(reliable: true)
        r.respond(200, on: c)
        r.run(until: 0)
        #expect(r.removed)
    }

    @Test("A transaction nobody answers is dropped after the longest timer")
    func abandoned() {
        var d = Drive()
        d.run(until: 1_000_000)
        #expect(d.removed)
    }

    @Test("A provisional the onreply_route drops still stops retransmissions and starts Timer C; nothing goes up")
    func droppedProvisional() {
        var d = Drive()
        let b = d.branch()
        d.record(d.t.response(183, branch: b, now: 0, forward: false))
        d.run(until: 60_000)
        #expect(d.sends(b) == [0])
        #expect(d.upstream.isEmpty)
        #expect(d.t.branches[b].state == .proceeding)
    }

    @Test("After our CANCEL was answered, more provisionals do not restart Timer C: 64*T1 bounds the wait (§9.1)")
    func noTimerCAfterCancel() {
        var d = Drive()
        let b = d.branch()
        d.respond(180, on: b)
        d.cancel()
        d.record(d.t.cancelResponse(200, branch: b, now: 0))
        d.run(until: 20_000)
        d.respond(180, on: b)
        d.run(until: 32_000)
        #expect(d.upstreamFinals == [408])
    }

    @Test("100 Trying stops retransmissions but does not start Timer C; Timer B still ends a branch that says nothing more")
    func hundredIsNotTimerC() {
        var d = Drive()
        let b = d.branch()
        d.respond(100, on: b)
        d.run(until: 30_000)
        // Timer B fired in Proceeding: a CANCEL, then 64*T1 for the final.
        #expect(d.cancels(b).first == 30_000)
        d.run(until: 62_000)
        #expect(d.upstreamFinals == [408])
    }

    @Test("A failure_route that re-arms itself and whose new branch fails at once runs again")
    func failureRouteRearmed() {
        var d = Drive()
        let a = d.branchAnswered486WithFailureRoute()
        #expect(d.actions.last!.a.runFailureRoute)
        d.t.failureRouteArmed = true
        let b = d.branch()
        d.record(d.t.branchFailed(b, now: 0))
        d.record(d.t.failureRouteFinished(now: 0))
        #expect(d.actions.last!.a.runFailureRoute)
        #expect(d.upstreamFinals.isEmpty)
        d.record(d.t.failureRouteFinished(now: 0))
        #expect(d.upstreamFinals == [486])
    }

    // MARK: What the shell holds past the final

    @Test("Accepted (2xx) needs no context, last response, branch octets or branch response; the 2xx retransmission still goes up; removal only after Timer L")
    func acceptedHoldsLittle() {
        var d = Drive(upstreamReliable: true)
        let b = d.branch()
        #expect(d.t.needsContext && d.t.needsLastResponse && d.t.needsRequestOctets(b) && d.t.needsResponse(b))
        d.respond(100, on: b)
        d.respond(180, on: b)
        #expect(d.t.needsContext && d.t.needsLastResponse && d.t.needsRequestOctets(b) && d.t.needsResponse(b))
        d.respond(200, on: b)
        #expect(!d.t.needsContext)
        #expect(!d.t.needsLastResponse)
        #expect(!d.t.needsRequestOctets(b))
        #expect(!d.t.needsResponse(b))
        // What Accepted does needs none of them: absorb the INVITE again,
        // forward the callee's 2xx again (the shell stores it as it comes).
        #expect(d.t.requestRetransmitted(now: d.now).resendUpstream == false)
        d.respond(200, on: b)
        #expect(d.upstreamFinals == [200, 200])
        d.run(until: 31_999)
        #expect(!d.removed)
        d.run(until: 33_000)
        #expect(d.removed)
        #expect(!d.t.needsRequestOctets(7) && !d.t.needsResponse(7))
    }

    @Test("A non-2xx final over UDP keeps the last response until the ACK, and the branch's response while its final may be retransmitted")
    func completedKeepsWhatItResends() {
        var d = Drive(upstreamReliable: false)
        let b = d.branch()
        d.respond(486, on: b)
        #expect(d.upstreamFinals == [486])
        #expect(!d.t.needsContext)
        #expect(d.t.needsLastResponse)       // Timer G, a retransmitted INVITE
        #expect(!d.t.needsRequestOctets(b))
        #expect(d.t.needsResponse(b))         // a retransmitted 486 is ACKed with its To
        d.run(until: 500)
        #expect(d.resends == [500])
        d.record(d.t.ackReceived(now: d.now).actions)
        #expect(!d.t.needsLastResponse)
        d.run(until: 40_000)                  // Timer D (32 s over UDP)
        #expect(!d.t.needsResponse(b))
    }

    @Test("Forked: a branch still calling after the 2xx keeps its octets (retransmissions, then its CANCEL) and its 487 is ACKed")
    func forkedPastTheFinal() {
        var d = Drive(upstreamReliable: true)
        let a = d.branch()
        let b = d.branch()
        d.respond(200, on: a)
        #expect(!d.t.needsContext)
        #expect(!d.t.needsRequestOctets(a) && !d.t.needsResponse(a))
        #expect(d.t.needsRequestOctets(b))
        d.run(until: 500)
        #expect(d.sends(b) == [0, 500])
        d.respond(180, on: b)
        #expect(d.cancels(b) == [500])
        d.respond(487, on: b)
        #expect(d.acks(b) == 1)
        #expect(!d.t.needsRequestOctets(b))
        #expect(d.t.needsResponse(b))
    }

    @Test("A failure_route running keeps the context; a final made there ends it")
    func failureRouteKeepsContext() {
        var d = Drive()
        let a = d.branchAnswered486WithFailureRoute()
        #expect(d.actions.last!.a.runFailureRoute)
        #expect(d.t.needsContext && d.t.needsResponse(a))
        d.record(d.t.reply(480, now: d.now).actions)
        #expect(d.t.needsContext)             // the route is still running
        d.record(d.t.failureRouteFinished(now: d.now))
        #expect(d.upstreamFinals == [480])
        #expect(!d.t.needsContext)
    }
}
