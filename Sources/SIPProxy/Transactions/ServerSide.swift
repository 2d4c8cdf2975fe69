/// The server transaction of a proxied request (RFC 3261 §17.2, with the
/// Accepted state of RFC 6026): what it sends upstream and when it
/// retransmits, as a value. The last response's octets stay with the
/// shell; this knows only statuses and deadlines.
struct ServerSide: Equatable, Sendable {
    enum State: Equatable, Sendable {
        /// INVITE: Proceeding; non-INVITE: Trying until a provisional, then Proceeding.
        case trying, proceeding
        /// A non-2xx final was sent: INVITE waits for the ACK (Timer G/H),
        /// non-INVITE absorbs retransmissions (Timer J).
        case completed
        /// INVITE: the ACK came; retransmitted ACKs are absorbed (Timer I).
        case confirmed
        /// INVITE: a 2xx was sent (RFC 6026): retransmitted INVITEs are
        /// absorbed, more 2xx go up, ACKs go end to end (Timer L).
        case accepted
        case terminated
    }

    let isInvite: Bool
    /// The upstream transport is a stream: no retransmissions, Timer I and J are 0.
    let reliable: Bool
    private(set) var state: State
    /// The status of the last response sent upstream (0: none yet).
    private(set) var lastStatus = 0
    private var interval: Millis = 0
    /// Timer G (INVITE final retransmission, unreliable only).
    private(set) var retransmitAt: Millis?
    /// Timer H, I, J or L: when the state ends.
    private(set) var endAt: Millis?

    init(isInvite: Bool, reliable: Bool) {
        self.isInvite = isInvite
        self.reliable = reliable
        state = isInvite ? .proceeding : .trying
    }

    var finalSent: Bool { lastStatus >= 200 }
    /// Whether the last response may still go out again (a retransmitted
    /// request answered with it, or Timer G): the shell keeps its octets
    /// only while this holds. Not in Accepted (RFC 6026: retransmitted
    /// INVITEs are absorbed, each 2xx is forwarded as it comes), Confirmed
    /// or Terminated.
    var keepsLastResponse: Bool {
        switch state {
        case .trying, .proceeding, .completed: return true
        case .accepted, .confirmed, .terminated: return false
        }
    }
    var nextDeadline: Millis? { earliest(retransmitAt, endAt) }

    /// Whether a response with this status may go upstream now (RFC 3261
    /// §16.7 step 5, §17.2.1, RFC 6026): provisionals until a final, a
    /// final once, and for INVITE every 2xx.
    func mayAnswer(_ status: Int) -> Bool {
        // Every 2xx to an INVITE reaches the caller, also after a non-2xx
        // final or once this side is over (RFC 6026: dropping it would
        // leave the callee's dialog up); the shell forwards it by its Via.
        if isInvite && (200..<300).contains(status) { return true }
        switch state {
        case .trying, .proceeding: return true
        case .accepted, .completed, .confirmed, .terminated: return false
        }
    }

    /// Records a response the shell sends upstream. False (nothing to
    /// send) when the state does not allow it.
    mutating func answer(_ status: Int, now: Millis, settings s: TimerSettings) -> Bool {
        guard mayAnswer(status) else { return false }
        if status < 200 {
            lastStatus = status
            if state == .trying { state = .proceeding }
            return true
        }
        if state != .trying && state != .proceeding {
            // A further or late 2xx to an INVITE: forwarded, the state stays.
            return true
        }
        lastStatus = status
        if isInvite {
            if status < 300 {
                state = .accepted
                retransmitAt = nil
                endAt = now &+ s.sixtyFourT1        // Timer L
            } else {
                state = .completed
                interval = s.t1
                retransmitAt = reliable ? nil : now &+ interval // Timer G
                endAt = now &+ s.sixtyFourT1        // Timer H
            }
        } else {
            state = .completed
            retransmitAt = nil
            endAt = now &+ (reliable ? 0 : s.sixtyFourT1) // Timer J
        }
        return true
    }

    /// What to do with a retransmission of the request: true when the last
    /// response goes out again (§17.2.1, §17.2.2).
    func resendOnRetransmission() -> Bool {
        switch state {
        case .trying, .accepted, .confirmed, .terminated: return false
        case .proceeding, .completed: return lastStatus != 0
        }
    }

    /// An ACK for a non-2xx final (same transaction). True when absorbed here.
    mutating func ack(now: Millis, settings s: TimerSettings) -> Bool {
        switch state {
        case .completed where isInvite:
            state = .confirmed
            retransmitAt = nil
            endAt = now &+ (reliable ? 0 : s.t4)    // Timer I
            return true
        case .confirmed: return true
        default: return false
        }
    }

    /// Timers due at `now`. Returns true when the last response must be
    /// retransmitted (Timer G).
    mutating func advance(now: Millis, settings s: TimerSettings) -> Bool {
        if let end = endAt, end <= now {
            // Timer H (no ACK came), I, J, L: the server side is done.
            state = .terminated
            retransmitAt = nil
            endAt = nil
            return false
        }
        if let at = retransmitAt, at <= now {
            interval = min(interval &* 2, s.t2)
            retransmitAt = now &+ interval
            return true
        }
        return false
    }

    /// Ends the server side at once (the request was never answerable).
    mutating func terminate() {
        state = .terminated
        retransmitAt = nil
        endAt = nil
    }
}
