/// One branch of a proxied request: its client transaction (RFC 3261
/// §17.1, RFC 6026 for INVITE 2xx), the proxy's Timer C on it (§16.6 step
/// 11, §16.8) and the CANCEL sent for it, which is a non-INVITE client
/// transaction of its own (§9.1). A value: statuses and deadlines only.
struct ClientBranch: Equatable, Sendable {
    enum State: Equatable, Sendable {
        /// The next hop is still being resolved (RFC 3263 NAPTR): nothing sent yet.
        case resolving
        /// Sent, nothing heard (INVITE: Calling; non-INVITE: Trying).
        case calling
        /// A provisional came.
        case proceeding
        /// A non-2xx final came (INVITE: ACKed, Timer D; non-INVITE: Timer K).
        case completed
        /// INVITE: a 2xx came (RFC 6026): more 2xx pass up until Timer M.
        case accepted
        case terminated
    }

    /// The CANCEL of this branch (§9.1): none asked, asked but held until a
    /// provisional arrives, under way (retransmitted over UDP), or over.
    enum Cancel: Equatable, Sendable {
        case none, held, sent, done
    }

    let isInvite: Bool
    /// The branch goes over a stream: no retransmissions, Timer D/K are 0.
    private(set) var reliable: Bool
    private(set) var state: State = .resolving
    private(set) var cancel: Cancel = .none
    /// The final status this branch ended with (received or made here).
    private(set) var finalStatus: Int?
    /// Whether the final was made here (timeout, transport error).
    private(set) var finalIsLocal = false
    /// Timer A/E.
    private(set) var retransmitAt: Millis?
    private var interval: Millis = 0
    /// Timer B/F (calling), C (INVITE proceeding), D/K (completed), M
    /// (accepted), or the wait for the final after a CANCEL.
    private(set) var timeoutAt: Millis?
    /// The CANCEL's Timer E and F.
    private(set) var cancelRetransmitAt: Millis?
    private var cancelInterval: Millis = 0
    private(set) var cancelEndAt: Millis?

    init(isInvite: Bool, reliable: Bool) {
        self.isInvite = isInvite
        self.reliable = reliable
    }

    var isDone: Bool { finalStatus != nil || state == .terminated || state == .accepted }
    var isTerminated: Bool { state == .terminated && (cancel == .none || cancel == .done || cancel == .held) }
    var nextDeadline: Millis? { earliest(earliest(retransmitAt, timeoutAt), earliest(cancelRetransmitAt, cancelEndAt)) }
    /// Whether the request may still be sent (first send, Timer A/E): the
    /// shell keeps its octets only while this holds.
    var sendsRequest: Bool {
        switch state {
        case .resolving, .calling, .proceeding: return true
        case .completed, .accepted, .terminated: return false
        }
    }

    /// What happened to the branch in one event, for the response context.
    struct Outcome: Equatable, Sendable {
        /// Send the request (first time or again).
        var sendRequest = false
        /// Send an ACK for the non-2xx final just received.
        var sendAck = false
        /// Send the branch's CANCEL (first time or again).
        var sendCancel = false
        /// A response to pass to the response context.
        var passUp: Int?
        /// The branch ended without a response from downstream.
        var localFinal: Int?
    }

    /// The next hop is known: send (or, resolved, send now).
    mutating func start(now: Millis, reliable: Bool, settings s: TimerSettings) -> Outcome {
        guard state == .resolving else { return Outcome() }
        self.reliable = reliable
        state = .calling
        interval = s.t1
        retransmitAt = reliable ? nil : now &+ interval      // Timer A / E
        timeoutAt = now &+ s.finalResponse                   // Timer B / F
        return Outcome(sendRequest: true)
    }

    /// A branch cancelled before it was ever sent (the look-up had not
    /// finished): it ends with no request on the wire.
    mutating func abandon() -> Outcome {
        guard state == .resolving else { return Outcome() }
        state = .terminated
        finalStatus = 487
        finalIsLocal = true
        cancel = .done
        return Outcome(localFinal: 487)
    }

    /// A response to the branch's request.
    mutating func receive(_ status: Int, now: Millis, settings s: TimerSettings) -> Outcome {
        var o = Outcome()
        switch state {
        case .resolving, .terminated:
            return o
        case .calling, .proceeding:
            if status < 200 {
                state = .proceeding
                if isInvite {
                    retransmitAt = nil
                    // Timer C, restarted by every provisional but 100 (§16.7
                    // step 2), unless a CANCEL was sent: then §9.1's 64*T1
                    // bounds the wait. A 100 alone leaves Timer B running.
                    if status > 100 && cancel == .none { timeoutAt = now &+ s.timerC }
                } else if !reliable {
                    // Non-INVITE keeps retransmitting, at T2 (§17.1.2.2).
                    interval = s.t2
                    if retransmitAt == nil { retransmitAt = now &+ interval }
                }
                if cancel == .held { o.sendCancel = startCancel(now: now, settings: s) }
                o.passUp = status
                return o
            }
            finalStatus = status
            retransmitAt = nil
            if cancel == .held { cancel = .none }
            if isInvite && status < 300 {
                state = .accepted
                timeoutAt = now &+ s.sixtyFourT1             // Timer M
            } else {
                state = .completed
                o.sendAck = isInvite
                timeoutAt = now &+ (isInvite ? s.timerD(reliable: reliable) : (reliable ? 0 : s.t4)) // D / K
            }
            o.passUp = status
            return o
        case .completed:
            // A retransmitted final: ACKed again (§17.1.1.2), not passed up.
            o.sendAck = isInvite && status >= 300
            return o
        case .accepted:
            // More 2xx pass up (RFC 6026 §8.4); anything else is absorbed.
            if isInvite && (200..<300).contains(status) { o.passUp = status }
            return o
        }
    }

    /// Asks for this branch's CANCEL (§9.1, §16.10): sent now if a
    /// provisional came, held until one does, nothing if the branch is over.
    mutating func requestCancel(now: Millis, settings s: TimerSettings) -> Outcome {
        guard isInvite, cancel == .none else { return Outcome() }
        switch state {
        case .resolving: return abandon()
        case .calling:
            cancel = .held
            return Outcome()
        case .proceeding:
            return Outcome(sendCancel: startCancel(now: now, settings: s))
        default:
            return Outcome()
        }
    }

    private mutating func startCancel(now: Millis, settings s: TimerSettings) -> Bool {
        cancel = .sent
        cancelInterval = s.t1
        cancelRetransmitAt = reliable ? nil : now &+ cancelInterval
        cancelEndAt = now &+ s.sixtyFourT1
        // §9.1: a branch whose final does not follow its CANCEL within
        // 64*T1 is given up.
        timeoutAt = now &+ s.sixtyFourT1
        return true
    }

    /// A response to the branch's CANCEL: any final ends it; a provisional
    /// slows its retransmissions to T2.
    mutating func receiveCancelResponse(_ status: Int, now: Millis, settings s: TimerSettings) {
        guard cancel == .sent else { return }
        if status >= 200 {
            cancel = .done
            cancelRetransmitAt = nil
            cancelEndAt = nil
        } else if !reliable {
            cancelInterval = s.t2
        }
    }

    /// The connection or send failed: the branch ends with 503 (§16.7 step
    /// 4 treats it like a 503 received), unless it already has a final.
    mutating func transportError() -> Outcome {
        switch state {
        case .calling, .proceeding, .resolving:
            state = .terminated
            finalStatus = 503
            finalIsLocal = true
            retransmitAt = nil
            timeoutAt = nil
            if cancel != .sent { cancel = .done }
            return Outcome(localFinal: 503)
        default:
            return Outcome()
        }
    }

    /// Timers due at `now`.
    mutating func advance(now: Millis, settings s: TimerSettings) -> Outcome {
        var o = Outcome()
        if let at = cancelEndAt, at <= now {
            cancel = .done                                   // the CANCEL's Timer F
            cancelEndAt = nil
            cancelRetransmitAt = nil
        } else if let at = cancelRetransmitAt, at <= now {
            cancelInterval = min(cancelInterval &* 2, s.t2)  // the CANCEL's Timer E
            cancelRetransmitAt = now &+ cancelInterval
            o.sendCancel = true
        }
        if let at = timeoutAt, at <= now {
            timeoutAt = nil
            switch state {
            case .calling:
                // Timer B / F: as if a 408 had come (§16.8).
                state = .terminated
                retransmitAt = nil
                finalStatus = 408
                finalIsLocal = true
                if cancel == .held { cancel = .done }
                o.localFinal = 408
            case .proceeding:
                if isInvite && cancel == .none {
                    // Timer C with a provisional: CANCEL, and wait 64*T1 more.
                    o.sendCancel = startCancel(now: now, settings: s)
                } else {
                    // Non-INVITE Timer F, or no final after our CANCEL.
                    state = .terminated
                    retransmitAt = nil
                    finalStatus = 408
                    finalIsLocal = true
                    o.localFinal = 408
                }
            case .completed, .accepted:
                state = .terminated                          // Timer D, K, M
            case .resolving, .terminated:
                break
            }
        }
        if let at = retransmitAt, at <= now, state == .calling || state == .proceeding {
            // Timer A doubles without bound (Timer B stops it); E stops at T2.
            interval = isInvite ? interval &* 2 : min(interval &* 2, s.t2)
            retransmitAt = now &+ interval
            o.sendRequest = true
        }
        return o
    }
}
