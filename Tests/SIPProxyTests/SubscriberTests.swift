import CSQLite
import Foundation
import SIPConfig
@testable import SIPProxy
import Testing

@Suite("The subscriber table and swiftser user", .serialized)
struct SubscriberTests {
    @Test("put, find by user and domain, replace, remove; hashes use the domain as realm")
    func store() throws {
        let s = try SubscriberStore(path: nil)
        try s.put(.make(username: "alice", domain: "example.com", password: "pw", keepPassword: false))
        let a = try #require(try s.find(username: "alice", domain: "example.com"))
        #expect(a.ha1 == DigestHash.ha1(.md5, username: "alice", realm: "example.com", password: "pw"))
        #expect(a.ha1b == DigestHash.ha1(.md5, username: "alice@example.com", realm: "example.com", password: "pw"))
        #expect(a.ha1SHA256 == DigestHash.ha1(.sha256, username: "alice", realm: "example.com", password: "pw"))
        #expect(a.password.isEmpty)
        #expect(try s.find(username: "alice", domain: "other.com") == nil)
        #expect(try s.find(username: "alice", domain: nil) != nil)
        try s.put(.make(username: "alice", domain: "example.com", password: "new", keepPassword: true))
        #expect(try s.all().count == 1)
        #expect(try s.find(username: "alice", domain: "example.com")?.password == "new")
        #expect(try s.remove(username: "alice", domain: "example.com"))
        #expect(try !s.remove(username: "alice", domain: "example.com"))
        #expect(throws: SubscriberStore.StoreError.self) { try s.find(table: "subscriber; DROP TABLE x", username: "a", domain: nil) }
    }

    @Test("a subscriber table made by Kamailio (no ha1_sha256) is read; MD5 works")
    func kamailioTable() throws {
        let path = makeTempDir("kam") + "/kamailio.sqlite"
        var db: OpaquePointer?
        #expect(sqlite3_open(path, &db) == SQLITE_OK)
        let ha1 = DigestHash.ha1(.md5, username: "bob", realm: "example.com", password: "pw")
        #expect(sqlite3_exec(db, """
            CREATE TABLE subscriber (id INTEGER PRIMARY KEY NOT NULL, username VARCHAR(64) DEFAULT '' NOT NULL,
              domain VARCHAR(64) DEFAULT '' NOT NULL, password VARCHAR(64) DEFAULT '' NOT NULL,
              ha1 VARCHAR(128) DEFAULT '' NOT NULL, ha1b VARCHAR(128) DEFAULT '' NOT NULL,
              CONSTRAINT subscriber_account_idx UNIQUE (username, domain));
            INSERT INTO subscriber (username, domain, password, ha1, ha1b) VALUES ('bob', 'example.com', 'pw', '\(ha1)', '');
            """, nil, nil, nil) == SQLITE_OK)
        sqlite3_close(db)
        let s = try SubscriberStore(path: path)
        let bob = try #require(try s.find(username: "bob", domain: "example.com"))
        #expect(bob.ha1 == ha1 && bob.ha1SHA256.isEmpty && bob.password == "pw")
    }

    @Test("swiftser user add/passwd/list/rm: password from stdin, never argv; refusals exit non-zero",
          .enabled(if: FileManager.default.fileExists(atPath: swiftserBinary)))
    func command() throws {
        let dir = makeTempDir("users")
        try """
        listen=udp:127.0.0.1:5060
        loadmodule "registrar.so"
        loadmodule "usrloc.so"
        loadmodule "auth.so"
        loadmodule "auth_db.so"
        loadmodule "sl.so"
        modparam("usrloc", "db_url", "sqlite://\(dir)/db.sqlite")
        request_route { if (!www_authorize("$td", "subscriber")) { www_challenge("$td", "1"); exit; } sl_send_reply("200", "OK"); }
        """.write(toFile: dir + "/u.cfg", atomically: true, encoding: .utf8)
        func user(_ args: [String], stdin: String? = nil) -> Subprocess.Result {
            Subprocess.run(swiftserBinary, ["user"] + args.prefix(1) + ["-f", dir + "/u.cfg"] + args.dropFirst(), timeout: 15, stdin: stdin.map { Data($0.utf8) })
        }
        #expect(user(["add", "alice@Example.com"], stdin: "s3cret\n").status == 0)
        let store = try SubscriberStore(path: dir + "/db.sqlite")
        #expect(try store.find(username: "alice", domain: "example.com")?.ha1 == DigestHash.ha1(.md5, username: "alice", realm: "example.com", password: "s3cret"))
        #expect(user(["add", "alice@example.com"], stdin: "other\n").status != 0)
        #expect(user(["passwd", "alice@example.com"], stdin: "n3w\n").status == 0)
        #expect(try store.find(username: "alice", domain: "example.com")?.ha1SHA256 == DigestHash.ha1(.sha256, username: "alice", realm: "example.com", password: "n3w"))
        #expect(user(["passwd", "nobody@example.com"], stdin: "x\n").status != 0)
        #expect(user(["add", "bob@example.com"], stdin: "\n").status != 0)      // empty password
        #expect(user(["add", "bob"], stdin: "pw\n").status != 0)
        #expect(user(["add", "b:ob@example.com"], stdin: "pw\n").status != 0)
        let list = user(["list"])
        #expect(list.status == 0 && list.lines.contains { $0.hasPrefix("alice@example.com") }, "\(list.out) \(list.err)")
        #expect(user(["rm", "alice@example.com"]).status == 0)
        #expect(try store.find(username: "alice", domain: "example.com") == nil)
        #expect(user(["rm", "alice@example.com"]).status != 0)
        // A config that keeps nothing on disk is refused.
        try "listen=udp:127.0.0.1:5060\nmodparam(\"usrloc\", \"db_mode\", 0)\nrequest_route { drop; }\n".write(toFile: dir + "/m.cfg", atomically: true, encoding: .utf8)
        #expect(Subprocess.run(swiftserBinary, ["user", "add", "-f", dir + "/m.cfg", "x@example.com"], stdin: Data("pw\n".utf8)).status != 0)
    }

    @Test("the proxy started with an empty subscriber table says how to add a user; with one it does not",
          .enabled(if: FileManager.default.fileExists(atPath: swiftserBinary)))
    func startHint() throws {
        let dir = makeTempDir("hint")
        let port = freePort()
        try """
        debug=2
        listen=udp:127.0.0.1:\(port)
        alias="example.com"
        control_socket="ctl.sock"
        loadmodule "sl.so"
        loadmodule "auth.so"
        loadmodule "auth_db.so"
        modparam("usrloc", "db_url", "sqlite://\(dir)/db.sqlite")
        request_route { if (!www_authorize("$td", "subscriber")) { www_challenge("$td", "1"); exit; } sl_send_reply("200", "OK"); }
        """.write(toFile: dir + "/h.cfg", atomically: true, encoding: .utf8)
        do {
            let proxy = try Background(swiftserBinary, ["-f", dir + "/h.cfg"])
            defer { proxy.stop() }
            #expect(proxy.wait(for: "SwiftSER running"), "\(proxy.lines)")
            #expect(proxy.lines.contains { $0.contains("swiftser user add -f \(dir)/h.cfg alice@example.com") }, "\(proxy.lines)")
        }
        try SubscriberStore(path: dir + "/db.sqlite").put(.make(username: "alice", domain: "example.com", password: "pw", keepPassword: false))
        let again = try Background(swiftserBinary, ["-f", dir + "/h.cfg"])
        defer { again.stop() }
        #expect(again.wait(for: "SwiftSER running"), "\(again.lines)")
        #expect(!again.lines.contains { $0.contains("swiftser user add") })
    }
}
