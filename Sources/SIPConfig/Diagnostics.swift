/// A place in a config file: 1-based line and column.
public struct SourceLocation: Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int

    public init(file: String, line: Int, column: Int) {
        self.file = file
        self.line = line
        self.column = column
    }

    public var description: String { "\(file):\(line):\(column)" }
}

/// One finding about a config: an error stops the load, a warning is
/// printed and the load goes on.
public struct ConfigDiagnostic: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Severity: String, Sendable { case error, warning }

    public var severity: Severity
    public var location: SourceLocation
    public var message: String
    /// The text of the line at `location`, for the caret display.
    public var sourceLine: String?

    public init(_ severity: Severity, _ location: SourceLocation, _ message: String, sourceLine: String? = nil) {
        self.severity = severity
        self.location = location
        self.message = message
        self.sourceLine = sourceLine
    }

    /// At most this many errors are reported for one load (as compilers
    /// stop at 20): a file that is not a config at all gives a short
    /// report, not one line per token.
    public static let maxErrors = 20
    /// At most this many warnings.
    public static let maxWarnings = 50

    /// The first `limit` diagnostics; when there are more, a last one at the
    /// first left out says how many were left out.
    static func capped(_ list: [ConfigDiagnostic], at limit: Int) -> [ConfigDiagnostic] {
        guard list.count > limit, limit >= 0 else { return list }
        var out = Array(list.prefix(limit))
        let rest = list[limit]
        let kind = rest.severity == .error ? "errors" : "warnings"
        out.append(ConfigDiagnostic(rest.severity, rest.location, "too many \(kind): \(list.count - limit) more not shown"))
        return out
    }

    /// `file:line:col: error: message`, then the line and a caret under the column.
    public var description: String {
        var s = "\(location): \(severity.rawValue): \(message)"
        if let sourceLine {
            s += "\n    " + sourceLine + "\n    "
            // One blank per code point before the column (the lexer counts
            // columns in code points), tabs kept so the caret lines up;
            // read over the octets, not as Characters.
            var pad: [UInt8] = []
            var points = 0
            for b in sourceLine.utf8 where b & 0xC0 != 0x80 {
                guard points < location.column - 1 else { break }
                points += 1
                pad.append(b == 0x09 ? 0x09 : 0x20)
            }
            s += String(decoding: pad, as: UTF8.self) + "^"
        }
        return s
    }
}

/// All errors found in one load (at least one).
public struct ConfigErrors: Error, Sendable, CustomStringConvertible {
    public var diagnostics: [ConfigDiagnostic]
    public init(_ diagnostics: [ConfigDiagnostic]) { self.diagnostics = diagnostics }
    public var description: String { diagnostics.map(\.description).joined(separator: "\n") }
}
