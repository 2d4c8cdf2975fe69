#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Cuts a TCP/TLS byte stream into SIP messages (RFC 3261 §18.3).
///
/// Feed octets as they arrive with `append(_:)`, then call `next()` until it
/// returns nil (more octets needed). CRLFs before a start line are skipped;
/// the RFC 5626 keep-alive ping (CRLFCRLF between messages) is reported so
/// the transport can answer with a single CRLF pong. A framing error
/// (missing, negative, non-numeric or conflicting Content-Length, or a
/// message over the limits) is unrecoverable: the caller closes the
/// connection.
public struct SIPStreamFramer: Sendable {
    public enum Event: Sendable, Equatable {
        /// The octets of exactly one message, ready for
        /// `SIPMessage.parse(_:framing: .stream)`.
        case message([UInt8])
        /// A CRLFCRLF keep-alive ping; answer with CRLF.
        case keepAlivePing
    }

    public let limits: SIPLimits
    private var buffer: [UInt8] = []
    private var start = 0
    /// Where the search for the end of the header section resumes.
    private var scanFrom = 0

    /// The buffer capacity kept between messages; a larger buffer is
    /// released once the message that needed it is taken out.
    public static let retainedCapacity = 16 * 1024

    /// The octets the buffer has room for now (for tests of the shrink).
    public var bufferCapacity: Int { buffer.capacity }

    public init(limits: SIPLimits = .default) {
        self.limits = limits
    }

    /// Octets buffered and not yet returned as a message.
    public var bufferedCount: Int { buffer.count - start }

    /// After `next()` returned nil: the first octets of a message wait for
    /// the rest (line ends kept to tell a ping from a pong do not count).
    public var hasPartialMessage: Bool {
        start < buffer.count && buffer[start] != ASCII.cr && buffer[start] != ASCII.lf
    }

    /// Adds received octets.
    public mutating func append<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        if start > 0 && start >= buffer.count / 2 {
            buffer.removeFirst(start)
            scanFrom -= start
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    /// The next complete message or ping, nil when more octets are needed.
    public mutating func next() throws(SIPParseError) -> Event? {
        // Keep-alives and stray line ends between messages.
        while start < buffer.count, buffer[start] == ASCII.cr || buffer[start] == ASCII.lf {
            let avail = buffer.count - start
            if avail >= 4, buffer[start] == ASCII.cr, buffer[start + 1] == ASCII.lf,
               buffer[start + 2] == ASCII.cr, buffer[start + 3] == ASCII.lf {
                start += 4
                scanFrom = start
                return .keepAlivePing
            }
            if avail < 4 && buffer[start..<buffer.count].allSatisfy({ $0 == ASCII.cr || $0 == ASCII.lf }) {
                // Could be the first half of a ping, or a CRLF pong: wait
                // for the next octets to tell (a pong is then skipped as
                // line ends before a start line).
                return nil
            }
            start += 1
            scanFrom = start
        }
        guard start < buffer.count else { return nil }
        if scanFrom < start { scanFrom = start }
        // Find the end of the header section.
        guard let headerEnd = findHeaderEnd() else {
            if buffer.count - start > limits.maxHeaderBytes {
                throw SIPParseError(.tooLarge, offset: 0, "header section larger than \(limits.maxHeaderBytes) octets")
            }
            return nil
        }
        let cl = try contentLength(start..<headerEnd)
        guard cl <= limits.maxBodyBytes else {
            throw SIPParseError(.tooLarge, header: "Content-Length", offset: headerEnd - start, "body larger than \(limits.maxBodyBytes) octets")
        }
        let end = headerEnd + cl
        guard end <= buffer.count else { return nil }
        let message = Array(buffer[start..<end])
        start = end
        scanFrom = end
        if start == buffer.count {
            // Emptied: keep a small buffer for the next message, but give
            // back what a large one made it grow to (idle connections then
            // hold little memory each).
            buffer.removeAll(keepingCapacity: buffer.capacity <= SIPStreamFramer.retainedCapacity)
            start = 0
            scanFrom = 0
        }
        return .message(message)
    }

    /// Index after the empty line ending the headers (CRLFCRLF, or LF LF).
    private mutating func findHeaderEnd() -> Int? {
        let n = buffer.count
        let found: Int? = buffer.withUnsafeBufferPointer { buf in
            guard let base = buf.baseAddress else { return nil }
            var i = max(scanFrom, start)
            while i < n, let p = memchr(base + i, Int32(ASCII.lf), n - i) {
                let lf = base.distance(to: p.assumingMemoryBound(to: UInt8.self))
                if lf + 1 < n, buf[lf + 1] == ASCII.lf { return lf + 2 }
                if lf + 2 < n, buf[lf + 1] == ASCII.cr, buf[lf + 2] == ASCII.lf { return lf + 3 }
                i = lf + 1
            }
            return nil
        }
        if found == nil {
            // Resume a little before the end so a split terminator is found.
            scanFrom = max(start, n - 3)
        }
        return found
    }

    /// Finds and checks Content-Length in the header block: every line
    /// named Content-Length or `l` (folded values included) must hold the
    /// same non-negative number.
    private func contentLength(_ r: Range<Int>) throws(SIPParseError) -> Int {
        let found: Result<Int?, SIPParseError> = buffer.withUnsafeBufferPointer { buf in
            var value: Int? = nil
            let limit = r.upperBound
            func nextLF(_ from: Int) -> Int {
                guard from < limit, let p = memchr(buf.baseAddress! + from, Int32(ASCII.lf), limit - from) else { return limit }
                return buf.baseAddress!.distance(to: p.assumingMemoryBound(to: UInt8.self))
            }
            // Skip the start line.
            var i = nextLF(r.lowerBound) + 1
            while i < limit {
                let lineStart = i
                i = nextLF(i)
                var lineEnd = i
                i += 1
                if lineEnd > lineStart, buf[lineEnd - 1] == ASCII.cr { lineEnd -= 1 }
                guard lineStart < lineEnd else { continue }
                let first = buf[lineStart] | 0x20
                guard first == UInt8(ascii: "c") || first == UInt8(ascii: "l") else { continue }
                var j = lineStart
                while j < lineEnd, ASCII.isToken(buf[j]) { j += 1 }
                let name = UnsafeBufferPointer(rebasing: buf[lineStart..<j])
                guard ASCII.equalsLower(name, "content-length") || ASCII.equalsLower(name, "l") else { continue }
                while j < lineEnd, ASCII.isWSP(buf[j]) { j += 1 }
                guard j < lineEnd, buf[j] == ASCII.colon else { continue }
                var valueEnd = lineEnd
                // A folded value continues on following lines.
                while i < limit, ASCII.isWSP(buf[i]) {
                    i = nextLF(i)
                    valueEnd = i
                    i += 1
                }
                // Digits, with white space and line ends around or between
                // the folded parts ignored.
                var v: UInt64 = 0
                var digits = 0
                var bad = false
                for k in (j + 1)..<valueEnd {
                    let c = buf[k]
                    if ASCII.isDigit(c) {
                        v = v &* 10 &+ UInt64(c &- 0x30)
                        digits += 1
                        if v > UInt64(Int32.max) { bad = true; break }
                    } else if !(ASCII.isWSP(c) || c == ASCII.cr || c == ASCII.lf) {
                        bad = true
                        break
                    }
                }
                if bad || digits == 0 {
                    return .failure(SIPParseError(.invalidContentLength, header: "Content-Length", offset: lineStart - r.lowerBound, "Content-Length is not a non-negative number"))
                }
                if let old = value, old != Int(v) {
                    return .failure(SIPParseError(.invalidContentLength, header: "Content-Length", offset: lineStart - r.lowerBound, "two different Content-Length values"))
                }
                value = Int(v)
            }
            return .success(value)
        }
        guard let value = try found.get() else {
            throw SIPParseError(.invalidContentLength, header: "Content-Length", offset: 0, "Content-Length is required on a stream transport")
        }
        return value
    }
}
