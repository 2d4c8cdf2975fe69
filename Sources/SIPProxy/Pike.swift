import NIOConcurrencyHelpers

/// pike: per-source request rate. Each source address has a counter for
/// the current sampling window; more than `density` requests in one window
/// block the source until the end of the next window, and every further
/// window over the limit extends the block. The table is bounded: when
/// full, entries idle longer than `removeLatency` are dropped, and if none
/// can be, a new source is not tracked (and not blocked).
final class PikeTable: @unchecked Sendable {  // `entries` is guarded by `lock`
    struct Entry {
        var windowStart: UInt64
        var count: UInt32
        var blockedUntil: UInt64
        var lastSeen: UInt64
    }

    let window: UInt64
    let density: UInt32
    let removeLatency: UInt64
    let capacity: Int
    private let lock = NIOLock()
    private var entries: [String: Entry] = [:]
    private var lastSweep: UInt64 = 0

    /// Times in milliseconds.
    init(windowMs: UInt64, density: Int, removeLatencyMs: UInt64, capacity: Int) {
        window = max(1, windowMs)
        self.density = UInt32(clamping: max(1, density))
        removeLatency = removeLatencyMs
        self.capacity = max(1, capacity)
    }

    var count: Int { lock.withLock { entries.count } }

    /// Records a request from `source` at `now` (ms, monotonic); true when
    /// the source is blocked (flooding).
    func hit(_ source: String, now: UInt64) -> Bool {
        lock.withLock {
            if var e = entries[source] {
                if now &- e.windowStart >= window {
                    // A new window; the one that ended was over the limit: still flooding.
                    if e.count > density { e.blockedUntil = max(e.blockedUntil, now + window) }
                    e.windowStart = now
                    e.count = 0
                }
                e.count = e.count < UInt32.max ? e.count + 1 : e.count
                if e.count > density { e.blockedUntil = max(e.blockedUntil, e.windowStart + 2 * window) }
                e.lastSeen = now
                entries[source] = e
                return now < e.blockedUntil
            }
            if entries.count >= capacity {
                // At most one sweep a second: a flood of new sources cannot make every request O(table).
                if now &- lastSweep >= 1000 || lastSweep == 0 {
                    lastSweep = now
                    entries = entries.filter { now &- $0.value.lastSeen < removeLatency || now < $0.value.blockedUntil }
                }
                if entries.count >= capacity { return false }
            }
            let e = Entry(windowStart: now, count: 1, blockedUntil: 0, lastSeen: now)
            entries[source] = e
            return e.count > density
        }
    }
}
