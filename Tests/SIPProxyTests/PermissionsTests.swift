import Foundation
import SIPConfig
@testable import SIPProxy
import Testing

@Suite("permissions: allow_source_address and the address table")
struct PermissionsTests {
    @Test("the address file: groups, addresses and ranges, ports, tags, comments")
    func parse() throws {
        let text = """
        # group address[/prefix] [port] [tag]
        1 10.0.0.0/8
        1 192.0.2.10 5070
        2\t2001:db8::/32\t0\tcarrier-b   # a comment
        3 127.0.0.1

        """
        let t = try AddressTable.parse(text, maxEntries: 10).get()
        #expect(t.entries.count == 4)
        #expect(t.match(ip: "10.1.2.3", port: 5060, group: 1)?.group == 1)
        #expect(t.match(ip: "10.1.2.3", port: 5060, group: 2) == nil)
        #expect(t.match(ip: "192.0.2.10", port: 5070, group: 1) != nil)
        #expect(t.match(ip: "192.0.2.10", port: 5060, group: 1) == nil)     // the port must match
        #expect(t.match(ip: "[2001:db8:5::1]", port: 1, group: 2)?.tag == "carrier-b")
        #expect(t.match(ip: "::ffff:10.9.9.9", port: 1, group: 1) != nil)    // IPv4-mapped source
        #expect(t.match(ip: "203.0.113.1", port: 5060) == nil)
        // A plain address is found before a range that also holds it.
        let both = try AddressTable.parse("5 127.0.0.0/8\n3 127.0.0.1\n", maxEntries: 10).get()
        #expect(both.match(ip: "127.0.0.1", port: 5060)?.group == 3)
        #expect(both.match(ip: "127.0.0.2", port: 5060)?.group == 5)
    }

    @Test("bad lines and too many entries are refused with the line number")
    func errors() {
        #expect(AddressTable.parse("1 10.0.0.0/8\n0 10.0.0.1\n", maxEntries: 10) == .failure(.badLine(line: 2, problem: .group)))
        #expect(AddressTable.parse("x 10.0.0.1", maxEntries: 10) == .failure(.badLine(line: 1, problem: .group)))
        #expect(AddressTable.parse("1 10.0.0.0/33", maxEntries: 10) == .failure(.badLine(line: 1, problem: .address)))
        #expect(AddressTable.parse("1 host.example", maxEntries: 10) == .failure(.badLine(line: 1, problem: .address)))
        #expect(AddressTable.parse("1 10.0.0.1 70000", maxEntries: 10) == .failure(.badLine(line: 1, problem: .port)))
        #expect(AddressTable.parse("1", maxEntries: 10) == .failure(.badLine(line: 1, problem: .fieldCount)))
        #expect(AddressTable.parse("1 10.0.0.1 0 tag extra", maxEntries: 10) == .failure(.badLine(line: 1, problem: .fieldCount)))
        #expect(AddressTable.parse("1 10.0.0.1\n1 10.0.0.2\n1 10.0.0.3\n", maxEntries: 2) == .failure(.tooManyEntries(limit: 2)))
        let dir = makeTempDir("addr")
        let big = String(repeating: "# padding\n", count: 200)
        try? big.write(toFile: dir + "/big.list", atomically: true, encoding: .utf8)
        #expect(AddressPermissions.read(dir + "/big.list", maxEntries: 2) == .failure(.tooLarge(path: dir + "/big.list", limit: 1024)))
        #expect(AddressPermissions.read(dir + "/none.list", maxEntries: 2) == .failure(.unreadable(path: dir + "/none.list")))
    }

    @Test("allow_source_address(group) and allow_source_address_group() on real requests; permissions.addressReload swaps the table, a bad file keeps the old one")
    func endToEnd() throws {
        let dir = makeTempDir("permissions")
        try "2 127.0.0.0/8\n".write(toFile: dir + "/address.list", atomically: true, encoding: .utf8)
        let proxy = try TestProxy("""
        listen=udp:127.0.0.1:0
        listen=udp:[::1]:0
        loadmodule "sl.so"
        loadmodule "permissions.so"
        modparam("permissions", "address_file", "address.list")
        request_route {
            if (allow_source_address()) { sl_send_reply("200", "group 1"); exit; }
            if (allow_source_address("2")) {
                $var(g) = allow_source_address_group();
                sl_send_reply("200", "group $var(g)");
                exit;
            }
            sl_send_reply("403", "Not allowed");
        }
        """, dir: dir)
        defer { proxy.stop() }
        func ask(_ host: String, _ port: UInt16) -> [String] {
            Subprocess.sipclient(["--proto", "udp", "--host", host, "--port", String(port), "--options", "--wait", "3"]).lines
        }
        let v4 = proxy.port(.udp), v6 = proxy.port(.udp, ipv6: true)
        #expect(ask("127.0.0.1", v4) == ["RESPONSE SIP/2.0 200 group 2"])
        #expect(ask("::1", v6) == ["RESPONSE SIP/2.0 403 Not allowed"])

        let path = proxy.config.core.controlSocket
        try "1 ::1\n2 127.0.0.0/8\n".write(toFile: dir + "/address.list", atomically: true, encoding: .utf8)
        let reloaded = ControlSocket.call(path, "permissions.addressReload")["result"] as? [String: Any]
        #expect(reloaded?["entries"] as? Int == 2, "\(String(describing: reloaded))")
        #expect(ask("::1", v6) == ["RESPONSE SIP/2.0 200 group 1"])
        let dump = ControlSocket.call(path, "permissions.addressDump")["result"] as? [[String: Any]]
        #expect(dump?.count == 2 && dump?.first?["address"] as? String == "::1/128", "\(String(describing: dump))")

        try "1 not-an-address\n".write(toFile: dir + "/address.list", atomically: true, encoding: .utf8)
        let failed = ControlSocket.call(path, "permissions.addressReload")
        #expect(ControlSocket.errorCode(failed) != nil, "\(failed)")
        #expect(ask("::1", v6) == ["RESPONSE SIP/2.0 200 group 1"])
    }

    @Test("swiftser check and start-up refuse a bad address file")
    func checkRefuses() throws {
        let dir = makeTempDir("permissions-check")
        try "1 10.0.0.1 notaport\n".write(toFile: dir + "/address.list", atomically: true, encoding: .utf8)
        let config = try ConfigLoader.load(text: """
        modparam("permissions", "address_file", "address.list")
        request_route { if (!allow_source_address()) { drop; } }
        """, directory: dir, functions: ScriptFunctions.catalogue)
        #expect(ModuleFiles.addressFileProblem(config) == AddressFileError.badLine(line: 1, problem: .port).description)
    }
}
