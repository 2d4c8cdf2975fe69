/// A SIP request method. Methods are case-sensitive tokens (RFC 3261 §7.1);
/// `%` in a method is a literal character, not an escape (RFC 4475 §3.1.1.5).
public enum SIPMethod: Hashable, Sendable, CustomStringConvertible {
    case invite, ack, bye, cancel, register, options, info, prack
    case subscribe, notify, update, message, refer, publish
    case other(String)

    public init<C: Collection>(bytes: C) where C.Element == UInt8 {
        // The first eight octets as one big-endian number, compared with
        // the known methods' (checked by the tests against their names).
        let n = bytes.count
        var key: UInt64 = 0
        var ninth: UInt8 = 0
        if n >= 3 && n <= 9 {
            var i = 0
            for b in bytes {
                if i < 8 { key = key << 8 | UInt64(b) } else { ninth = b }
                i += 1
            }
        }
        switch (n, key) {
        case (3, 0x41434B): self = .ack
        case (3, 0x425945): self = .bye
        case (4, 0x494E464F): self = .info
        case (5, 0x505241434B): self = .prack
        case (5, 0x5245464552): self = .refer
        case (6, 0x494E56495445): self = .invite
        case (6, 0x43414E43454C): self = .cancel
        case (6, 0x4E4F54494659): self = .notify
        case (6, 0x555044415445): self = .update
        case (7, 0x4F5054494F4E53): self = .options
        case (7, 0x4D455353414745): self = .message
        case (7, 0x5055424C495348): self = .publish
        case (8, 0x5245474953544552): self = .register
        case (9, 0x5355425343524942) where ninth == UInt8(ascii: "E"): self = .subscribe
        default: self = .other(String(decoding: bytes, as: UTF8.self))
        }
    }

    public init(_ name: String) { self.init(bytes: Array(name.utf8)) }

    public var name: String {
        switch self {
        case .invite: return "INVITE"
        case .ack: return "ACK"
        case .bye: return "BYE"
        case .cancel: return "CANCEL"
        case .register: return "REGISTER"
        case .options: return "OPTIONS"
        case .info: return "INFO"
        case .prack: return "PRACK"
        case .subscribe: return "SUBSCRIBE"
        case .notify: return "NOTIFY"
        case .update: return "UPDATE"
        case .message: return "MESSAGE"
        case .refer: return "REFER"
        case .publish: return "PUBLISH"
        case .other(let s): return s
        }
    }

    /// True for the methods RFC 3261 and its common extensions define.
    public var isKnown: Bool {
        if case .other = self { return false }
        return true
    }

    public var description: String { name }
}
