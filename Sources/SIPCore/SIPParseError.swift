/// Why a message was refused, precise enough for a useful `400` reason
/// phrase and a log line: what was wrong, in which header, at which offset.
public struct SIPParseError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// The request or status line does not follow RFC 3261 §7.1/§7.2.
        case malformedStartLine
        /// A SIP-Version other than SIP/2.0 (answered with 505).
        case unsupportedVersion
        /// A header line without a name or a colon.
        case malformedHeaderLine
        /// The header section does not end with an empty line.
        case unterminatedHeaders
        /// A header value that does not follow its grammar.
        case malformedHeader
        /// A mandatory header is absent.
        case missingHeader
        /// A single-valued header occurs more than once.
        case duplicateHeader
        /// A number above the range its grammar allows (CSeq > 2^32-1, …).
        case valueOutOfRange
        /// Content-Length negative, non-numeric, missing on a stream, or
        /// given twice with different values.
        case invalidContentLength
        /// Content-Length larger than the octets received.
        case truncatedBody
        /// A limit on header or body size was exceeded.
        case tooLarge
        /// The Request-URI does not follow its grammar.
        case malformedRequestURI
        /// CSeq method differs from the request method.
        case methodMismatch
    }

    public var kind: Kind
    /// The canonical name of the header at fault, when there is one.
    public var header: String?
    /// Offset of the fault from the first octet of the message.
    public var offset: Int
    /// Plain words for a log line and the reason phrase.
    public var detail: String

    public init(_ kind: Kind, header: String? = nil, offset: Int = 0, _ detail: String) {
        self.kind = kind
        self.header = header
        self.offset = offset
        self.detail = detail
    }

    /// The status code a server answers a request with this fault.
    public var statusCode: Int {
        switch kind {
        case .unsupportedVersion: return 505
        case .tooLarge: return 513
        default: return 400
        }
    }

    /// A short reason phrase for the reply, e.g. `Bad Request (malformed Via header)`.
    public var reasonPhrase: String {
        switch kind {
        case .unsupportedVersion: return "Version Not Supported"
        case .tooLarge: return "Message Too Large"
        default: return "Bad Request (\(detail))"
        }
    }

    /// For a log line: the detail may quote the message (a parameter
    /// name), so control characters are escaped (`LogText`).
    public var description: String {
        if let header { return "\(LogText.escaped(header)): \(LogText.escaped(detail)) (offset \(offset))" }
        return "\(LogText.escaped(detail)) (offset \(offset))"
    }
}
