/// Text from the network or from a peer's address made safe for a log
/// line: CR, LF, ESC and the other control characters (and DEL) are written
/// as `\xHH`, so a value cannot forge or hide log lines.
public struct LogText: CustomStringConvertible, Sendable {
    public let raw: String
    public init(_ raw: String) { self.raw = raw }
    public var description: String { Self.escaped(raw) }

    public static func escaped(_ s: String) -> String {
        guard s.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F }) else { return s }
        var out = ""
        out.reserveCapacity(s.utf8.count + 8)
        for scalar in s.unicodeScalars {
            if scalar.value < 0x20 || scalar.value == 0x7F {
                out += "\\x" + (scalar.value < 0x10 ? "0" : "") + String(scalar.value, radix: 16, uppercase: true)
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}
