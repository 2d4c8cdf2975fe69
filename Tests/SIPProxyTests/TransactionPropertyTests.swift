import Testing
@testable import SIPProxy

/// A small deterministic generator (SplitMix64), so a failing sequence is
/// found again from its seed.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

@Suite("Transaction machines under random event sequences")
struct TransactionPropertyTests {
    static let statuses = [100, 180, 183, 200, 202, 302, 401, 404, 407, 408, 486, 487, 500, 503, 600, 603]

    /// Feeds random events (responses of every class on every branch,
    /// retransmissions, CANCELs, CANCEL responses, timer firings, transport
    /// errors, failure_route outcomes) and checks the invariants after
    /// each step.
    @Test("Invariants hold for 3,000 random sequences", arguments: [true, false])
    func randomSequences(invite: Bool) {
        for seed in 0..<UInt64(1_500) {
            var rng = SplitMix(state: seed &* 7919 &+ (invite ? 1 : 2))
            let ok = Self.check(invite: invite, rng: &rng, seed: seed)
            if !ok { return }
        }
    }

    static func check(invite: Bool, rng: inout SplitMix, seed: UInt64) -> Bool {
        var settings = TimerSettings()
        settings.maxBranches = 4
        let upstreamReliable = Bool.random(using: &rng)
        var t = ProxyTransaction(isInvite: invite, upstreamReliable: upstreamReliable, settings: settings, now: 0)
        if Bool.random(using: &rng) { t.failureRouteArmed = true }
        var now: Millis = 0
        var non2xxFinalsUp = 0
        var finalsUp = 0
        var canceled = false
        var failureRoutePending = false
        var removed = false
        func fail(_ what: String) -> Bool {
            Issue.record("seed \(seed) invite \(invite): \(what)")
            return false
        }
        func note(_ a: ProxyTransaction.Actions) -> Bool {
            if let u = a.upstream {
                let s: Int
                switch u { case .forward(_, let x), .local(let x): s = x }
                if s >= 200 {
                    if !(invite && s < 300) { non2xxFinalsUp += 1 }
                    if !invite { finalsUp += 1 }
                } else if non2xxFinalsUp > 0 || (!invite && finalsUp > 0) {
                    return fail("a provisional after a final")
                }
            }
            if non2xxFinalsUp > 1 { return fail("two non-2xx finals upstream") }
            if finalsUp > 1 { return fail("two finals upstream to a non-INVITE") }
            if a.runFailureRoute { failureRoutePending = true }
            if a.remove { removed = true }
            return true
        }
        // Always one branch to begin with.
        let first = t.addBranch(now: 0, reliable: Bool.random(using: &rng), resolved: Bool.random(using: &rng))
        guard case .success(let r0) = first else { return fail("first branch refused") }
        guard note(r0.actions) else { return false }
        for _ in 0..<Int.random(in: 1...30, using: &rng) {
            if removed { break }
            now += Millis.random(in: 0...3_000, using: &rng)
            let n = t.branches.count
            switch Int.random(in: 0..<10, using: &rng) {
            case 0...3 where n > 0:
                let b = Int.random(in: 0..<n, using: &rng)
                let s = statuses.randomElement(using: &rng)!
                let before = t.branches[b].state
                let a = t.response(s, branch: b, now: now)
                if invite && s >= 300 && [.calling, .proceeding, .completed].contains(before) && !a.sendAcks.contains(b) {
                    return fail("final \(s) on branch \(b) in \(before) not ACKed")
                }
                guard note(a) else { return false }
            case 4:
                let finalSent = t.server.finalSent
                let r = t.addBranch(now: now, reliable: Bool.random(using: &rng), resolved: Bool.random(using: &rng))
                if case .success(let x) = r {
                    if canceled || finalSent { return fail("branch created after a CANCEL or a final") }
                    guard note(x.actions) else { return false }
                }
            case 5:
                canceled = canceled || invite
                guard note(t.cancel(now: now)) else { return false }
            case 6 where n > 0:
                let b = Int.random(in: 0..<n, using: &rng)
                if t.branches[b].state == .resolving {
                    guard note(t.branchResolved(b, reliable: Bool.random(using: &rng), now: now)) else { return false }
                } else if Bool.random(using: &rng) {
                    guard note(t.branchFailed(b, now: now)) else { return false }
                } else {
                    guard note(t.cancelResponse([180, 200, 481].randomElement(using: &rng)!, branch: b, now: now)) else { return false }
                }
            case 7:
                if failureRoutePending {
                    // The route adds a branch, replies, or does nothing.
                    switch Int.random(in: 0..<3, using: &rng) {
                    case 0:
                        if case .success(let x) = t.addBranch(now: now, reliable: false, resolved: true) {
                            if canceled { return fail("branch created in failure_route after a CANCEL") }
                            guard note(x.actions) else { return false }
                        }
                    case 1: guard note(t.reply(486, now: now).actions) else { return false }
                    default: break
                    }
                    failureRoutePending = false
                    guard note(t.failureRouteFinished(now: now)) else { return false }
                } else {
                    guard note(t.requestRetransmitted(now: now)) else { return false }
                }
            case 8:
                guard note(t.ackReceived(now: now).actions) else { return false }
            default:
                if let d = t.nextDeadline, d <= now + 40_000 {
                    now = max(now, d)
                    guard note(t.advance(now: now)) else { return false }
                }
            }
        }
        // Silence: any pending failure_route ends without doing anything,
        // every branch resolves, and the clock runs out.
        for _ in 0..<10_000 {
            if removed { break }
            if failureRoutePending {
                failureRoutePending = false
                guard note(t.failureRouteFinished(now: now)) else { return false }
                continue
            }
            if let b = t.branches.firstIndex(where: { $0.state == .resolving }) {
                guard note(t.branchResolved(b, reliable: true, now: now)) else { return false }
                continue
            }
            guard let d = t.nextDeadline else { break }
            now = max(now, d)
            guard note(t.advance(now: now)) else { return false }
        }
        if !removed { return fail("never removed (server \(t.server.state), branches \(t.branches.map(\.state)))") }
        if t.nextDeadline != nil { return fail("a timer left after removal") }
        if non2xxFinalsUp == 0 && finalsUp == 0 && !t.server.finalSent { return fail("no final response ever went upstream") }
        return true
    }
}
