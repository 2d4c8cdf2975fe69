import Foundation
import SIPConfig
import SIPProxy
import Testing

@Suite("Open relay warning")
struct RelayCheckTests {
    func load(_ script: String) throws -> Config {
        let dir = NSTemporaryDirectory() + "swiftser-relay-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try ("listen=udp:127.0.0.1:5060\n" + script).write(toFile: dir + "/r.cfg", atomically: true, encoding: .utf8)
        return try ConfigLoader.load(file: dir + "/r.cfg", functions: ScriptFunctions.catalogue)
    }

    @Test("a script that relays without authentication or a source check is flagged at the relay")
    func flagged() throws {
        let c = try load("request_route {\n  if (is_method(\"INVITE\")) { record_route(); }\n  t_relay();\n}\n")
        #expect(c.openRelay?.line == 4)
        #expect(c.warnings.contains { $0.location == c.openRelay })
        #expect(try load("request_route { forward(); }\n").openRelay != nil)
    }

    @Test("authentication, a source check or no relaying at all: no warning")
    func notFlagged() throws {
        #expect(try load("request_route { if (!proxy_authorize(\"$fd\", \"subscriber\")) { proxy_challenge(\"$fd\", \"1\"); exit; } t_relay(); }\n").openRelay == nil)
        #expect(try load("request_route { if (src_ip != \"10.0.0.1\") { drop; } t_relay(); }\n").openRelay == nil)
        #expect(try load("request_route { if ($si != \"10.0.0.1\") { drop; } t_relay(); }\n").openRelay == nil)
        #expect(try load("request_route { if (!is_peer_verified()) { drop; } t_relay(); }\n").openRelay == nil)
        #expect(try load("request_route { sl_send_reply(\"404\", \"No\"); }\n").openRelay == nil)
        let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        #expect(try ConfigLoader.load(file: repo + "/etc/swiftser.cfg", functions: ScriptFunctions.catalogue).openRelay == nil)
    }
}
