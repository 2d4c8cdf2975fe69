import CSQLite
import Foundation
import NIOConcurrencyHelpers
import SIPConfig

/// The `subscriber` table (Kamailio's auth_db columns: `username`,
/// `domain`, `password`, `ha1`, `ha1b`, plus `ha1_sha256`) in an embedded
/// SQLite file — by default the location database. With no file it is an
/// in-memory table (empty unless users are added through this object).
public final class SubscriberStore: @unchecked Sendable {  // the SQLite handle and statements are guarded by `lock`
    public struct Subscriber: Sendable, Equatable {
        public var username: String
        public var domain: String
        /// Plain text, only kept when `calculate_ha1` is used.
        public var password: String
        /// MD5(username:domain:password).
        public var ha1: String
        /// MD5(username@domain:domain:password), for agents that put the domain in the username.
        public var ha1b: String
        /// SHA-256(username:domain:password).
        public var ha1SHA256: String

        public init(username: String, domain: String, password: String, ha1: String, ha1b: String, ha1SHA256: String) {
            self.username = username
            self.domain = domain
            self.password = password
            self.ha1 = ha1
            self.ha1b = ha1b
            self.ha1SHA256 = ha1SHA256
        }

        /// A subscriber with the hashes computed from a password; the
        /// realm of the hashes is the domain (as `kamctl add` does).
        public static func make(username: String, domain: String, password: String, keepPassword: Bool) -> Subscriber {
            Subscriber(
                username: username, domain: domain, password: keepPassword ? password : "",
                ha1: DigestHash.ha1(.md5, username: username, realm: domain, password: password),
                ha1b: DigestHash.ha1(.md5, username: "\(username)@\(domain)", realm: domain, password: password),
                ha1SHA256: DigestHash.ha1(.sha256, username: username, realm: domain, password: password))
        }
    }

    public enum StoreError: Error, CustomStringConvertible {
        /// The database cannot be used at start: its path and a typed reason.
        case open(SQLiteOpenError)
        case sql(String)
        case badTable(String)
        public var description: String {
            switch self {
            case .open(let e): return "subscriber \(e)"
            case .sql(let why): return "subscriber database error: \(why)"
            case .badTable(let t): return "'\(t)' is not a table name (letters, digits and _ only)"
            }
        }
    }

    private let lock = NIOLock()
    private var db: OpaquePointer?
    private var statements: [String: OpaquePointer] = [:]
    public let path: String?

    /// Opens (or creates) the database and the `subscriber` table; nil
    /// path: in memory.
    public init(path: String?) throws {
        self.path = path
        do {
            db = try SQLiteFile.connect(path, wal: true)
        } catch {
            throw StoreError.open(error)
        }
        try exec("""
            CREATE TABLE IF NOT EXISTS subscriber (
              id INTEGER PRIMARY KEY AUTOINCREMENT,
              username TEXT NOT NULL DEFAULT '', domain TEXT NOT NULL DEFAULT '', password TEXT NOT NULL DEFAULT '',
              ha1 TEXT NOT NULL DEFAULT '', ha1b TEXT NOT NULL DEFAULT '', ha1_sha256 TEXT NOT NULL DEFAULT '',
              UNIQUE (username, domain))
            """)
        // A table made by Kamailio has no ha1_sha256 and maybe no unique key.
        if try !columnNames("subscriber").contains("ha1_sha256") {
            try exec("ALTER TABLE subscriber ADD COLUMN ha1_sha256 TEXT NOT NULL DEFAULT ''")
        }
        try? exec("CREATE UNIQUE INDEX IF NOT EXISTS subscriber_account ON subscriber (username, domain)")
    }

    /// Where the config keeps subscribers: auth_db `db_url`, else the
    /// usrloc database; nil (memory) when neither is a file.
    public static func defaultPath(_ config: Config) -> String? {
        if let p = config.auth.database { return p.isEmpty ? nil : p }
        return config.registrar.dbMode == 0 || config.registrar.database.isEmpty ? nil : config.registrar.database
    }

    deinit {
        for s in statements.values { sqlite3_finalize(s) }
        sqlite3_close(db)
    }

    private func exec(_ sql: String) throws {
        var err: UnsafeMutablePointer<CChar>?
        if sqlite3_exec(db, sql, nil, nil, &err) != SQLITE_OK {
            let why = err.map { String(cString: $0) } ?? "unknown"
            sqlite3_free(err)
            throw StoreError.sql(why)
        }
    }

    private func columnNames(_ table: String) throws -> Set<String> {
        var stmt: OpaquePointer?
        guard sqlite3_prepare_v2(db, "PRAGMA table_info(\(table))", -1, &stmt, nil) == SQLITE_OK else { throw StoreError.sql(String(cString: sqlite3_errmsg(db))) }
        defer { sqlite3_finalize(stmt) }
        var names: Set<String> = []
        while sqlite3_step(stmt) == SQLITE_ROW {
            if let t = sqlite3_column_text(stmt, 1) { names.insert(String(cString: t)) }
        }
        return names
    }

    static func validTableName(_ t: String) -> Bool {
        !t.isEmpty && t.utf8.count <= 64 && t.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x7A) || $0 == 0x5F }
    }

    private func statement(_ sql: String) throws -> OpaquePointer {
        if let s = statements[sql] { return s }
        var fresh: OpaquePointer?
        guard sqlite3_prepare_v2(db, sql, -1, &fresh, nil) == SQLITE_OK, let fresh else { throw StoreError.sql(String(cString: sqlite3_errmsg(db))) }
        // A few statements per table name the script uses; bounded by the script.
        statements[sql] = fresh
        return fresh
    }

    private func bind(_ stmt: OpaquePointer, _ values: [String]) {
        let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
        for (i, v) in values.enumerated() { sqlite3_bind_text(stmt, Int32(i + 1), v, -1, transient) }
    }

    private func rows(_ sql: String, _ values: [String]) throws -> [Subscriber] {
        let stmt = try statement(sql)
        defer { sqlite3_reset(stmt); sqlite3_clear_bindings(stmt) }
        bind(stmt, values)
        func text(_ i: Int32) -> String { sqlite3_column_text(stmt, i).map { String(cString: $0) } ?? "" }
        var out: [Subscriber] = []
        while true {
            let rc = sqlite3_step(stmt)
            if rc == SQLITE_DONE { break }
            guard rc == SQLITE_ROW else { throw StoreError.sql(String(cString: sqlite3_errmsg(db))) }
            out.append(Subscriber(username: text(0), domain: text(1), password: text(2), ha1: text(3), ha1b: text(4), ha1SHA256: text(5)))
            if out.count >= 100_000 { break }
        }
        return out
    }

    private func run(_ sql: String, _ values: [String]) throws -> Int {
        let stmt = try statement(sql)
        defer { sqlite3_reset(stmt); sqlite3_clear_bindings(stmt) }
        bind(stmt, values)
        guard sqlite3_step(stmt) == SQLITE_DONE else { throw StoreError.sql(String(cString: sqlite3_errmsg(db))) }
        return Int(sqlite3_changes(db))
    }

    private static let columns = "username, domain, password, ha1, ha1b, ha1_sha256"

    /// The subscriber `username` in `domain` (nil domain: by username
    /// only, Kamailio's use_domain=0; the first row when several match).
    public func find(table: String = "subscriber", username: String, domain: String?) throws -> Subscriber? {
        guard Self.validTableName(table) else { throw StoreError.badTable(table) }
        return try lock.withLock {
            if let domain {
                return try rows("SELECT \(Self.columns) FROM \(table) WHERE username = ? AND domain = ? LIMIT 1", [username, domain]).first
            }
            return try rows("SELECT \(Self.columns) FROM \(table) WHERE username = ? LIMIT 1", [username]).first
        }
    }

    /// Adds or replaces a subscriber.
    public func put(_ s: Subscriber) throws {
        _ = try lock.withLock {
            try run("INSERT INTO subscriber (\(Self.columns)) VALUES (?,?,?,?,?,?) ON CONFLICT(username, domain) DO UPDATE SET password = excluded.password, ha1 = excluded.ha1, ha1b = excluded.ha1b, ha1_sha256 = excluded.ha1_sha256",
                    [s.username, s.domain, s.password, s.ha1, s.ha1b, s.ha1SHA256])
        }
    }

    /// Removes a subscriber; true when there was one.
    @discardableResult
    public func remove(username: String, domain: String) throws -> Bool {
        try lock.withLock { try run("DELETE FROM subscriber WHERE username = ? AND domain = ?", [username, domain]) > 0 }
    }

    /// Every subscriber, sorted by domain then username.
    public func all() throws -> [Subscriber] {
        try lock.withLock { try rows("SELECT \(Self.columns) FROM subscriber ORDER BY domain, username", []) }
    }

    public func count() throws -> Int { try all().count }
}
