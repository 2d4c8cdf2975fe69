/// One proxied request as a pure state machine: the server side towards
/// the caller, a client branch per target, and the response context that
/// ties them (RFC 3261 §16.7-§16.10, §17, RFC 6026). Events come in with
/// the time; what the shell must do comes out as one `Actions` value of
/// fixed size. No locks, no I/O, no clock: the shell decides under its
/// lock and acts after it, and wakes the machine at `nextDeadline`.
struct ProxyTransaction: Equatable, Sendable {
    /// What the shell sends upstream in answer to one event.
    enum Upstream: Equatable, Sendable {
        /// The response received on a branch (its Via popped): a provisional,
        /// a 2xx, or the final chosen for the request.
        case forward(branch: Int, status: Int)
        /// A response made here (100 Trying, a script's reply, 408, 487, or
        /// the chosen 503 turned into 500).
        case local(status: Int)
    }

    /// Everything one event asks of the shell. Fixed size: branches are
    /// named by masks.
    struct Actions: Equatable, Sendable {
        /// Send (first time) or retransmit the request of these branches.
        var sendRequests = BranchMask.none
        /// Send an ACK for the non-2xx final just received on these branches.
        var sendAcks = BranchMask.none
        /// Send (or retransmit) the CANCEL of these branches.
        var sendCancels = BranchMask.none
        /// A new response upstream.
        var upstream: Upstream?
        /// When `upstream` forwards a 401/407: the branches whose
        /// WWW-/Proxy-Authenticate values are added to it (§16.7 step 7).
        var mergeChallenges = BranchMask.none
        /// Send the last upstream response again.
        var resendUpstream = false
        /// Run the failure_route armed for this request, then report
        /// `failureRouteFinished`.
        var runFailureRoute = false
        /// Everything is over: remove the transaction.
        var remove = false
    }

    let isInvite: Bool
    let settings: TimerSettings
    private(set) var server: ServerSide
    private(set) var branches: [ClientBranch] = []
    /// A CANCEL for the request came (§16.10).
    private(set) var canceled = false
    /// The script armed a failure_route (t_on_failure) not yet run.
    var failureRouteArmed = false
    private(set) var failureRouteRunning = false
    /// The best final so far (§16.7 step 6): its branch (nil: made here) and status.
    private(set) var best: (branch: Int?, status: Int)?
    /// A transaction nobody answers (t_newtran without a reply, every
    /// branch refused) is dropped after this.
    private var abandonAt: Millis?
    private(set) var removed = false

    init(isInvite: Bool, upstreamReliable: Bool, settings: TimerSettings, now: Millis) {
        self.isInvite = isInvite
        self.settings = settings
        self.server = ServerSide(isInvite: isInvite, reliable: upstreamReliable)
        abandonAt = now &+ max(settings.finalResponse, settings.timerC) &+ settings.sixtyFourT1
    }

    static func == (a: ProxyTransaction, b: ProxyTransaction) -> Bool {
        a.server == b.server && a.branches == b.branches && a.canceled == b.canceled && a.removed == b.removed
            && a.best?.branch == b.best?.branch && a.best?.status == b.best?.status
    }

    var nextDeadline: Millis? {
        if removed { return nil }
        var d = earliest(server.nextDeadline, abandonAt)
        for b in branches { d = earliest(d, b.nextDeadline) }
        return d
    }

    /// A branch may still produce a final.
    private var liveBranches: Bool { branches.contains { !$0.isDone } }

    // MARK: What the shell must still hold

    // An INVITE transaction lives 64*T1 (32 s) in Accepted after its 2xx
    // (RFC 6026) and needs little for it: the key, the upstream path and
    // the reply-route variables. These say what else is still read, so the
    // shell frees the rest as soon as it is not.

    /// The request's script context and the copy replies are built from:
    /// read until the final went upstream (local replies, failure_route).
    var needsContext: Bool { !server.finalSent || failureRouteRunning }

    /// The octets of the last response sent upstream.
    var needsLastResponse: Bool { server.keepsLastResponse }

    /// The octets of branch `i`'s request.
    func needsRequestOctets(_ i: Int) -> Bool {
        branches.indices.contains(i) ? branches[i].sendsRequest : false
    }

    /// Branch `i`'s last response: until the final went upstream (the
    /// response context chooses and merges among them, §16.7), and for an
    /// INVITE branch in Completed, whose retransmitted final is ACKed again
    /// with the response's To (§17.1.1.2).
    func needsResponse(_ i: Int) -> Bool {
        guard branches.indices.contains(i) else { return false }
        return needsContext || (isInvite && branches[i].state == .completed)
    }

    // MARK: Events from upstream

    /// A retransmission of the request.
    mutating func requestRetransmitted(now: Millis) -> Actions {
        var a = Actions()
        a.resendUpstream = server.resendOnRetransmission()
        return a
    }

    /// An ACK matching this INVITE transaction (the ACK of a non-2xx final).
    /// False: not absorbed here (an ACK for a 2xx goes on end to end).
    mutating func ackReceived(now: Millis) -> (absorbed: Bool, actions: Actions) {
        let absorbed = server.ack(now: now, settings: settings)
        return (absorbed, finish(Actions()))
    }

    /// A CANCEL for this request (§16.10): every branch still pending is
    /// cancelled, none is created after it.
    mutating func cancel(now: Millis) -> Actions {
        var a = Actions()
        guard isInvite, !canceled else { return a }
        canceled = true
        for i in branches.indices {
            let o = branches[i].requestCancel(now: now, settings: settings)
            apply(o, branch: i, into: &a, now: now)
        }
        if !server.finalSent && !liveBranches && !failureRouteRunning {
            if branches.isEmpty {
                answer(.local(status: 487), into: &a, now: now)
            } else {
                sendBest(into: &a, now: now)
            }
        }
        return finish(a)
    }

    /// A response made here by the script or the shell (t_reply,
    /// sl_send_reply on a transaction, 100 Trying).
    mutating func reply(_ status: Int, now: Millis) -> (sent: Bool, actions: Actions) {
        var a = Actions()
        guard server.mayAnswer(status), !(status >= 200 && server.finalSent) else { return (false, a) }
        answer(.local(status: status), into: &a, now: now)
        // A final made here ends the search: pending branches are cancelled.
        if status >= 200 && isInvite { cancelOthers(except: nil, into: &a, now: now) }
        return (a.upstream != nil, finish(a))
    }

    // MARK: Branches

    /// Why a new branch is refused.
    enum BranchRefusal: Error, Equatable, Sendable {
        /// The request was cancelled (§16.10).
        case canceled
        /// A final response already went upstream.
        case answered
        /// `max_branches` reached (or the 64 a mask can name).
        case tooMany
    }

    /// Adds a branch. `resolved`: its next hop is known and it is sent now;
    /// otherwise `branchResolved` starts it once the look-up is done.
    mutating func addBranch(now: Millis, reliable: Bool, resolved: Bool) -> Result<(index: Int, actions: Actions), BranchRefusal> {
        if canceled { return .failure(.canceled) }
        if server.finalSent { return .failure(.answered) }
        if branches.count >= settings.maxBranches { return .failure(.tooMany) }
        let i = branches.count
        branches.append(ClientBranch(isInvite: isInvite, reliable: reliable))
        abandonAt = nil
        var a = Actions()
        if resolved { apply(branches[i].start(now: now, reliable: reliable, settings: settings), branch: i, into: &a, now: now) }
        return .success((i, finish(a)))
    }

    /// The next hop of a branch added unresolved is known. If the request
    /// was cancelled or answered meanwhile, the branch is dropped unsent.
    mutating func branchResolved(_ i: Int, reliable: Bool, now: Millis) -> Actions {
        guard branches.indices.contains(i) else { return Actions() }
        var a = Actions()
        if canceled || server.finalSent {
            apply(branches[i].abandon(), branch: i, into: &a, now: now)
        } else {
            apply(branches[i].start(now: now, reliable: reliable, settings: settings), branch: i, into: &a, now: now)
        }
        return finish(a)
    }

    /// A branch that could not be sent or resolved, or whose connection failed.
    mutating func branchFailed(_ i: Int, now: Millis) -> Actions {
        guard branches.indices.contains(i) else { return Actions() }
        var a = Actions()
        apply(branches[i].transportError(), branch: i, into: &a, now: now)
        return finish(a)
    }

    // MARK: Events from downstream

    /// A response on branch `i`. `forward` false: the onreply_route
    /// dropped this provisional; the branch still moves on (retransmissions
    /// stop, Timer C runs), only nothing goes upstream.
    mutating func response(_ status: Int, branch i: Int, now: Millis, forward: Bool = true) -> Actions {
        guard branches.indices.contains(i), (100...699).contains(status) else { return Actions() }
        var a = Actions()
        var o = branches[i].receive(status, now: now, settings: settings)
        if !forward && status < 200 { o.passUp = nil }
        apply(o, branch: i, into: &a, now: now)
        return finish(a)
    }

    /// A response to the CANCEL of branch `i`.
    mutating func cancelResponse(_ status: Int, branch i: Int, now: Millis) -> Actions {
        guard branches.indices.contains(i) else { return Actions() }
        branches[i].receiveCancelResponse(status, now: now, settings: settings)
        return finish(Actions())
    }

    /// The time moved on: every timer due fires.
    mutating func advance(now: Millis) -> Actions {
        var a = Actions()
        guard !removed else { return a }
        if server.advance(now: now, settings: settings) { a.resendUpstream = true }
        for i in branches.indices {
            let o = branches[i].advance(now: now, settings: settings)
            apply(o, branch: i, into: &a, now: now)
        }
        if let at = abandonAt, at <= now {
            abandonAt = nil
            if branches.isEmpty && !failureRouteRunning { server.terminate() }
        }
        return finish(a)
    }

    /// The failure_route ran: its new branches (if any) were added, its
    /// reply (if any) was sent through `reply`.
    mutating func failureRouteFinished(now: Millis) -> Actions {
        var a = Actions()
        guard failureRouteRunning else { return a }
        failureRouteRunning = false
        if !server.finalSent && !liveBranches {
            if failureRouteArmed && !canceled {
                // The route armed another failure_route and its new branches
                // already failed: that one runs now.
                failureRouteArmed = false
                failureRouteRunning = true
                a.runFailureRoute = true
            } else {
                sendBest(into: &a, now: now)
            }
        }
        return finish(a)
    }

    // MARK: Inside

    private mutating func apply(_ o: ClientBranch.Outcome, branch i: Int, into a: inout Actions, now: Millis) {
        if o.sendRequest { a.sendRequests.insert(i) }
        if o.sendAck { a.sendAcks.insert(i) }
        if o.sendCancel { a.sendCancels.insert(i) }
        if let status = o.passUp {
            branchResponse(status, branch: i, local: false, into: &a, now: now)
        } else if let status = o.localFinal {
            branchResponse(status, branch: i, local: true, into: &a, now: now)
        }
    }

    /// §16.7 steps 4-10 for one response on a branch.
    private mutating func branchResponse(_ status: Int, branch i: Int, local: Bool, into a: inout Actions, now: Millis) {
        if status < 200 {
            // Provisionals go up at once, also after a CANCEL (step 5);
            // 100 is hop by hop.
            if status > 100 && !server.finalSent { answer(.forward(branch: i, status: status), into: &a, now: now) }
            return
        }
        if status < 300 {
            // A 2xx goes up at once; to an INVITE every one, to anything
            // else only the first final (step 5, 10).
            if isInvite || !server.finalSent { answer(.forward(branch: i, status: status), into: &a, now: now) }
            if isInvite { cancelOthers(except: i, into: &a, now: now) }
            return
        }
        if best == nil || ReplySelection.rank(status, local: local) < rankOfBest() { best = (Optional(i), status) }
        if status >= 600 && isInvite { cancelOthers(except: i, into: &a, now: now) }
        if server.finalSent || liveBranches || failureRouteRunning { return }
        if failureRouteArmed && !canceled {
            failureRouteArmed = false
            failureRouteRunning = true
            a.runFailureRoute = true
            return
        }
        sendBest(into: &a, now: now)
    }

    private func rankOfBest() -> Int {
        guard let best else { return Int.max }
        let local = best.branch.map { branches[$0].finalIsLocal } ?? true
        return ReplySelection.rank(best.status, local: local)
    }

    /// Step 6-7: the best final goes up (503 as 500), with the challenges
    /// of every 401/407 merged into a chosen 401/407.
    private mutating func sendBest(into a: inout Actions, now: Millis) {
        guard let best else {
            answer(.local(status: canceled ? 487 : 500), into: &a, now: now)
            return
        }
        let up = ReplySelection.upstreamStatus(best.status)
        guard let i = best.branch, up == best.status, !branches[i].finalIsLocal else {
            answer(.local(status: up), into: &a, now: now)
            return
        }
        answer(.forward(branch: i, status: up), into: &a, now: now)
        if ReplySelection.mergesChallenges(up) {
            for (j, b) in branches.enumerated() where j != i && !b.finalIsLocal && ReplySelection.mergesChallenges(b.finalStatus ?? 0) {
                a.mergeChallenges.insert(j)
            }
        }
    }

    private mutating func answer(_ u: Upstream, into a: inout Actions, now: Millis) {
        let status: Int
        switch u {
        case .forward(_, let s), .local(let s): status = s
        }
        guard server.answer(status, now: now, settings: settings) else { return }
        // Two responses in one event (a 2xx and a late one) never happen:
        // each event carries one response; the last one wins.
        a.upstream = u
    }

    private mutating func cancelOthers(except keep: Int?, into a: inout Actions, now: Millis) {
        for j in branches.indices where j != keep {
            apply(branches[j].requestCancel(now: now, settings: settings), branch: j, into: &a, now: now)
        }
    }

    /// Marks the transaction for removal once every part of it is over.
    private mutating func finish(_ a: Actions) -> Actions {
        var a = a
        if removed { return Actions() }
        let branchesOver = branches.allSatisfy { $0.isTerminated }
        if server.state == .terminated && branchesOver && !failureRouteRunning {
            removed = true
            a.remove = true
        }
        return a
    }
}
