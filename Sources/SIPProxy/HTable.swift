import Foundation
import NIOConcurrencyHelpers
import SIPConfig

/// One htable table (Kamailio's htable module): keys to integer or string
/// values, with an expiry, shared by every thread. The keys are spread
/// over up to 16 shards, each behind its own lock, so threads working on
/// different keys rarely meet. Bounded: at most `capacity` entries, each
/// shard holding its part; a full shard first drops its expired entries,
/// then refuses new keys (a key already there is still updated).
final class HTable: Sendable {
    struct Item: Sendable {
        var value: Value
        /// Milliseconds on the table's clock; 0: never.
        var expires: UInt64
    }

    let spec: HTableSpec
    private let shards: [NIOLockedValueBox<[String: Item]>]
    private let perShard: Int
    private let now: @Sendable () -> UInt64

    /// `now`: milliseconds of a monotonic clock (tests give their own).
    init(_ spec: HTableSpec, now: @escaping @Sendable () -> UInt64 = { DispatchTime.now().uptimeNanoseconds / 1_000_000 }) {
        self.spec = spec
        let count = min(16, 1 << spec.size)
        shards = (0..<count).map { _ in NIOLockedValueBox([:]) }
        perShard = max(1, spec.capacity / count)
        self.now = now
    }

    var capacity: Int { perShard * shards.count }

    private func shard(_ key: String) -> NIOLockedValueBox<[String: Item]> {
        shards[Int(UInt(bitPattern: key.hashValue) % UInt(shards.count))]
    }

    /// The value of `key`, or `initval` (else nil) when it is absent or expired.
    func get(_ key: String) -> Value? {
        let t = now()
        let found: Value? = shard(key).withLockedValue { items in
            guard let item = items[key] else { return nil }
            if item.expires != 0 && item.expires <= t {
                items[key] = nil
                return nil
            }
            return item.value
        }
        return found ?? spec.initval.map { .int($0) }
    }

    /// Sets `key`; false when the table is full (the key is not stored).
    @discardableResult
    func set(_ key: String, _ value: Value) -> Bool {
        let t = now()
        let life = UInt64(spec.autoexpire) * 1000
        let limit = perShard
        let updateExpire = spec.updateExpire
        return shard(key).withLockedValue { items in
            if var item = items[key], item.expires == 0 || item.expires > t {
                item.value = value
                if updateExpire && life > 0 { item.expires = t + life }
                items[key] = item
                return true
            }
            if items.count >= limit {
                items = items.filter { $0.value.expires == 0 || $0.value.expires > t }
                if items.count >= limit { return false }
            }
            items[key] = Item(value: value, expires: life > 0 ? t + life : 0)
            return true
        }
    }

    /// Removes `key`; true when it was there (and not expired).
    @discardableResult
    func remove(_ key: String) -> Bool {
        let t = now()
        return shard(key).withLockedValue { items in
            guard let item = items.removeValue(forKey: key) else { return false }
            return item.expires == 0 || item.expires > t
        }
    }

    /// Empties the table.
    func reset() {
        for s in shards { s.withLockedValue { $0.removeAll() } }
    }

    /// The entries not expired, sorted by key (htable.dump).
    func entries() -> [(key: String, value: Value, secondsLeft: Int?)] {
        let t = now()
        var out: [(key: String, value: Value, secondsLeft: Int?)] = []
        for s in shards {
            s.withLockedValue { items in
                for (k, item) in items where item.expires == 0 || item.expires > t {
                    out.append((k, item.value, item.expires == 0 ? nil : Int((item.expires - t + 999) / 1000)))
                }
            }
        }
        return out.sorted { $0.key < $1.key }
    }

    /// Entries held now, expired ones not yet dropped included.
    var count: Int { shards.reduce(0) { n, s in n + s.withLockedValue { $0.count } } }
}

/// The tables the config declares, by name. Made once at start: a
/// reload keeps every table and its contents (a changed declaration needs
/// a restart).
final class HTables: Sendable {
    let byName: [String: HTable]

    init(_ specs: [HTableSpec]) {
        var m: [String: HTable] = [:]
        for s in specs { m[s.name] = HTable(s) }
        byName = m
    }

    subscript(name: String) -> HTable? { byName[name] }
}
