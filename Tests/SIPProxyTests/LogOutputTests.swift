import Foundation
import Logging
import SIPConfig
import Testing
@testable import SIPProxy

@Suite("Log output: syslog, JSON lines, the log_* parameters")
struct LogOutputTests {
    func load(_ text: String) throws -> Config { try ConfigLoader.load(text: text + "request_route { exit; }\n", functions: ScriptFunctions.catalogue) }

    @Test("log_stderror, log_facility, log_name, log_format and syslog_socket are read; bad values are errors")
    func parameters() throws {
        let d = try load("\n").core
        #expect(d.logStderror && d.logFacility == .daemon && d.logName == "swiftser" && d.logFormat == .text && d.syslogSocket == "/dev/log")
        let c = try load("log_stderror=no\nlog_facility=LOG_LOCAL3\nlog_name=\"edge1\"\nlog_format=json\nsyslog_socket=\"/run/log.sock\"\n").core
        #expect(!c.logStderror && c.logFacility == .local3 && c.logName == "edge1" && c.logFormat == .json && c.syslogSocket == "/run/log.sock")
        #expect(try load("log_facility=local7\n").core.logFacility.code == 23 << 3)
        #expect(try load("log_facility=\"LOG_USER\"\n").core.logFacility.code == 8)
        for bad in ["log_facility=LOG_NOPE", "log_format=xml", "log_name=\"a b\"", "log_name=\"x:y\"", "log_stderror=maybe"] {
            #expect(throws: ConfigErrors.self, "\(bad)") { try load(bad + "\n") }
        }
    }

    func event(_ text: String, _ level: Logger.Level = .info, metadata: Logger.Metadata? = nil) -> LogEvent {
        LogEvent(level: level, message: Logger.Message(stringLiteral: text), metadata: metadata, source: nil, file: "f", function: "g", line: 1)
    }

    @Test("a JSON line is one object whose msg and metadata come back unchanged, quotes and control characters included")
    func jsonLine() throws {
        let text = "say \"hi\"\\ \u{1}\nnext\tline é"
        let line = LogLineFormat.json(event(text, .warning), label: "swiftser", metadata: ["call-id": "a\"b@c", "cseq": "1 INVITE"])
        #expect(!line.contains("\n"))
        let o = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(o["msg"] as? String == text)
        #expect(o["level"] as? String == "warning" && o["logger"] as? String == "swiftser")
        #expect(o["call-id"] as? String == "a\"b@c" && o["cseq"] as? String == "1 INVITE")
        #expect((o["time"] as? String)?.hasSuffix("Z") == true)
    }

    @Test("the syslog handler sends <PRI>TIME NAME[PID]: MESSAGE datagrams to the socket it is given, with the facility and the level's severity")
    func syslogDatagrams() throws {
        let path = makeTempDir("syslog") + "/log.sock"
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { p in for (i, b) in path.utf8.enumerated() { p[i] = b } }
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        try #require(bound == 0)
        var tv = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        func receive() -> String {
            var buf = [UInt8](repeating: 0, count: 9000)
            let n = recv(fd, &buf, buf.count, 0)
            return n > 0 ? String(decoding: buf[0..<n], as: UTF8.self) : ""
        }
        let sink = SyslogSocket(path: path, facility: .local0, name: "sertest")
        let text = SyslogLogHandler(label: "swiftser", format: .text, sink: sink)
        text.log(event: event("registered", .error, metadata: ["cseq": "2 REGISTER"]))
        let a = receive()
        // local0 (16) × 8 + error (3) = 131
        #expect(a.hasPrefix("<131>") && a.contains(" sertest[\(getpid())]: ") && a.hasSuffix("registered cseq=2 REGISTER"), "\(a)")
        let json = SyslogLogHandler(label: "swiftser", format: .json, sink: sink)
        json.log(event: event("hello", .debug))
        let b = receive()
        #expect(b.hasPrefix("<135>"), "\(b)")
        let body = try #require(b.range(of: "]: ").map { String(b[$0.upperBound...]) })
        #expect((try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any])?["msg"] as? String == "hello")
        // No daemon at the path: the line is dropped, nothing waits or throws.
        let nowhere = SyslogSocket(path: path + ".none", facility: .daemon, name: "x")
        SyslogLogHandler(label: "swiftser", format: .text, sink: nowhere).log(event: event("lost"))
    }
}
