import NIOConcurrencyHelpers
import NIOCore

/// Transaction timers on a hashed timing wheel: one NIO task ticks every
/// 10 ms; starting and cancelling a timer cost O(1). NIO's own scheduled
/// tasks cancel in time linear in the number pending, which with tens of
/// thousands of transactions (a timer or three each) dominated the CPU
/// profile of proxied calls.
final class TimerWheel: @unchecked Sendable {
    /// A started timer; `cancel()` stops it from firing.
    final class Timer: @unchecked Sendable {
        fileprivate let due: UInt64
        fileprivate let action: () -> Void
        /// Read and written under the wheel's lock.
        fileprivate var cancelled = false
        private let lock: NIOLock
        fileprivate init(due: UInt64, lock: NIOLock, action: @escaping () -> Void) {
            self.due = due
            self.lock = lock
            self.action = action
        }
        /// Safe from any thread; a timer already taken off the wheel to fire still runs.
        func cancel() { lock.withLock { cancelled = true } }
    }

    static let tickMilliseconds: Int64 = 10
    private let slotCount = 1024
    private var slots: [[Timer]]
    private var tick: UInt64 = 0
    private let start = NIODeadline.now()
    private let lock = NIOLock()
    private var task: RepeatedTask?

    init(loop: EventLoop) {
        slots = Array(repeating: [], count: slotCount)
        task = loop.scheduleRepeatedTask(initialDelay: .milliseconds(Self.tickMilliseconds), delay: .milliseconds(Self.tickMilliseconds)) { [weak self] task in
            // A wheel that is gone stops its tick from the loop itself (a
            // cancel from deinit could come after the loop shut down).
            guard let self else {
                task.cancel()
                return
            }
            self.advance()
        }
    }


    /// Runs `action` after `milliseconds` (rounded up to the next tick).
    @discardableResult
    func schedule(milliseconds: Int, _ action: @escaping () -> Void) -> Timer {
        lock.withLock {
            let ticks = UInt64(max(1, (Int64(milliseconds) + Self.tickMilliseconds - 1) / Self.tickMilliseconds))
            let t = Timer(due: tick + ticks, lock: lock, action: action)
            slots[Int(t.due % UInt64(slotCount))].append(t)
            return t
        }
    }

    /// Fires every timer due up to now (catching up on late ticks).
    private func advance() {
        let now = UInt64((NIODeadline.now() - start).nanoseconds / (Self.tickMilliseconds * 1_000_000))
        var due: [Timer] = []
        lock.withLock {
            while tick < now {
                tick += 1
                let index = Int(tick % UInt64(slotCount))
                guard !slots[index].isEmpty else { continue }
                var keep: [Timer] = []
                for t in slots[index] where !t.cancelled {
                    if t.due <= tick { due.append(t) } else { keep.append(t) }
                }
                slots[index] = keep
            }
        }
        for t in due where !lock.withLock({ t.cancelled }) { t.action() }
    }
}
