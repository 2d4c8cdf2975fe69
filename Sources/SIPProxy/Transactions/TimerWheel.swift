import NIOConcurrencyHelpers
import NIOCore

/// Transaction wake-ups on a hashed timing wheel: starting and cancelling
/// cost O(1) (NIO's own scheduled tasks cancel in time linear in the
/// number pending). The wheel ticks every 10 ms only while it holds a
/// timer: an idle proxy is not woken at all.
final class TimerWheel: @unchecked Sendable { // every mutable field is guarded by `lock`
    /// A started timer; `cancel()` stops it from firing.
    final class Timer: @unchecked Sendable { // `cancelled` is guarded by the wheel's lock
        fileprivate let due: UInt64
        fileprivate let action: () -> Void
        fileprivate var cancelled = false
        private let lock: NIOLock
        fileprivate init(due: UInt64, lock: NIOLock, action: @escaping () -> Void) {
            self.due = due
            self.lock = lock
            self.action = action
        }
        /// Safe from any thread; a timer already taken off the wheel to fire
        /// still runs (its owner checks that it is still the current one).
        func cancel() { lock.withLock { cancelled = true } }
    }

    static let tickMilliseconds: Int64 = 10
    private let slotCount = 1024
    private var slots: [[Timer]]
    private var tick: UInt64 = 0
    /// Timers on the wheel, cancelled ones included until their slot is reached.
    private var pending = 0
    private let start = NIODeadline.now()
    private let lock = NIOLock()
    private let loop: EventLoop
    private var task: RepeatedTask?

    init(loop: EventLoop) {
        self.loop = loop
        slots = Array(repeating: [], count: slotCount)
    }

    private func currentTick() -> UInt64 {
        UInt64(max(0, (NIODeadline.now() - start).nanoseconds / (Self.tickMilliseconds * 1_000_000)))
    }

    /// Runs `action` after `milliseconds` (rounded up to the next tick).
    @discardableResult
    func schedule(milliseconds: Int, _ action: @escaping () -> Void) -> Timer {
        lock.withLock {
            if task == nil {
                // Nothing is pending: the wheel may jump to the present.
                tick = currentTick()
                task = loop.scheduleRepeatedTask(initialDelay: .milliseconds(Self.tickMilliseconds), delay: .milliseconds(Self.tickMilliseconds)) { [weak self] task in
                    // A wheel that is gone stops its tick from the loop itself.
                    guard let self else {
                        task.cancel()
                        return
                    }
                    self.advance()
                }
            }
            let ticks = UInt64(max(1, (Int64(max(0, milliseconds)) + Self.tickMilliseconds - 1) / Self.tickMilliseconds))
            let t = Timer(due: tick + ticks, lock: lock, action: action)
            slots[Int(t.due % UInt64(slotCount))].append(t)
            pending += 1
            return t
        }
    }

    /// Fires every timer due up to now (catching up on late ticks); stops
    /// ticking when none is left.
    private func advance() {
        let now = currentTick()
        var due: [Timer] = []
        lock.withLock {
            while tick < now {
                tick += 1
                let index = Int(tick % UInt64(slotCount))
                guard !slots[index].isEmpty else { continue }
                var keep: [Timer] = []
                for t in slots[index] {
                    if t.cancelled {
                        pending -= 1
                    } else if t.due <= tick {
                        pending -= 1
                        due.append(t)
                    } else {
                        keep.append(t)
                    }
                }
                slots[index] = keep
            }
            if pending == 0 {
                task?.cancel()
                task = nil
            }
        }
        for t in due where !lock.withLock({ t.cancelled }) { t.action() }
    }
}
