import Foundation
import Histogram
import NIOConcurrencyHelpers

/// Counters and a latency histogram shared by every load handler. Handlers
/// record from the event loop; the command reads a snapshot between steps.
final class Stats: @unchecked Sendable { // counters and the histogram are guarded by its lock
    struct Snapshot {
        var started = 0
        var completed = 0
        var failures = 0
        var timeouts = 0
        var retransmissions = 0
        var latency = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)

        /// Latency percentile in milliseconds (recorded in microseconds).
        func ms(_ percentile: Double) -> Double {
            latency.totalCount == 0 ? 0 : Double(latency.valueAtPercentile(percentile)) / 1000
        }
        /// Failures plus retransmissions per started request.
        var lossRatio: Double { started == 0 ? 0 : Double(failures + timeouts + retransmissions) / Double(started) }
    }

    private let lock = NIOLock()
    private var current = Snapshot()

    func started() { lock.withLock { current.started += 1 } }
    func retransmitted() { lock.withLock { current.retransmissions += 1 } }
    func timedOut() { lock.withLock { current.timeouts += 1 } }
    func failed() { lock.withLock { current.failures += 1 } }
    func completed(microseconds: UInt64, ok: Bool) {
        lock.withLock {
            current.completed += 1
            if !ok { current.failures += 1 }
            _ = current.latency.record(max(1, min(microseconds, 60_000_000)))
        }
    }

    /// Returns the counts so far and starts a new interval.
    func take() -> Snapshot { lock.withLock { let s = current; current = Snapshot(); return s } }
}

/// Reads a server's CPU time and proportional memory (PSS) from /proc, summed
/// over the given processes (Kamailio runs several; shared memory is counted
/// once through PSS).
struct ProcessSampler {
    let pids: [Int32]
    let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))

    /// User + system CPU seconds of all processes.
    func cpuSeconds() -> Double {
        var ticks = 0
        for pid in pids {
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            // Fields after the command: state is [0], utime [11], stime [12].
            if fields.count > 12 { ticks += (Int(fields[11]) ?? 0) + (Int(fields[12]) ?? 0) }
        }
        return Double(ticks) / ticksPerSecond
    }

    /// Proportional set size of all processes in KiB.
    func pssKiB() -> Int {
        var total = 0
        for pid in pids {
            guard let text = try? String(contentsOfFile: "/proc/\(pid)/smaps_rollup", encoding: .utf8) else { continue }
            for line in text.split(separator: "\n") where line.hasPrefix("Pss:") {
                total += Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "0") ?? 0
            }
        }
        return total
    }
}
