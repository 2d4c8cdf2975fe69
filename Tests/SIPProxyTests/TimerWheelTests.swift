import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import Testing
@testable import SIPProxy

/// The transaction timer wheel: its slots as a value (which entries are
/// due, which tick comes next) and the shell on an `EmbeddedEventLoop`
/// whose time the test moves. No sockets, no sleeps.
@Suite struct TimerWheelTests {
    /// A live-or-dead entry for the slot tests.
    final class Item {
        let id: Int
        var live = true
        init(_ id: Int) { self.id = id }
    }

    /// Ticks in one rotation of the wheel.
    let n = UInt64(TimerSlots<Item>.slotCount)

    @Test func dueTickRoundsOnlyLongDelays() {
        // Short delays: the next tick boundary, at least one tick on.
        #expect(TimerWheel.dueTick(now: 100, milliseconds: 500) == 150)
        #expect(TimerWheel.dueTick(now: 100, milliseconds: 0) == 101)
        #expect(TimerWheel.dueTick(now: 100, milliseconds: -5) == 101)
        #expect(TimerWheel.dueTick(now: 100, milliseconds: 1) == 101)
        #expect(TimerWheel.dueTick(now: 100, milliseconds: 310) == 131)
        // Long ones: never early, late by at most 1/32 of the delay.
        for ms in [4_000, 5_000, 32_000, 64_000, 180_000, 3_600_000] {
            for now in [UInt64(0), 7, 1_000, 123_457] {
                let due = TimerWheel.dueTick(now: now, milliseconds: ms)
                let exact = now + UInt64(ms / 10)
                #expect(due >= exact)
                #expect(due - exact <= UInt64(ms / 10 / 32))
            }
        }
        // Timers of one kind started close together share a tick.
        #expect(TimerWheel.dueTick(now: 1_000, milliseconds: 32_000) == TimerWheel.dueTick(now: 1_010, milliseconds: 32_000))
        // No delay from the configuration can trap.
        _ = TimerWheel.dueTick(now: .max / 2, milliseconds: .max)
    }

    @Test func collectHandsOutOnlyWhatIsDue() {
        var s = TimerSlots<Item>()
        let a = Item(1), b = Item(2), c = Item(3)
        s.insert(a, due: 5)
        s.insert(b, due: 3)
        s.insert(c, due: 3 + n) // same slot as b, next rotation
        var out: [Item] = []
        s.collect(upTo: 4, isLive: { $0.live }, into: &out)
        #expect(out.map(\.id) == [2])
        #expect(s.nextDue(isLive: { $0.live }) == 5)
        out = []
        s.collect(upTo: 5, isLive: { $0.live }, into: &out)
        #expect(out.map(\.id) == [1])
        #expect(s.nextDue(isLive: { $0.live }) == 3 + n)
        out = []
        s.collect(upTo: 3 + n, isLive: { $0.live }, into: &out)
        #expect(out.map(\.id) == [3])
        #expect(s.nextDue(isLive: { $0.live }) == nil)
        #expect(s.isEmpty)
    }

    @Test func deadEntriesAreDroppedNotHandedOut() {
        var s = TimerSlots<Item>()
        let a = Item(1), b = Item(2)
        s.insert(a, due: 10)
        s.insert(b, due: 20)
        a.live = false
        #expect(s.nextDue(isLive: { $0.live }) == 20)
        #expect(s.count == 1)
        b.live = false
        #expect(s.nextDue(isLive: { $0.live }) == nil)
        #expect(s.isEmpty)
    }

    @Test func farEntriesWakeOncePerRotation() {
        var s = TimerSlots<Item>()
        s.insert(Item(1), due: n + 900)
        // Only a later rotation holds something: the end of this one.
        #expect(s.nextDue(isLive: { $0.live }) == n)
        var out: [Item] = []
        // Far behind (more than a rotation): every slot is visited once.
        s.collect(upTo: 2 * n + 1_000, isLive: { $0.live }, into: &out)
        #expect(out.map(\.id) == [1])
        #expect(s.processed == 2 * n + 1_000)
    }

    @Test func anEntryForATickAlreadyHandedOutGoesToTheNext() {
        var s = TimerSlots<Item>()
        var out: [Item] = []
        s.collect(upTo: 50, isLive: { $0.live }, into: &out)
        s.insert(Item(1), due: 40)
        #expect(s.nextDue(isLive: { $0.live }) == 51)
    }

    /// Random inserts, deaths and collections against a plain list: each
    /// entry is handed out once, at the first collection at or after its
    /// tick, never before; `nextDue` is the earliest live tick when it lies
    /// within a rotation.
    @Test func matchesAPlainListOverRandomSteps() {
        var rng = SplitMix(state: 0x5EED)
        for _ in 0..<50 {
            var s = TimerSlots<Item>()
            var model: [(due: UInt64, item: Item)] = []
            var now: UInt64 = 0
            var id = 0
            for _ in 0..<400 {
                switch rng.next() % 4 {
                case 0, 1:
                    let due = now + 1 + rng.next() % (n + n / 2)
                    id += 1
                    let item = Item(id)
                    s.insert(item, due: due)
                    model.append((due, item))
                case 2:
                    if let victim = model.randomElement(using: &rng) { victim.item.live = false }
                default:
                    now += rng.next() % (n / 8)
                    var out: [Item] = []
                    s.collect(upTo: now, isLive: { $0.live }, into: &out)
                    let expected = model.filter { $0.item.live && $0.due <= now }.map(\.item.id).sorted()
                    #expect(out.map(\.id).sorted() == expected)
                    for item in out { item.live = false } // fired
                    model.removeAll { !$0.item.live }
                    let next = s.nextDue(isLive: { $0.live })
                    let earliest = model.map(\.due).min()
                    if let e = earliest {
                        #expect(next == (e <= now + n ? e : now + n))
                    } else {
                        #expect(next == nil)
                    }
                }
            }
        }
    }

    @Test func wheelWakesOnlyWhenATimerIsDue() {
        let loop = EmbeddedEventLoop()
        let wheel = TimerWheel(loop: loop, clock: { loop.now })
        let fired = NIOLockedValueBox<[String]>([])
        wheel.schedule(milliseconds: 500) { fired.withLockedValue { $0.append("A") } }
        let long = wheel.schedule(milliseconds: 32_000) { fired.withLockedValue { $0.append("B") } }
        // One wake-up armed, for the earliest timer.
        #expect(wheel.state.armed == [50])
        loop.advanceTime(by: .milliseconds(490))
        #expect(fired.withLockedValue { $0 } == [])
        loop.advanceTime(by: .milliseconds(10))
        #expect(fired.withLockedValue { $0 } == ["A"])
        // The next wake-up is the long timer's (rounded, not early).
        let armed = wheel.state.armed
        #expect(armed.count == 1 && armed[0] >= 3_200 && armed[0] <= 3_300)
        long.cancel()
        loop.advanceTime(by: .seconds(40))
        #expect(fired.withLockedValue { $0 } == ["A"])
        // Nothing held, nothing armed: an idle proxy is not woken.
        #expect(wheel.state.held == 0)
        #expect(wheel.state.armed == [])
    }

    @Test func anEarlierTimerArmsAnEarlierWakeUp() {
        let loop = EmbeddedEventLoop()
        let wheel = TimerWheel(loop: loop, clock: { loop.now })
        let fired = NIOLockedValueBox<[Int]>([])
        wheel.schedule(milliseconds: 5_000) { fired.withLockedValue { $0.append(5_000) } }
        wheel.schedule(milliseconds: 200) { fired.withLockedValue { $0.append(200) } }
        wheel.schedule(milliseconds: 1_000) { fired.withLockedValue { $0.append(1_000) } }
        loop.advanceTime(by: .seconds(6))
        #expect(fired.withLockedValue { $0 } == [200, 1_000, 5_000])
        #expect(wheel.state.armed == [])
        // A timer cancelled after its tick was armed: the wake-up finds
        // nothing and arms nothing more.
        let t = wheel.schedule(milliseconds: 100) { fired.withLockedValue { $0.append(-1) } }
        t.cancel()
        loop.advanceTime(by: .seconds(1))
        #expect(fired.withLockedValue { $0 }.count == 3)
        #expect(wheel.state == (held: 0, armed: []))
    }
}
