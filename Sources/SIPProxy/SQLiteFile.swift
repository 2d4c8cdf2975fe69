import CSQLite
import Foundation

/// Why an SQLite database cannot be used, from SQLite's result code.
public enum SQLiteProblem: Sendable, Equatable {
    /// The file (or its folder) cannot be opened or created.
    case cannotOpen
    /// The file is not an SQLite database (random bytes, another format).
    case notADatabase
    /// The database's pages are damaged.
    case corrupt
    /// Another process holds a lock on it longer than the busy timeout.
    case locked
    /// It may be read but not written (file mode, read-only medium).
    case readOnly
    /// Any other SQLite result code.
    case other(Int32)

    init(code: Int32) {
        switch code & 0xFF {
        case SQLITE_CANTOPEN, SQLITE_PERM, SQLITE_AUTH: self = .cannotOpen
        case SQLITE_NOTADB: self = .notADatabase
        case SQLITE_CORRUPT: self = .corrupt
        case SQLITE_BUSY, SQLITE_LOCKED: self = .locked
        case SQLITE_READONLY: self = .readOnly
        default: self = .other(code)
        }
    }

    /// Plain words for the start-up error.
    public var reason: String {
        switch self {
        case .cannotOpen: return "cannot be opened or created"
        case .notADatabase: return "is not an SQLite database (damaged, or another kind of file)"
        case .corrupt: return "is corrupt"
        case .locked: return "is locked by another process (still locked after the busy timeout)"
        case .readOnly: return "cannot be written"
        case .other(let code): return "cannot be used (SQLite error \(code))"
        }
    }
}

/// A database that cannot be used at start: its path and why.
public struct SQLiteOpenError: Error, Sendable, Equatable, CustomStringConvertible {
    public let path: String
    public let problem: SQLiteProblem
    /// SQLite's own message.
    public let detail: String
    public var description: String { "database '\(path)' \(problem.reason): \(detail)" }
}

/// How every SQLite store (location, subscribers) opens its file, so that
/// each gets the same treatment: a new file is created mode 0600 (SQLite
/// gives its -wal and -shm files the database file's mode), a busy timeout
/// is set, and a file that is not a database or is locked is refused at
/// once with the path and a typed reason, not at the first message.
enum SQLiteFile {
    /// How long a statement waits for another connection's lock (ms).
    static let busyTimeoutMilliseconds: Int32 = 2000

    /// Opens `path` (nil: an in-memory database). `wal`: switch the file
    /// to write-ahead logging. Throws when the file cannot be opened, is
    /// not a database, or cannot be locked for writing within the timeout.
    /// nil when `PRAGMA quick_check(1)` says "ok"; else the problem: a
    /// damaged page it found (`.corrupt`), or why it could not run (busy,
    /// I/O, memory: classed by SQLite's result code, not called corrupt).
    static func quickCheck(_ db: OpaquePointer) -> (SQLiteProblem, String)? {
        var stmt: OpaquePointer?
        guard sqlite3_prepare_v2(db, "PRAGMA quick_check(1)", -1, &stmt, nil) == SQLITE_OK, let stmt else {
            return (SQLiteProblem(code: sqlite3_extended_errcode(db)), String(cString: sqlite3_errmsg(db)))
        }
        defer { sqlite3_finalize(stmt) }
        guard sqlite3_step(stmt) == SQLITE_ROW else {
            return (SQLiteProblem(code: sqlite3_extended_errcode(db)), String(cString: sqlite3_errmsg(db)))
        }
        let answer = sqlite3_column_text(stmt, 0).map { String(cString: $0) } ?? ""
        return answer == "ok" ? nil : (.corrupt, answer)
    }

    static func connect(_ path: String?, wal: Bool) throws(SQLiteOpenError) -> OpaquePointer {
        let target = path ?? ":memory:"
        if let path {
            let dir = (path as NSString).deletingLastPathComponent
            if !dir.isEmpty { try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
            // Made here, not by SQLite (which would use 0644 less the umask).
            let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            if fd >= 0 { close(fd) }
        }
        var handle: OpaquePointer?
        let rc = sqlite3_open_v2(target, &handle, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nil)
        guard rc == SQLITE_OK, let db = handle else {
            let detail = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close(handle)
            throw SQLiteOpenError(path: target, problem: SQLiteProblem(code: rc), detail: detail)
        }
        sqlite3_busy_timeout(db, busyTimeoutMilliseconds)
        // SQLite reads the file only when first asked: ask now (the schema,
        // then the write lock) so that a bad or locked file stops the start.
        var probes = ["SELECT count(*) FROM sqlite_master", "BEGIN IMMEDIATE", "ROLLBACK"]
        if wal && path != nil { probes.insert("PRAGMA journal_mode=WAL", at: 1) }
        for sql in probes {
            let rc = sqlite3_exec(db, sql, nil, nil, nil)
            if rc != SQLITE_OK {
                let e = SQLiteOpenError(path: target, problem: SQLiteProblem(code: sqlite3_extended_errcode(db)), detail: String(cString: sqlite3_errmsg(db)))
                sqlite3_close(db)
                throw e
            }
        }
        // A damaged page deeper in a valid file: `PRAGMA quick_check` reads
        // every page once (linear in the file's size: about a second for
        // a few hundred MB) and answers "ok" or the first problem.
        if path != nil, let (problem, detail) = quickCheck(db) {
            sqlite3_close(db)
            throw SQLiteOpenError(path: target, problem: problem, detail: detail)
        }
        return db
    }
}
