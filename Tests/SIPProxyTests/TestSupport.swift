import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SIPConfig
import SIPProxy
import SIPTLS
import SIPTransport
import Testing

/// Config lines most call-flow tests load: tm, sl, the registrar with an
/// in-memory location store, textops.
enum TestModules {
    static let registrar = """
    loadmodule "tm.so"
    loadmodule "sl.so"
    loadmodule "registrar.so"
    loadmodule "usrloc.so"
    loadmodule "textops.so"
    modparam("usrloc", "db_mode", 0)
    """
}

enum Paths {
    static let repo: String = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    static let peers = repo + "/Tests/Peers"
    /// Test fixtures kept in the repository (Tests/Fixtures).
    static let fixtures = repo + "/Tests/Fixtures"
    static let rfc4475 = fixtures + "/rfc4475"
}

/// Runs a program with a time limit; returns its exit status and output.
enum Subprocess {
    struct Result {
        var status: Int32
        var out: String
        var err: String
        var lines: [String] { out.split(separator: "\n").map(String.init) }
    }

    static func run(_ executable: String, _ args: [String], timeout: TimeInterval = 20, stdin: Data? = nil, cwd: String? = nil) -> Result {
        let p = Process()
        if let cwd { p.currentDirectoryURL = URL(fileURLWithPath: cwd) }
        p.executableURL = URL(fileURLWithPath: executable.hasPrefix("/") ? executable : "/usr/bin/env")
        p.arguments = executable.hasPrefix("/") ? args : [executable] + args
        let out = Pipe(), err = Pipe(), inp = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = inp
        let outData = NIOLockedValueBox(Data())
        let errData = NIOLockedValueBox(Data())
        let eof = NIOLockedValueBox(0)
        out.fileHandleForReading.readabilityHandler = { h in
            let d = h.availableData
            if d.isEmpty { h.readabilityHandler = nil; eof.withLockedValue { $0 += 1 } } else { outData.withLockedValue { $0.append(d) } }
        }
        err.fileHandleForReading.readabilityHandler = { h in
            let d = h.availableData
            if d.isEmpty { h.readabilityHandler = nil; eof.withLockedValue { $0 += 1 } } else { errData.withLockedValue { $0.append(d) } }
        }
        do { try p.run() } catch { return Result(status: -1, out: "", err: "\(error)") }
        if let stdin { inp.fileHandleForWriting.write(stdin) }
        try? inp.fileHandleForWriting.close()
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { usleep(20_000) }
        if p.isRunning {
            p.terminate()
            usleep(200_000)
            if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        }
        p.waitUntilExit()
        // Drain what is left; a daemon the program started may hold the
        // pipes open, so wait for end-of-file only briefly.
        let drain = Date().addingTimeInterval(1)
        while eof.withLockedValue({ $0 }) < 2 && Date() < drain { usleep(10_000) }
        out.fileHandleForReading.readabilityHandler = nil
        err.fileHandleForReading.readabilityHandler = nil
        return Result(status: p.terminationStatus, out: String(decoding: outData.withLockedValue { $0 }, as: UTF8.self),
                      err: String(decoding: errData.withLockedValue { $0 }, as: UTF8.self))
    }

    /// The SIP test client (Tests/Peers/sipclient.py).
    static func sipclient(_ args: [String], timeout: TimeInterval = 15) -> Result {
        run("python3", [Paths.peers + "/sipclient.py"] + args, timeout: timeout)
    }
}

/// A free TCP and UDP port on 127.0.0.1, chosen below the kernel's ephemeral
/// range so that no other test's `bind(0)` or outgoing connection can take it
/// between this check and the caller's bind; never the same port twice in one
/// test process.
func freePort() -> UInt16 {
    for _ in 0..<1000 {
        let port = UInt16(Int.random(in: PortPool.range))
        guard PortPool.claim(port) else { continue }
        if bindable(port, SOCK_STREAM) && bindable(port, SOCK_DGRAM) { return port }
    }
    // Crowded: fall back to a port the kernel picks.
    return ephemeralPort()
}

private enum PortPool {
    static let handedOut = NIOLockedValueBox(Set<UInt16>())
    /// 10000 up to the first ephemeral port (`ip_local_port_range`).
    static let range: ClosedRange<Int> = {
        let text = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8)) ?? ""
        let low = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).first.flatMap { Int($0) } ?? 32768
        return low > 12000 ? 10000...(low - 1) : 1025...max(1025, low - 1)
    }()
    static func claim(_ port: UInt16) -> Bool { handedOut.withLockedValue { $0.insert(port).inserted } }
}

private func bindable(_ port: UInt16, _ kind: __socket_type) -> Bool {
    let fd = socket(AF_INET, Int32(kind.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = port.bigEndian
    return withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } } == 0
}

private func ephemeralPort() -> UInt16 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    return UInt16(bigEndian: addr.sin_port)
}

func makeTempDir(_ tag: String) -> String {
    let dir = NSTemporaryDirectory() + "swiftser-\(tag)-\(UUID().uuidString.prefix(8))"
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

/// Certificates for a test: a trusted CA, another CA, and what they sign.
final class TestPKI: @unchecked Sendable {
    let dir: String
    let ca: CertificateGenerator.Issued
    let otherCA: CertificateGenerator.Issued

    init() throws {
        dir = makeTempDir("pki")
        ca = try CertificateGenerator.makeCA(commonName: "Test CA")
        otherCA = try CertificateGenerator.makeCA(commonName: "Other CA")
        try CertificateGenerator.write(ca, certificate: dir + "/ca.pem", key: dir + "/ca.key")
        try CertificateGenerator.writeFile(dir + "/other-ca.pem", try otherCA.certificatePEM(), mode: 0o644)
    }

    var caFile: String { dir + "/ca.pem" }

    /// Issues NAME.pem / NAME.key; returns (certificate, key) paths.
    @discardableResult
    func issue(_ name: String, cn: String? = nil, dns: [String] = [], ips: [String] = [], sip: [String] = [], byOtherCA: Bool = false, expired: Bool = false) throws -> (String, String) {
        var req = CertificateGenerator.Request(commonName: cn ?? name)
        req.dnsNames = dns
        req.ipAddresses = ips
        req.sipURIs = sip
        if expired {
            req.notBefore = Date().addingTimeInterval(-400 * 86_400)
            req.validDays = 30
        }
        let issued = try CertificateGenerator.issue(req, by: byOtherCA ? otherCA : ca)
        let c = dir + "/\(name).pem", k = dir + "/\(name).key"
        // A test may issue a name again; the generator never writes over a file.
        try? FileManager.default.removeItem(atPath: c)
        try? FileManager.default.removeItem(atPath: k)
        try CertificateGenerator.write(issued, certificate: c, key: k)
        return (c, k)
    }
}

/// Log lines captured from a proxy under test.
final class LogCapture: @unchecked Sendable {
    private let box = NIOLockedValueBox<[String]>([])
    var lines: [String] { box.withLockedValue { $0 } }
    func append(_ s: String) { box.withLockedValue { $0.append(s) } }
    func contains(_ s: String) -> Bool { lines.contains { $0.contains(s) } }

    /// Waits (bounded) until a line containing `s` was logged.
    func wait(for s: String, timeout: TimeInterval = 5) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if contains(s) { return true }
            usleep(20_000)
        }
        return contains(s)
    }
}

struct CapturingLogHandler: LogHandler {
    let capture: LogCapture
    var logLevel: Logger.Level = .debug
    var metadata: Logger.Metadata = [:]
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String, file: String, function: String, line: UInt) {
        capture.append("\(level) \(message)")
        if ProcessInfo.processInfo.environment["SWIFTSER_TEST_LOG"] != nil { print("[proxy] \(level) \(message)") }
    }
}

/// Between the transport and the core of a proxy under test: records the
/// typed reason of every connection close, and passes everything on.
final class CloseRecorder: SIPTransportDelegate {
    let core: ProxyCore
    private let box = NIOLockedValueBox<[CloseReason]>([])
    init(core: ProxyCore) { self.core = core }

    var reasons: [CloseReason] { box.withLockedValue { $0 } }

    func transport(_ transport: SIPTransport, received r: ReceivedMessage) { core.transport(transport, received: r) }

    func transport(_ transport: SIPTransport, closed connection: SIPConnection, reason: CloseReason) {
        box.withLockedValue { $0.append(reason) }
        core.transport(transport, closed: connection, reason: reason)
    }

    /// Waits (bounded) until a close whose reason `matches` was recorded.
    func wait(timeout: TimeInterval = 5, for matches: (CloseReason) -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if reasons.contains(where: matches) { return true }
            usleep(20_000)
        }
        return reasons.contains(where: matches)
    }
}

/// A whole SwiftSER (transport, TLS, proxy, registrar) running in the test
/// process on loopback, from config text. Its folder is CFG_DIR.
final class TestProxy: @unchecked Sendable {
    let dir: String
    let config: Config
    let group: MultiThreadedEventLoopGroup
    let transport: SIPTransport
    let core: ProxyCore
    let control: ControlServer
    let log = LogCapture()
    /// Every connection close, with its reason.
    let closes: CloseRecorder
    let location: LocationService
    /// The `http_listen` listener, when the config names one.
    private(set) var http: HTTPStatusServer?

    init(_ text: String, dir givenDir: String? = nil, files: [String: String] = [:], locationFile: String? = nil) throws {
        dir = givenDir ?? makeTempDir("proxy")
        for (name, content) in files { try content.write(toFile: dir + "/" + name, atomically: true, encoding: .utf8) }
        let file = dir + "/proxy.cfg"
        var cfgText = text
        if !cfgText.contains("control_socket") { cfgText = "control_socket=\"ctl.sock\"\n" + cfgText }
        try cfgText.write(toFile: file, atomically: true, encoding: .utf8)
        config = try ConfigLoader.load(file: file, functions: ScriptFunctions.catalogue)
        let capture = log
        let logger = Logger(label: "test-proxy", factory: { _ in CapturingLogHandler(capture: capture) })
        let tls: TLSDomainTable? = config.tls.disabled || !config.listens.contains(where: { $0.proto == .tls }) && config.tls.domains.allSatisfy({ $0.isDefault }) && !FileManager.default.fileExists(atPath: config.tls.defaultServer!.certificate)
            ? nil : try TLSDomainTable.build(config.tls)
        group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        location = try LocationService(path: locationFile)
        transport = SIPTransport(config: config, tls: tls, group: group, logger: logger)
        try transport.start()
        core = ProxyCore(config: config, transport: transport, location: location, logger: logger)
        closes = CloseRecorder(core: core)
        transport.delegate = closes
        control = ControlServer(core: core, config: config, logger: logger)
        do {
            try control.start(group: group)
            if let address = config.core.httpListen {
                let server = HTTPStatusServer(core: core, address: address, logger: logger, control: control, rpcAccess: config.core.httpRPC)
                try server.start(group: group)
                http = server
            }
        } catch {
            control.stop()
            transport.shutdown()
            try? group.syncShutdownGracefully()
            throw error
        }
    }

    func port(_ proto: TransportProtocol, ipv6: Bool = false) -> UInt16 {
        transport.listeners.first { $0.proto == proto && $0.isIPv6 == ipv6 }!.port
    }

    func stop() {
        http?.stop()
        control.stop()
        transport.shutdown()
        try? group.syncShutdownGracefully()
    }

    deinit { }
}

/// A peer program running in the background; its output lines are kept.
final class Background: @unchecked Sendable {
    let process = Process()
    let output = LogCapture()
    private var pending = ""
    private let lock = NIOLock()

    init(_ executable: String, _ args: [String], cwd: String? = nil) throws {
        if let cwd { process.currentDirectoryURL = URL(fileURLWithPath: cwd) }
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [executable] + args
        let out = Pipe()
        process.standardOutput = out
        process.standardError = out
        process.standardInput = FileHandle.nullDevice
        out.fileHandleForReading.readabilityHandler = { [weak self] h in
            guard let self else { return }
            let d = h.availableData
            if d.isEmpty { return }
            self.lock.withLock {
                self.pending += String(decoding: d, as: UTF8.self)
                while let nl = self.pending.firstIndex(of: "\n") {
                    self.output.append(String(self.pending[..<nl]))
                    self.pending = String(self.pending[self.pending.index(after: nl)...])
                }
            }
        }
        try process.run()
    }

    static func ua(_ args: [String]) throws -> Background { try Background("python3", [Paths.peers + "/ua.py"] + args) }

    func wait(for s: String, timeout: TimeInterval = 10) -> Bool { output.wait(for: s, timeout: timeout) }

    /// Waits for the program to end by itself (bounded), then stops it.
    @discardableResult
    func finish(timeout: TimeInterval = 20) -> Int32 {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        stop()
        return process.terminationStatus
    }

    func stop() {
        if process.isRunning {
            process.terminate()
            let deadline = Date().addingTimeInterval(2)
            while process.isRunning && Date() < deadline { usleep(20_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
        process.waitUntilExit()
        usleep(50_000)
    }

    var lines: [String] { output.lines }
}

/// The request_route and routes of etc/swiftser.cfg, so tests run the default script.
func defaultScript() -> String {
    let text = (try? String(contentsOfFile: Paths.repo + "/etc/swiftser.cfg", encoding: .utf8)) ?? ""
    guard let r = text.range(of: "request_route {") else { return "" }
    return String(text[r.lowerBound...])
}

extension ConfigLoader {
    /// A config text checked against SwiftSER's own function table.
    static func load(text: String) throws(ConfigErrors) -> Config {
        try load(text: text, functions: ScriptFunctions.catalogue)
    }
}
