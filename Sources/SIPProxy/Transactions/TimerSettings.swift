import SIPConfig

/// Milliseconds on a monotonic clock the shell owns. The machines never
/// read a clock: every event carries `now`, and each machine says when it
/// next needs to be woken (`nextDeadline`).
typealias Millis = Int64

/// The RFC 3261 timer values one transaction works with, taken from the
/// config once (`tm` module parameters) so the machines stay pure.
struct TimerSettings: Sendable, Equatable {
    /// RTT estimate (T1), longest retransmit interval for non-INVITE
    /// requests and INVITE responses (T2), longest time a message stays in
    /// the network (T4).
    var t1: Millis = 500
    var t2: Millis = 4_000
    var t4: Millis = 5_000
    /// Timer B and Timer F: how long a branch waits for a final (non-INVITE)
    /// or for anything (INVITE) — Kamailio's `fr_timer`.
    var finalResponse: Millis = 30_000
    /// Timer C (RFC 3261 §16.6 step 11): an INVITE branch's wait for a final
    /// after a provisional, restarted by every provisional — Kamailio's
    /// `fr_inv_timer`. RFC 3261 asks for more than three minutes.
    var timerC: Millis = 180_000
    /// Most branches one request may fork to (Kamailio's `max_branches`).
    var maxBranches = 12

    /// 64*T1: Timer H, J (unreliable), L, M, the CANCEL's Timer F and how
    /// long a cancelled branch may wait for its final.
    var sixtyFourT1: Millis { t1 &* 64 }
    /// Timer D: 32 s at least on an unreliable transport, 0 on a reliable one.
    func timerD(reliable: Bool) -> Millis { reliable ? 0 : max(32_000, sixtyFourT1) }

    init() {}

    init(_ s: TransactionSettings) {
        t1 = Millis(max(1, s.t1))
        t2 = Millis(max(s.t1, s.t2))
        t4 = Millis(max(0, s.t4))
        finalResponse = Millis(max(1, s.finalResponseTimeout))
        timerC = Millis(max(1, s.inviteFinalResponseTimeout))
        maxBranches = min(max(1, s.maxBranches), BranchMask.capacity)
    }
}

/// A set of branch indexes (a request forks to at most 64 branches), so an
/// action naming several branches needs no allocation.
struct BranchMask: Equatable, Sendable, Sequence {
    static let capacity = 64
    var bits: UInt64 = 0

    static let none = BranchMask()

    var isEmpty: Bool { bits == 0 }
    var count: Int { bits.nonzeroBitCount }
    func contains(_ i: Int) -> Bool { i >= 0 && i < Self.capacity && bits & (1 << UInt64(i)) != 0 }
    mutating func insert(_ i: Int) {
        guard i >= 0 && i < Self.capacity else { return }
        bits |= 1 << UInt64(i)
    }

    func makeIterator() -> Iterator { Iterator(rest: bits) }
    struct Iterator: IteratorProtocol {
        var rest: UInt64
        mutating func next() -> Int? {
            guard rest != 0 else { return nil }
            let i = rest.trailingZeroBitCount
            rest &= rest &- 1
            return i
        }
    }
}

/// The earlier of two optional deadlines.
@inline(__always)
func earliest(_ a: Millis?, _ b: Millis?) -> Millis? {
    switch (a, b) {
    case (nil, _): return b
    case (_, nil): return a
    case (let x?, let y?): return min(x, y)
    }
}
