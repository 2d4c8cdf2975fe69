import CSQLite
import Foundation
import NIOConcurrencyHelpers
import SIPCore
import SIPTransport

/// The location store (usrloc): bindings of addresses-of-record to
/// contacts. Kept in memory for lookups and written through to an
/// embedded SQLite file (WAL), read back at start, so a restart loses no
/// registration. With no file it is memory only (`db_mode=0`).
public final class LocationService: @unchecked Sendable { // bindings and the SQLite handle are guarded by `lock`; AORs by `aorLocks`
    public struct Binding: Sendable, Equatable {
        public var aor: String
        /// The contact URI as registered.
        public var contact: String
        /// Absolute expiry, seconds since 1970.
        public var expires: Int64
        public var q: Double?
        public var callID: String
        public var cseq: UInt32
        /// RFC 5626 `+sip.instance` and `reg-id`.
        public var instance: String?
        public var regID: UInt32?
        /// RFC 3327 Path values.
        public var path: [String]
        /// Where the REGISTER came from: transport, address, connection.
        public var proto: String
        public var receivedIP: String
        public var receivedPort: Int
        public var connectionID: UInt64?
        public var userAgent: String?
        /// The listener it arrived on (`proto:host:port`).
        public var socket: String

        public func secondsLeft(now: Int64) -> Int64 { max(0, expires - now) }
    }

    private let lock = NIOLock()
    private var byAOR: [String: [Binding]] = [:]
    private var db: OpaquePointer?
    /// Prepared statements by SQL text, reused for every REGISTER (preparing
    /// cost more than running them). Guarded by `lock`.
    private var statements: [String: OpaquePointer] = [:]
    public let path: String?

    public enum StoreError: Error, CustomStringConvertible {
        /// The database cannot be used at start: its path and a typed reason.
        case open(SQLiteOpenError)
        case sql(String)
        /// The store holds `limit` bindings in all (registrar
        /// `max_bindings`) and the change would add more.
        case full(limit: Int)
        public var description: String {
            switch self {
            case .open(let e): return "location \(e)"
            case .sql(let why): return "location database error: \(why)"
            case .full(let limit): return "the location store holds its maximum of \(limit) bindings"
            }
        }
    }

    /// Bindings held in memory, expired ones not yet purged included.
    /// Guarded by `lock`.
    private var stored = 0

    /// Opens (or creates) the database at `path` and loads every unexpired
    /// binding; nil keeps bindings in memory only.
    public init(path: String?) throws {
        self.path = path
        guard let path else { return }
        do {
            db = try SQLiteFile.connect(path, wal: true)
        } catch {
            throw StoreError.open(error)
        }
        try exec("PRAGMA synchronous=NORMAL")
        try exec("""
            CREATE TABLE IF NOT EXISTS location (
              aor TEXT NOT NULL, contact TEXT NOT NULL, expires INTEGER NOT NULL, q REAL,
              callid TEXT NOT NULL, cseq INTEGER NOT NULL, instance TEXT, reg_id INTEGER, path TEXT NOT NULL,
              proto TEXT NOT NULL, received_ip TEXT NOT NULL, received_port INTEGER NOT NULL,
              user_agent TEXT, socket TEXT NOT NULL, PRIMARY KEY (aor, contact))
            """)
        try load()
    }

    deinit {
        for stmt in statements.values { sqlite3_finalize(stmt) }
        sqlite3_close(db)
    }

    /// Set by `close()`: later writes fail instead of going to memory only.
    private var closed = false

    /// Closes the database at shutdown: the write-ahead log is checkpointed
    /// into the database file (SQLite does that when its last connection
    /// closes). Writes after this throw; reads answer from memory.
    public func close() {
        lock.withLock {
            guard !closed else { return }
            closed = true
            for stmt in statements.values { sqlite3_finalize(stmt) }
            statements = [:]
            sqlite3_close(db)
            db = nil
        }
    }

    private func exec(_ sql: String) throws {
        var err: UnsafeMutablePointer<CChar>?
        if sqlite3_exec(db, sql, nil, nil, &err) != SQLITE_OK {
            let why = err.map { String(cString: $0) } ?? "unknown"
            sqlite3_free(err)
            throw StoreError.sql(why)
        }
    }

    private func load() throws {
        let now = Int64(Date().timeIntervalSince1970)
        try exec("DELETE FROM location WHERE expires <= \(now)")
        var stmt: OpaquePointer?
        guard sqlite3_prepare_v2(db, "SELECT aor, contact, expires, q, callid, cseq, instance, reg_id, path, proto, received_ip, received_port, user_agent, socket FROM location", -1, &stmt, nil) == SQLITE_OK else {
            throw StoreError.sql(String(cString: sqlite3_errmsg(db)))
        }
        defer { sqlite3_finalize(stmt) }
        func text(_ i: Int32) -> String? { sqlite3_column_text(stmt, i).map { String(cString: $0) } }
        while sqlite3_step(stmt) == SQLITE_ROW {
            let b = Binding(
                aor: text(0) ?? "", contact: text(1) ?? "", expires: sqlite3_column_int64(stmt, 2),
                q: sqlite3_column_type(stmt, 3) == SQLITE_NULL ? nil : sqlite3_column_double(stmt, 3),
                callID: text(4) ?? "", cseq: UInt32(truncatingIfNeeded: sqlite3_column_int64(stmt, 5)), instance: text(6),
                regID: sqlite3_column_type(stmt, 7) == SQLITE_NULL ? nil : UInt32(truncatingIfNeeded: sqlite3_column_int64(stmt, 7)),
                path: (text(8) ?? "").split(separator: "\n").map(String.init), proto: text(9) ?? "udp", receivedIP: text(10) ?? "",
                receivedPort: Int(sqlite3_column_int64(stmt, 11)), connectionID: nil, userAgent: text(12), socket: text(13) ?? "")
            byAOR[b.aor, default: []].append(b)
            stored += 1
        }
    }

    /// The address-of-record key for a URI: `user@host`, host in lower case.
    public static func aor(_ uri: SIPURI) -> String {
        let user = uri.user.map { String(decoding: SIPURI.unescaped($0), as: UTF8.self) } ?? ""
        return user.isEmpty ? uri.hostName : "\(user)@\(uri.hostName)"
    }

    /// Locks that serialise the REGISTERs of one AOR (striped by hash): the
    /// registrar reads, merges and writes an AOR's bindings under one, so
    /// two REGISTERs on different threads cannot lose a binding.
    private let aorLocks = (0..<64).map { _ in NIOLock() }

    public func withAORLock<T>(_ aor: String, _ body: () throws -> T) rethrows -> T {
        // FNV-1a over the octets: a stripe only has to spread AORs, and
        // this costs a tenth of String hashing on every REGISTER. (Which
        // stripe an AOR falls on is no secret worth seeding: at worst two
        // AORs share a lock.)
        var h: UInt32 = 2_166_136_261
        for b in aor.utf8 { h = (h ^ UInt32(b)) &* 16_777_619 }
        let lock = aorLocks[Int(h % UInt32(aorLocks.count))]
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }

    /// Unexpired bindings of an AOR.
    public func bindings(for aor: String, now: Int64 = Int64(Date().timeIntervalSince1970)) -> [Binding] {
        lock.withLock { (byAOR[aor] ?? []).filter { $0.expires > now } }
    }

    /// Every unexpired binding (for `swiftser ctl ul`).
    public func all(now: Int64 = Int64(Date().timeIntervalSince1970)) -> [Binding] {
        lock.withLock { byAOR.values.flatMap { $0 }.filter { $0.expires > now } }
    }

    /// Address-of-records with an unexpired binding (usrloc's
    /// `registered_users`) and those bindings (`location_contacts`).
    public func counts(now: Int64 = Int64(Date().timeIntervalSince1970)) -> (users: Int, contacts: Int) {
        lock.withLock {
            var users = 0, contacts = 0
            for list in byAOR.values {
                var live = 0
                for b in list where b.expires > now { live += 1 }
                if live > 0 { users += 1 }
                contacts += live
            }
            return (users, contacts)
        }
    }

    /// False when the database cannot be read (readiness); true for a
    /// store kept in memory.
    public func isReachable() -> Bool {
        lock.withLock {
            guard let db else { return true }
            return sqlite3_exec(db, "SELECT count(*) FROM (SELECT 1 FROM location LIMIT 1)", nil, nil, nil) == SQLITE_OK
        }
    }

    /// Replaces an AOR's bindings with `bindings` (already merged by the registrar).
    ///
    /// `limit` (registrar `max_bindings`, 0: none) caps the bindings held in
    /// all: a change that would leave more than that, and more than the AOR
    /// had before, throws `StoreError.full` and changes nothing. Checked
    /// under the store's lock, so REGISTERs for different AORs at once
    /// cannot pass it together.
    public func replace(aor: String, with bindings: [Binding], limit: Int = 0) throws {
        try lock.withLock {
            if closed { throw StoreError.sql("the location database is closed (shutting down)") }
            let before = byAOR[aor]?.count ?? 0
            let after = stored - before + bindings.count
            if limit > 0, bindings.count > before, after > limit {
                // Expired bindings still count until they are purged: purge
                // once before refusing.
                let now = Int64(Date().timeIntervalSince1970)
                if purgeExpiredLocked(now: now) == 0 || stored - (byAOR[aor]?.count ?? 0) + bindings.count > limit {
                    throw StoreError.full(limit: limit)
                }
            }
            // Memory changes only once the database has committed.
            guard db != nil else {
                stored += bindings.count - (byAOR[aor]?.count ?? 0)
                byAOR[aor] = bindings.isEmpty ? nil : bindings
                return
            }
            try run("BEGIN", [])
            do {
                try run("DELETE FROM location WHERE aor = ?", [.text(aor)])
                for b in bindings {
                    try run("INSERT OR REPLACE INTO location VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", [
                        .text(b.aor), .text(b.contact), .int(b.expires), b.q.map { .real($0) } ?? .null, .text(b.callID), .int(Int64(b.cseq)),
                        b.instance.map { .text($0) } ?? .null, b.regID.map { .int(Int64($0)) } ?? .null, .text(b.path.joined(separator: "\n")),
                        .text(b.proto), .text(b.receivedIP), .int(Int64(b.receivedPort)), b.userAgent.map { .text($0) } ?? .null, .text(b.socket),
                    ])
                }
                try run("COMMIT", [])
                stored += bindings.count - (byAOR[aor]?.count ?? 0)
                byAOR[aor] = bindings.isEmpty ? nil : bindings
            } catch {
                try? exec("ROLLBACK")
                throw error
            }
        }
    }

    /// Removes expired bindings; returns how many.
    @discardableResult
    public func purgeExpired(now: Int64 = Int64(Date().timeIntervalSince1970)) -> Int {
        lock.withLock { purgeExpiredLocked(now: now) }
    }

    /// `purgeExpired` with `lock` held.
    private func purgeExpiredLocked(now: Int64) -> Int {
        var removed = 0
        for (aor, list) in byAOR where list.contains(where: { $0.expires <= now }) {
            let keep = list.filter { $0.expires > now }
            removed += list.count - keep.count
            byAOR[aor] = keep.isEmpty ? nil : keep
        }
        stored -= removed
        if db != nil, removed > 0 { try? exec("DELETE FROM location WHERE expires <= \(now)") }
        return removed
    }

    enum SQLValue { case text(String), int(Int64), real(Double), null }

    private func run(_ sql: String, _ values: [SQLValue]) throws {
        let stmt: OpaquePointer
        if let cached = statements[sql] {
            stmt = cached
        } else {
            var fresh: OpaquePointer?
            guard sqlite3_prepare_v2(db, sql, -1, &fresh, nil) == SQLITE_OK, let fresh else { throw StoreError.sql(String(cString: sqlite3_errmsg(db))) }
            statements[sql] = fresh
            stmt = fresh
        }
        defer {
            sqlite3_reset(stmt)
            sqlite3_clear_bindings(stmt)
        }
        let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
        for (i, v) in values.enumerated() {
            let idx = Int32(i + 1)
            switch v {
            case .text(let s): sqlite3_bind_text(stmt, idx, s, -1, transient)
            case .int(let n): sqlite3_bind_int64(stmt, idx, n)
            case .real(let d): sqlite3_bind_double(stmt, idx, d)
            case .null: sqlite3_bind_null(stmt, idx)
            }
        }
        guard sqlite3_step(stmt) == SQLITE_DONE else { throw StoreError.sql(String(cString: sqlite3_errmsg(db))) }
    }
}
