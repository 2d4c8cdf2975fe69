import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOPosix
import SIPConfig
import SIPCore
import SIPTransport
#if canImport(Glibc)
import Glibc
#endif

// MARK: Per-message metadata

/// The message the current thread is handling, so that every line logged
/// while it is handled (by the core, the script's `xlog`, the transaction
/// layer) carries its Call-ID, CSeq, source and transport without each
/// call site passing them. Set by `ProxyCore` only when the log level lets
/// per-message lines through (info or debug); at warning and below the
/// message path does not touch it. The fields are read only when a line is
/// actually written.
public enum MessageLogContext {
    /// One slot per thread, made on the thread's first message.
    final class Slot: @unchecked Sendable { // touched only by the thread that owns it (a thread-specific value)
        var message: ReceivedMessage?
    }

    static let slots = ThreadSpecificVariable<Slot>()

    static func begin(_ r: ReceivedMessage) {
        if let s = slots.currentValue {
            s.message = r
        } else {
            let s = Slot()
            s.message = r
            slots.currentValue = s
        }
    }

    static func end() {
        slots.currentValue?.message = nil
    }

    /// The metadata of the message being handled on this thread, if any:
    /// `call-id`, `cseq`, `src` (IP:port), `proto`; network values escaped.
    public static var current: Logger.Metadata? {
        guard let r = slots.currentValue?.message else { return nil }
        var m: Logger.Metadata = ["src": "\(r.sourceIP):\(r.sourcePort)", "proto": "\(r.proto.rawValue)"]
        if let v = r.message.headerValue(.callID) { m["call-id"] = "\(LogText.escaped(String(decoding: v, as: UTF8.self)))" }
        if let v = r.message.headerValue(.cseq) { m["cseq"] = "\(LogText.escaped(String(decoding: v, as: UTF8.self)))" }
        return m
    }
}

// MARK: Formats

/// How lines look: `text` (time, level, message, then metadata as
/// key=value) or `json` (one JSON object per line).
public enum LogLineFormat {
    static func text(_ e: LogEvent, label: String, metadata: Logger.Metadata, time: Bool) -> String {
        var s = time ? timestamp() + " " : ""
        s += "\(e.level) \(label): \(e.message)"
        for (k, v) in metadata.sorted(by: { $0.key < $1.key }) { s += " \(k)=\(v)" }
        return s
    }

    static func json(_ e: LogEvent, label: String, metadata: Logger.Metadata) -> String {
        var s = "{\"time\":\"\(timestamp())\",\"level\":\"\(e.level)\",\"logger\":"
        appendJSONString(label, to: &s)
        s += ",\"msg\":"
        appendJSONString("\(e.message)", to: &s)
        for (k, v) in metadata.sorted(by: { $0.key < $1.key }) where !["time", "level", "logger", "msg"].contains(k) {
            s += ","
            appendJSONString(k, to: &s)
            s += ":"
            appendJSONString("\(v)", to: &s)
        }
        return s + "}"
    }

    /// A JSON string literal (RFC 8259: quote, backslash and control characters escaped).
    static func appendJSONString(_ v: String, to s: inout String) {
        s += "\""
        for u in v.unicodeScalars {
            switch u {
            case "\"": s += "\\\""
            case "\\": s += "\\\\"
            case "\n": s += "\\n"
            case "\r": s += "\\r"
            case "\t": s += "\\t"
            case _ where u.value < 0x20 || u.value == 0x7F:
                let hex = String(u.value, radix: 16, uppercase: true)
                s += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: s.unicodeScalars.append(u)
            }
        }
        s += "\""
    }

    /// UTC, ISO 8601 with milliseconds.
    static func timestamp() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var t = ts.tv_sec
        var p = tm()
        gmtime_r(&t, &p)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", Int(p.tm_year) + 1900, Int(p.tm_mon) + 1, Int(p.tm_mday),
                      Int(p.tm_hour), Int(p.tm_min), Int(p.tm_sec), Int(ts.tv_nsec / 1_000_000))
    }

    static func mergedMetadata(_ handler: Logger.Metadata, _ e: LogEvent) -> Logger.Metadata {
        var m = handler
        if let em = e.metadata { m.merge(em) { $1 } }
        return m
    }
}

// MARK: Handlers

/// JSON lines to standard error (`log_format=json`): each line is one
/// JSON object written with one write(2), so lines of different threads
/// do not interleave. (Text lines go through swift-log's StreamLogHandler.)
public struct JSONLinesLogHandler: LogHandler {
    public var logLevel: Logger.Level = .trace
    public var metadata: Logger.Metadata = [:]
    let label: String

    public init(label: String) {
        self.label = label
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var line = LogLineFormat.json(event, label: label, metadata: LogLineFormat.mergedMetadata(metadata, event))
        line += "\n"
        line.withUTF8 { b in
            guard let base = b.baseAddress else { return }
            var off = 0
            while off < b.count {
                let n = write(2, base + off, b.count - off)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return }
                off += n
            }
        }
    }
}

/// Lines to the local syslog daemon over its UNIX datagram socket
/// (`/dev/log`, or `syslog_socket`), in the format glibc's syslog(3)
/// sends: `<PRI>Mmm dd hh:mm:ss NAME[PID]: MESSAGE`. The facility is
/// `log_facility`, NAME is `log_name`. A line that cannot be sent (no
/// daemon, its socket full) is dropped: logging never blocks a message.
public struct SyslogLogHandler: LogHandler {
    public var logLevel: Logger.Level = .trace
    public var metadata: Logger.Metadata = [:]
    let label: String
    let format: LogFormat
    let sink: SyslogSocket

    public init(label: String, format: LogFormat, sink: SyslogSocket) {
        self.label = label
        self.format = format
        self.sink = sink
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let m = LogLineFormat.mergedMetadata(metadata, event)
        let body = format == .json ? LogLineFormat.json(event, label: label, metadata: m) : LogLineFormat.text(event, label: label, metadata: m, time: false)
        sink.emit(severity: SyslogLogHandler.severity(event.level), body)
    }

    /// RFC 5424 severities.
    static func severity(_ l: Logger.Level) -> Int {
        switch l {
        case .trace, .debug: return 7
        case .info: return 6
        case .notice: return 5
        case .warning: return 4
        case .error: return 3
        case .critical: return 2
        }
    }
}

/// The connected datagram socket to the syslog daemon, shared by every
/// logger. Sends need no lock (one datagram each); reconnecting after the
/// daemon restarted takes one.
public final class SyslogSocket: Sendable {
    public let path: String
    let facility: Int
    let name: String
    private let fd: NIOLockedValueBox<Int32>

    /// Longest line sent (longer ones are cut): the usual datagram limit of syslog daemons.
    public static let maxLine = 8192

    public init(path: String, facility: SyslogFacility, name: String) {
        self.path = path
        self.facility = facility.code
        self.name = name
        self.fd = NIOLockedValueBox(-1)
        _ = reconnect(ifStill: -1)
    }

    /// Opens a new socket unless another thread already replaced `old`.
    private func reconnect(ifStill old: Int32) -> Int32 {
        fd.withLockedValue { fd in
            guard fd == old else { return fd }
            if fd >= 0 { close(fd) }
            fd = SyslogSocket.makeSocket(path)
            return fd
        }
    }

    static func makeSocket(_ path: String) -> Int32 {
        let s = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard s >= 0 else { return -1 }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { close(s); return -1 }
        withUnsafeMutableBytes(of: &addr.sun_path) { p in
            for (i, b) in bytes.enumerated() { p[i] = b }
        }
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(s, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        if ok != 0 { close(s); return -1 }
        return s
    }

    public func emit(severity: Int, _ body: String) {
        var line = "<\(facility | severity)>\(SyslogSocket.rfc3164Time()) \(name)[\(getpid())]: \(body)"
        if line.utf8.count > SyslogSocket.maxLine { line = String(decoding: line.utf8.prefix(SyslogSocket.maxLine), as: UTF8.self) }
        var current = fd.withLockedValue { $0 }
        for attempt in 0..<2 {
            if current < 0 || attempt == 1 { current = reconnect(ifStill: current) }
            guard current >= 0 else { return }
            let n = line.withUTF8 { send(current, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT)) }
            if n >= 0 { return }
            // The daemon went away (restart): reconnect once; full: drop.
            if errno != ECONNREFUSED && errno != ENOTCONN && errno != EBADF { return }
        }
    }

    static func rfc3164Time() -> String {
        var t = time(nil)
        var p = tm()
        localtime_r(&t, &p)
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        let mon = months[Int(p.tm_mon) % 12]
        return mon + String(format: " %2d %02d:%02d:%02d", Int(p.tm_mday), Int(p.tm_hour), Int(p.tm_min), Int(p.tm_sec))
    }
}
