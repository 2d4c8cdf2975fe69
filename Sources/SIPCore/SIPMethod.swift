/// A SIP request method. Methods are case-sensitive tokens (RFC 3261 §7.1);
/// `%` in a method is a literal character, not an escape (RFC 4475 §3.1.1.5).
public enum SIPMethod: Hashable, Sendable, CustomStringConvertible {
    case invite, ack, bye, cancel, register, options, info, prack
    case subscribe, notify, update, message, refer, publish
    case other(String)

    public init<C: Collection>(bytes: C) where C.Element == UInt8 {
        switch bytes.count {
        case 3:
            if bytes.elementsEqual("ACK".utf8) { self = .ack; return }
            if bytes.elementsEqual("BYE".utf8) { self = .bye; return }
        case 4:
            if bytes.elementsEqual("INFO".utf8) { self = .info; return }
        case 5:
            if bytes.elementsEqual("PRACK".utf8) { self = .prack; return }
            if bytes.elementsEqual("REFER".utf8) { self = .refer; return }
        case 6:
            if bytes.elementsEqual("INVITE".utf8) { self = .invite; return }
            if bytes.elementsEqual("CANCEL".utf8) { self = .cancel; return }
            if bytes.elementsEqual("NOTIFY".utf8) { self = .notify; return }
            if bytes.elementsEqual("UPDATE".utf8) { self = .update; return }
        case 7:
            if bytes.elementsEqual("OPTIONS".utf8) { self = .options; return }
            if bytes.elementsEqual("MESSAGE".utf8) { self = .message; return }
            if bytes.elementsEqual("PUBLISH".utf8) { self = .publish; return }
        case 8:
            if bytes.elementsEqual("REGISTER".utf8) { self = .register; return }
        case 9:
            if bytes.elementsEqual("SUBSCRIBE".utf8) { self = .subscribe; return }
        default: break
        }
        self = .other(String(decoding: bytes, as: UTF8.self))
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
