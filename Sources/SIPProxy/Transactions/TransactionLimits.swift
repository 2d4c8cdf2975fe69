import Atomics
import SIPConfig

/// The caps on transactions held at once: in all (`max_transactions`) and
/// for requests from one source address (`max_transactions_per_ip`).
struct TransactionLimits: Sendable, Equatable {
    var total = 100_000
    var perSource = 10_000

    init() {}

    init(_ s: TransactionSettings) {
        total = max(1, s.maxTransactions)
        perSource = max(1, s.maxTransactionsPerIP)
    }

    /// Why a new transaction was not made.
    enum Refusal: Int, CaseIterable, Sendable, Equatable, Error {
        /// `max_transactions`: the proxy holds as many as it may.
        case total
        /// `max_transactions_per_ip`: the request's source holds as many as it may.
        case perSource

        var parameter: String { self == .total ? "max_transactions" : "max_transactions_per_ip" }
    }

    /// Whether one more transaction may be made when `total` are held in
    /// all and `fromSource` for the request's source (both counted before
    /// this one). Pure: the shell reserves, asks, and gives back on refusal.
    func admit(total: Int, fromSource: Int) -> Refusal? {
        if total >= self.total { return .total }
        if fromSource >= perSource { return .perSource }
        return nil
    }

    /// The Retry-After (seconds) of the 503 a refused request gets: long
    /// enough for transactions to end (a black-holed INVITE is held for
    /// `fr_timer`), short enough that a client comes back soon.
    static let retryAfter = 5
}

/// Transactions held per source address, counted without a lock and in a
/// fixed space whatever the number of sources: a count-min sketch of two
/// rows of atomic counters, each source counted in one counter per row,
/// picked by halves of a per-process seeded hash (`limitKeyHash`). A
/// source's estimate is the smaller of its two counters: never below its
/// true count; above it only when both of its counters are shared with
/// other sources holding many transactions. A row counts every
/// transaction once, so with the defaults (100,000 in all, 10,000 per
/// source) at most 10 counters of a row can reach the per-source cap, and
/// an address below it is refused wrongly only when both of its counters
/// are among those: odds of (10/4096)², about 1 in 170,000, and only
/// while sources hold the proxy nearly full anyway.
final class SourceCounter: Sendable {
    /// Counters per row (a power of two).
    static let width = 4096
    private let rows: [[ManagedAtomic<Int>]]

    init() {
        rows = (0..<2).map { _ in (0..<Self.width).map { _ in ManagedAtomic<Int>(0) } }
    }

    /// The two counters of a source, by its hash.
    struct Cells: Sendable, Equatable {
        var a: Int
        var b: Int
    }

    static func cells(hash: Int) -> Cells {
        let h = UInt64(bitPattern: Int64(hash))
        return Cells(a: Int(h & UInt64(width - 1)), b: Int((h >> 32) & UInt64(width - 1)))
    }

    /// Counts one more and returns the estimate before it.
    func increment(_ c: Cells) -> Int {
        let x = rows[0][c.a].loadThenWrappingIncrement(ordering: .relaxed)
        let y = rows[1][c.b].loadThenWrappingIncrement(ordering: .relaxed)
        return min(x, y)
    }

    func decrement(_ c: Cells) {
        rows[0][c.a].wrappingDecrement(ordering: .relaxed)
        rows[1][c.b].wrappingDecrement(ordering: .relaxed)
    }

    /// The estimate for a source: at least its true count.
    func estimate(_ c: Cells) -> Int {
        min(rows[0][c.a].load(ordering: .relaxed), rows[1][c.b].load(ordering: .relaxed))
    }
}
