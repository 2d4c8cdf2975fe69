import Foundation
import SIPCore

/// How `swiftser ctl` prints a JSON-RPC result. Results carry text from the
/// network (contacts, user agents, certificate subjects, SNI names, htable
/// keys and values), so neither form lets it reach the terminal raw: JSON
/// escapes control characters by its grammar, and the table form writes
/// CR, LF, ESC and the other control characters as `\xHH` (`LogText`).
public enum ControlText {
    /// Pretty-printed JSON with sorted keys; a bare string as a JSON string.
    public static func json(_ value: Any) -> String {
        if let s = value as? String { return jsonString(s) }
        guard let data = try? JSONSerialization.data(withJSONObject: value, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes, .fragmentsAllowed]) else {
            return LogText.escaped("\(value)")
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// A JSON string literal: quote, backslash and control characters escaped (RFC 8259 §7).
    static func jsonString(_ s: String) -> String {
        var out = ""
        LogLineFormat.appendJSONString(s, to: &out)
        return out
    }

    /// A readable form: lists of objects as aligned columns, objects as
    /// `key: value` lines (nested ones indented), lists of scalars one per
    /// line. Keys and values are escaped (`LogText`): one row, one line.
    public static func table(_ value: Any, indent: String = "") -> String {
        switch value {
        case let list as [Any]:
            if let rows = list as? [[String: Any]], !rows.isEmpty, rows.allSatisfy({ $0.values.allSatisfy(isScalar) }) {
                let keys = Array(Set(rows.flatMap(\.keys))).sorted()
                let cells = rows.map { r in keys.map { r[$0].map(scalar) ?? "" } }
                let titles = keys.map(LogText.escaped)
                let widths = keys.indices.map { i in max(titles[i].count, cells.map { $0[i].count }.max() ?? 0) }
                func line(_ c: [String]) -> String {
                    indent + c.indices.map { c[$0].padding(toLength: widths[$0], withPad: " ", startingAt: 0) }.joined(separator: "  ")
                        .trimmingCharacters(in: .whitespaces)
                }
                return ([line(titles)] + cells.map(line)).joined(separator: "\n")
            }
            return list.map { isScalar($0) ? indent + scalar($0) : table($0, indent: indent) }.joined(separator: "\n")
        case let object as [String: Any]:
            return object.keys.sorted().map { k in
                let v = object[k] ?? NSNull()
                let key = LogText.escaped(k)
                return isScalar(v) ? "\(indent)\(key): \(scalar(v))" : "\(indent)\(key):\n" + table(v, indent: indent + "  ")
            }.joined(separator: "\n")
        default:
            return indent + scalar(value)
        }
    }

    static func isScalar(_ v: Any) -> Bool { !(v is [Any]) && !(v is [String: Any]) }

    static func scalar(_ v: Any) -> String {
        switch v {
        case is NSNull: return "null"
        case let s as String: return LogText.escaped(s)
        default: return LogText.escaped("\(v)")
        }
    }
}
