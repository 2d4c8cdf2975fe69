import NIOConcurrencyHelpers
import NIOCore

/// The slots of a hashed timing wheel as a value: which entries are due at
/// a tick, and the next tick that has one. No clock, no lock, no I/O — the
/// shell (`TimerWheel`) says what time it is.
///
/// An entry due at tick `d` sits in slot `d % slotCount`; a bit per slot
/// says whether the slot holds anything, so finding the next occupied slot
/// costs a few word operations, not a walk over every slot.
struct TimerSlots<Element> {
    /// 40.96 s of 10 ms ticks: every RFC 3261 timer but Timer C fits in one rotation.
    static var slotCount: Int { 4096 }
    private static var mask: UInt64 { UInt64(slotCount - 1) }

    private struct Entry {
        let due: UInt64
        let item: Element
    }

    private var slots: [[Entry]]
    private var occupied: [UInt64]
    /// Every tick up to this one has been handed out.
    private(set) var processed: UInt64
    /// Entries held, dead ones included until a visit drops them.
    private(set) var count = 0

    init(processed: UInt64 = 0) {
        slots = Array(repeating: [], count: Self.slotCount)
        occupied = Array(repeating: 0, count: Self.slotCount / 64)
        self.processed = processed
    }

    var isEmpty: Bool { count == 0 }

    /// Adds an entry due at `due` (a tick already handed out counts as the
    /// next one).
    mutating func insert(_ item: Element, due: UInt64) {
        let d = max(due, processed &+ 1)
        let index = Int(d & Self.mask)
        slots[index].append(Entry(due: d, item: item))
        occupied[index >> 6] |= 1 << UInt64(index & 63)
        count += 1
    }

    /// Moves every live entry due at or before `now` into `out`, drops the
    /// dead ones it meets, and marks every tick up to `now` handed out.
    mutating func collect(upTo now: UInt64, isLive: (Element) -> Bool, into out: inout [Element]) {
        guard now > processed else { return }
        // Behind by a rotation or more: every slot once.
        let from = now - processed >= UInt64(Self.slotCount) ? now - UInt64(Self.slotCount) + 1 : processed + 1
        var tick = from
        while let k = nextOccupied(from: tick, through: now) {
            let index = Int(k & Self.mask)
            var keep: [Entry] = []
            for e in slots[index] {
                if !isLive(e.item) {
                    count -= 1
                } else if e.due <= now {
                    count -= 1
                    out.append(e.item)
                } else {
                    keep.append(e)
                }
            }
            setSlot(index, keep)
            tick = k + 1
        }
        processed = now
    }

    /// The first tick after `processed` at which a live entry is due,
    /// looking one rotation ahead (dead entries met on the way are
    /// dropped); the end of that rotation when only later rotations hold
    /// entries; nil when nothing is held.
    mutating func nextDue(isLive: (Element) -> Bool) -> UInt64? {
        let end = processed + UInt64(Self.slotCount)
        var tick = processed + 1
        while count > 0, let k = nextOccupied(from: tick, through: end) {
            let index = Int(k & Self.mask)
            var found = false
            var dead = 0
            for e in slots[index] {
                if !isLive(e.item) {
                    dead += 1
                } else if e.due <= k {
                    found = true
                }
            }
            if dead > 0 {
                count -= dead
                setSlot(index, slots[index].filter { isLive($0.item) })
            }
            if found { return k }
            tick = k + 1
        }
        return count > 0 ? end : nil
    }

    private mutating func setSlot(_ index: Int, _ entries: [Entry]) {
        slots[index] = entries
        if entries.isEmpty { occupied[index >> 6] &= ~(1 << UInt64(index & 63)) }
    }

    /// The first tick in `from...through` (less than a rotation apart, or
    /// exactly one) whose slot holds something.
    private func nextOccupied(from: UInt64, through: UInt64) -> UInt64? {
        var k = from
        while k <= through {
            let index = Int(k & Self.mask)
            let bit = UInt64(index & 63)
            let word = occupied[index >> 6] >> bit
            if word == 0 {
                k += 64 - bit
            } else {
                k += UInt64(word.trailingZeroBitCount)
                return k <= through ? k : nil
            }
        }
        return nil
    }
}

/// Transaction wake-ups on a hashed timing wheel (`TimerSlots`): starting
/// and cancelling a timer cost O(1). The event loop is woken only at ticks
/// where a timer is due — one NIO scheduled callback for the earliest, no
/// tick while nothing is due and none at all while the wheel is empty.
///
/// A timer may fire late by up to 1/32 of its delay (at least one 10 ms
/// tick): long timers (Timer B, F, L, K, C: seconds to minutes) are rounded
/// to coarser ticks so that many of them share one wake-up, as the
/// kernel's timer slack does.
final class TimerWheel: @unchecked Sendable { // every mutable field is guarded by `lock`
    /// A started timer; `cancel()` stops it from firing.
    final class Timer: @unchecked Sendable { // `action` is guarded by the wheel's lock
        fileprivate var action: (() -> Void)?
        private let lock: NIOLock
        fileprivate init(lock: NIOLock, action: @escaping () -> Void) {
            self.lock = lock
            self.action = action
        }
        /// Safe from any thread; a timer already taken off the wheel to fire
        /// still runs (its owner checks that it is still the current one).
        /// What the action holds is released now, not when its tick comes.
        func cancel() { lock.withLock { action = nil } }
    }

    /// The loop's callback for one armed tick (stored inline by NIO, no allocation).
    private struct Wake: NIOScheduledCallbackHandler, Sendable {
        let wheel: TimerWheel
        let tick: UInt64
        func handleScheduledCallback(eventLoop: some EventLoop) { wheel.fire(tick) }
    }

    static let tickMilliseconds: Int64 = 10
    private var slots = TimerSlots<Timer>()
    /// Ticks with a callback pending on the loop. Callbacks are never
    /// cancelled (NIO cancels in time linear in its queue): one that finds
    /// nothing due just arms the next.
    private var armed: [UInt64] = []
    private let lock = NIOLock()
    let loop: EventLoop
    private let start: NIODeadline
    private let clock: @Sendable () -> NIODeadline

    init(loop: EventLoop, clock: @escaping @Sendable () -> NIODeadline = { NIODeadline.now() }) {
        self.loop = loop
        self.clock = clock
        self.start = clock()
    }

    private func currentTick() -> UInt64 {
        UInt64(max(0, (clock() - start).nanoseconds / (Self.tickMilliseconds * 1_000_000)))
    }

    /// The tick at which a timer of `milliseconds` started at tick `now`
    /// fires: at least one tick on, rounded up to a multiple of a power of
    /// two no larger than 1/32 of the delay.
    static func dueTick(now: UInt64, milliseconds: Int) -> UInt64 {
        let ms = Int64(max(0, min(milliseconds, Int(Int32.max))))
        let ticks = UInt64(max(1, (ms + tickMilliseconds - 1) / tickMilliseconds))
        let slack = ticks / 32
        let granule: UInt64 = slack == 0 ? 1 : 1 << UInt64(63 - slack.leadingZeroBitCount)
        let due = now + ticks
        return (due + granule - 1) / granule * granule
    }

    /// Runs `action` after `milliseconds` (see `dueTick` for how late).
    @discardableResult
    func schedule(milliseconds: Int, _ action: @escaping () -> Void) -> Timer {
        let t = Timer(lock: lock, action: action)
        lock.withLock {
            let due = Self.dueTick(now: currentTick(), milliseconds: milliseconds)
            slots.insert(t, due: due)
            if armed.allSatisfy({ $0 > due }) { armLocked(due) }
        }
        return t
    }

    private func armLocked(_ tick: UInt64) {
        let deadline = start + .nanoseconds(Int64(clamping: tick) &* (Self.tickMilliseconds * 1_000_000))
        do {
            try loop.scheduleCallback(at: deadline, handler: Wake(wheel: self, tick: tick))
            armed.append(tick)
        } catch {
            // The loop is shutting down: nothing will run on it any more.
        }
    }

    /// An armed tick came: fires every timer due up to now (catching up on
    /// a late wake-up) and arms the next tick that has one.
    private func fire(_ tick: UInt64) {
        let now = currentTick()
        var due: [Timer] = []
        var actions: [() -> Void] = []
        lock.withLock {
            if let i = armed.firstIndex(of: tick) { armed.remove(at: i) }
            slots.collect(upTo: now, isLive: { $0.action != nil }, into: &due)
            for t in due {
                if let a = t.action { actions.append(a) }
                t.action = nil
            }
            if let next = slots.nextDue(isLive: { $0.action != nil }), armed.allSatisfy({ $0 > next }) {
                armLocked(next)
            }
        }
        for a in actions { a() }
    }

    /// Timers held (cancelled ones included until the wheel drops them) and
    /// wake-ups armed on the loop — for tests.
    var state: (held: Int, armed: [UInt64]) { lock.withLock { (slots.count, armed.sorted()) } }
}
