import Foundation

/// A token of the ser.cfg language.
public struct Token: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        case identifier(String)
        case number(Int)
        case string(String)
        /// `$name`, `$name(arg)`, `$(name)`: the name and the argument.
        case pseudoVariable(String, String?)
        /// One of = == != =~ !~ && || ! ( ) { } [ ] , ; : < > <= >= + - * / . | &
        case punct(String)
        case end
    }

    public var kind: Kind
    public var location: SourceLocation
    /// True when white space or a comment stood right before the token.
    public var spaceBefore: Bool

    public var description: String {
        switch kind {
        case .identifier(let s): return s
        case .number(let n): return String(n)
        case .string(let s): return "\"\(s)\""
        case .pseudoVariable(let n, let a): return a.map { "$\(n)(\($0))" } ?? "$\(n)"
        case .punct(let p): return p
        case .end: return "end of file"
        }
    }

    public func isPunct(_ p: String) -> Bool { kind == .punct(p) }
    public func isIdentifier(_ s: String) -> Bool { kind == .identifier(s) }
}

/// Turns config text into tokens, applying the preprocessor on the way:
/// `#!define`/`#!ifdef`/`#!ifndef`/`#!else`/`#!endif`/`#!substdef`,
/// `include_file`/`import_file` (and `#!include_file`), comments `#`, `//`
/// and `/* */`.
public struct Lexer {
    /// Reads a file; tests swap it for an in-memory one.
    public typealias FileReader = @Sendable (String) throws -> String

    var defines: [String: [Token]] = [:]
    var substitutions: [(String, String)] = []
    var diagnostics: [ConfigDiagnostic] = []
    /// The bytes of each file read and where its lines start, for diagnostics.
    var sources: [String: (bytes: [UInt8], lineStarts: [Int])] = [:]
    let readFile: FileReader
    var includeDepth = 0

    public init(defines: [String: String] = [:], readFile: @escaping FileReader = { try String(contentsOfFile: $0, encoding: .utf8) }) {
        self.readFile = readFile
        for (k, v) in defines {
            self.defines[k] = v.isEmpty ? [] : [Token(kind: .string(v), location: SourceLocation(file: "<command line>", line: 1, column: 1), spaceBefore: true)]
        }
    }

    /// Source lines of the files read, for diagnostics.
    public func line(_ loc: SourceLocation) -> String? {
        guard let source = sources[loc.file], loc.line >= 1, loc.line <= source.lineStarts.count else { return nil }
        let from = source.lineStarts[loc.line - 1]
        var to = loc.line < source.lineStarts.count ? source.lineStarts[loc.line] - 1 : source.bytes.count
        if to > from, source.bytes[to - 1] == UInt8(ascii: "\r") { to -= 1 }
        return String(decoding: source.bytes[from..<to], as: UTF8.self)
    }

    mutating func error(_ loc: SourceLocation, _ message: String) {
        // The lexer's errors come first and only the first few are shown
        // (ConfigDiagnostic.maxErrors): later ones need no copy of their line.
        let shown = diagnostics.count < ConfigDiagnostic.maxErrors
        diagnostics.append(ConfigDiagnostic(.error, loc, message, sourceLine: shown ? line(loc) : nil))
    }

    /// Tokens of a file, includes spliced in; ends with `.end`.
    public mutating func tokenize(file: String) -> [Token] {
        var out: [Token] = []
        lexFile(file, from: nil, into: &out)
        out.append(Token(kind: .end, location: out.last?.location ?? SourceLocation(file: file, line: 1, column: 1), spaceBefore: true))
        return out
    }

    /// Tokens of text given directly (tests, `#!define` values).
    public mutating func tokenize(text: String, file: String) -> [Token] {
        var out: [Token] = []
        lex(text, file: file, into: &out)
        out.append(Token(kind: .end, location: out.last?.location ?? SourceLocation(file: file, line: 1, column: 1), spaceBefore: true))
        return out
    }

    mutating func lexFile(_ path: String, from: SourceLocation?, into out: inout [Token]) {
        guard includeDepth < 16 else {
            error(from ?? SourceLocation(file: path, line: 1, column: 1), "include depth over 16 (an include loop?)")
            return
        }
        let text: String
        do {
            text = try readFile(path)
        } catch {
            self.error(from ?? SourceLocation(file: path, line: 1, column: 1), "cannot read '\(path)': \(describe(error))")
            return
        }
        includeDepth += 1
        lex(text, file: path, into: &out)
        includeDepth -= 1
    }

    func describe(_ error: Error) -> String {
        let ns = error as NSError
        if let u = ns.userInfo[NSUnderlyingErrorKey] as? NSError, u.domain == NSPOSIXErrorDomain, let code = POSIXErrorCode(rawValue: Int32(u.code)) {
            return String(cString: strerror(code.rawValue))
        }
        if ns.domain == NSCocoaErrorDomain && ns.code == NSFileReadNoSuchFileError { return "no such file" }
        return ns.localizedDescription
    }

    /// Resolves an included path against the including file's folder.
    func resolve(_ path: String, relativeTo file: String) -> String {
        if path.hasPrefix("/") { return path }
        let dir = (file as NSString).deletingLastPathComponent
        return dir.isEmpty ? path : dir + "/" + path
    }

    mutating func lex(_ text: String, file: String, into out: inout [Token]) {
        let bytes = Array(text.utf8)
        var lineStarts = [0]
        for (k, b) in bytes.enumerated() where b == UInt8(ascii: "\n") { lineStarts.append(k + 1) }
        sources[file] = (bytes, lineStarts)
        // The lexer walks UTF-8 bytes: every character with a meaning in the
        // language is ASCII; other characters may stand in strings, comments
        // and `$(...)` names only. Columns count Unicode scalars, as editors do.
        var sc = Scanner(bytes: bytes, file: file)
        // Preprocessor state: a stack of (active, sawElse).
        var conditions: [(active: Bool, elseSeen: Bool, loc: SourceLocation)] = []
        var inactiveDepth = 0  // how many entries of `conditions` are inactive
        var space = true

        while let c = sc.peek() {
            if c == ASCII.lf || c == ASCII.space || c == ASCII.tab || c == ASCII.cr {
                sc.advance()
                space = true
                continue
            }
            let active = inactiveDepth == 0
            let wasLineStart = sc.atLineStart
            sc.atLineStart = false
            // Preprocessor directives: "#!" or "!!" at the start of a line.
            if wasLineStart, c == ASCII.hash || c == ASCII.bang, sc.peek(1) == ASCII.bang {
                let start = sc.location
                sc.advance(); sc.advance()
                let word = sc.take { ASCII.isLetter($0) || $0 == ASCII.underscore }
                let arg = sc.restOfLine()
                switch word {
                case "ifdef", "ifndef":
                    let name = arg.split(separator: " ").first.map(String.init) ?? ""
                    if name.isEmpty { error(start, "#!\(word) needs a name") }
                    let defined = defines[name] != nil
                    let on = word == "ifdef" ? defined : !defined
                    conditions.append((on, false, start))
                    if !on { inactiveDepth += 1 }
                case "else":
                    if conditions.isEmpty { error(start, "#!else without #!ifdef or #!ifndef"); break }
                    let top = conditions.count - 1
                    if conditions[top].elseSeen { error(start, "second #!else for the same #!ifdef") }
                    inactiveDepth += conditions[top].active ? 1 : -1
                    conditions[top].active.toggle()
                    conditions[top].elseSeen = true
                case "endif":
                    if let last = conditions.popLast() {
                        if !last.active { inactiveDepth -= 1 }
                    } else {
                        error(start, "#!endif without #!ifdef or #!ifndef")
                    }
                case "define", "trydef", "redefine":
                    guard active else { break }
                    let parts = arg.split(separator: " ", maxSplits: 1).map(String.init)
                    guard let name = parts.first, !name.isEmpty else { error(start, "#!\(word) needs a name"); break }
                    if word == "trydef" && defines[name] != nil { break }
                    var sub = Lexer(readFile: readFile)
                    var toks = parts.count > 1 ? sub.tokenize(text: parts[1], file: file) : []
                    if !toks.isEmpty { toks.removeLast() }
                    for k in toks.indices { toks[k].location = start }
                    defines[name] = toks
                case "undef":
                    if active { defines[arg] = nil }
                case "substdef", "subst":
                    guard active else { break }
                    // "/from/to/" with any delimiter; quotes optional.
                    var body = arg
                    if body.hasPrefix("\"") && body.hasSuffix("\"") && body.count >= 2 { body = String(body.dropFirst().dropLast()) }
                    guard let delim = body.first else { error(start, "#!\(word) needs \"/match/replacement/\""); break }
                    let parts = body.dropFirst().split(separator: delim, omittingEmptySubsequences: false)
                    guard parts.count >= 2 else { error(start, "#!\(word) needs \"/match/replacement/\""); break }
                    substitutions.append((String(parts[0]), String(parts[1])))
                    if word == "substdef" {
                        defines[String(parts[0])] = [Token(kind: .string(String(parts[1])), location: start, spaceBefore: true)]
                    }
                case "include_file", "import_file":
                    guard active else { break }
                    let path = arg.trimmingCharacters(in: CharacterSet(charactersIn: "\""))
                    let full = resolve(path, relativeTo: file)
                    if word == "import_file", (try? readFile(full)) == nil { break }
                    lexFile(full, from: start, into: &out)
                default:
                    error(start, "unknown preprocessor directive '#!\(word)'")
                }
                space = true
                continue
            }
            // Comments.
            if c == ASCII.hash || (c == ASCII.slash && sc.peek(1) == ASCII.slash) {
                sc.skipLine()
                space = true
                continue
            }
            if c == ASCII.slash && sc.peek(1) == ASCII.star {
                let start = sc.location
                sc.advance(); sc.advance()
                var closed = false
                while let d = sc.peek() {
                    if d == ASCII.star && sc.peek(1) == ASCII.slash { sc.advance(); sc.advance(); closed = true; break }
                    sc.advance()
                }
                if !closed { error(start, "comment '/*' is never closed") }
                space = true
                continue
            }
            let start = sc.location
            let hadSpace = space
            space = false
            // Strings.
            if c == ASCII.dquote || c == ASCII.squote {
                sc.advance()
                var s: [UInt8] = []
                var closed = false
                while let d = sc.peek(), d != ASCII.lf {
                    if d == ASCII.backslash, let e = sc.peek(1) {
                        sc.advance(); sc.advance()
                        switch e {
                        case UInt8(ascii: "n"): s.append(ASCII.lf)
                        case UInt8(ascii: "r"): s.append(ASCII.cr)
                        case UInt8(ascii: "t"): s.append(ASCII.tab)
                        default: s.append(e)
                        }
                        continue
                    }
                    sc.advance()
                    if d == c { closed = true; break }
                    s.append(d)
                }
                if !closed && active { error(start, "string is not closed on this line") }
                if active { out.append(Token(kind: .string(String(decoding: s, as: UTF8.self)), location: start, spaceBefore: hadSpace)) }
                continue
            }
            // Numbers (an IPv4 address becomes a dotted identifier).
            if ASCII.isDigit(c) {
                let s = sc.take { ASCII.isDigit($0) || ASCII.isLetter($0) || $0 == ASCII.dot }
                if active { out.append(Token(kind: Int(s).map { .number($0) } ?? .identifier(s), location: start, spaceBefore: hadSpace)) }
                continue
            }
            // Identifiers (letters, digits, '_', '.'): defines expand here.
            if ASCII.isLetter(c) || c == ASCII.underscore {
                let from = sc.i
                sc.skip { ASCII.isLetter($0) || ASCII.isDigit($0) || $0 == ASCII.underscore || $0 == ASCII.dot }
                // A trailing '.' belongs to the next token.
                while sc.i > from + 1, sc.bytes[sc.i - 1] == ASCII.dot { sc.i -= 1; sc.column -= 1 }
                let s = String(decoding: sc.bytes[from..<sc.i], as: UTF8.self)
                if (s == "include_file" || s == "import_file"), active {
                    // include_file "path"
                    while let d = sc.peek(), d == ASCII.space || d == ASCII.tab { sc.advance() }
                    let pathStart = sc.location
                    var path = sc.restOfLine()
                    if path.hasSuffix(";") { path.removeLast() }
                    path = path.trimmingCharacters(in: CharacterSet(charactersIn: "\" "))
                    if path.isEmpty { error(pathStart, "\(s) needs a file name"); continue }
                    let full = resolve(path, relativeTo: file)
                    if s == "import_file", (try? readFile(full)) == nil { continue }
                    lexFile(full, from: pathStart, into: &out)
                    space = true
                    continue
                }
                guard active else { continue }
                if let d = defines[s] {
                    for var t in d {
                        t.location = start
                        t.spaceBefore = hadSpace
                        out.append(t)
                    }
                    continue
                }
                out.append(Token(kind: .identifier(s), location: start, spaceBefore: hadSpace))
                continue
            }
            // Pseudo-variables: $name, $name(arg), $(name), $name(arg)[index] is not supported.
            if c == ASCII.dollar {
                sc.advance()
                var name = ""
                var arg: String? = nil
                if sc.peek() == ASCII.lparen {
                    sc.advance()
                    name = sc.take { $0 != ASCII.rparen && $0 != ASCII.lf }
                    if sc.peek() == ASCII.rparen { sc.advance() } else { error(start, "'$(' is not closed") }
                } else {
                    name = sc.take { ASCII.isLetter($0) || ASCII.isDigit($0) || $0 == ASCII.underscore }
                    if sc.peek() == ASCII.lparen {
                        sc.advance()
                        let from = sc.i
                        var depth = 1
                        while let d = sc.peek(), d != ASCII.lf {
                            if d == ASCII.lparen { depth += 1 }
                            if d == ASCII.rparen { depth -= 1; if depth == 0 { break } }
                            sc.advance()
                        }
                        arg = String(decoding: sc.bytes[from..<sc.i], as: UTF8.self)
                        if sc.peek() == ASCII.rparen { sc.advance() } else { error(start, "'$\(name)(' is not closed") }
                    }
                }
                if name.isEmpty { error(start, "'$' must be followed by a pseudo-variable name") }
                if active { out.append(Token(kind: .pseudoVariable(name, arg), location: start, spaceBefore: hadSpace)) }
                continue
            }
            // Punctuation, longest first.
            if let n = sc.peek(1), let two = Lexer.twoCharacterPunct(c, n) {
                sc.advance(); sc.advance()
                if active { out.append(Token(kind: .punct(two), location: start, spaceBefore: hadSpace)) }
                continue
            }
            if let one = Lexer.oneCharacterPunct(c) {
                sc.advance()
                if active { out.append(Token(kind: .punct(one), location: start, spaceBefore: hadSpace)) }
                continue
            }
            // Anything else, ASCII or not, is an error: report the whole character.
            let from = sc.i
            sc.advance()
            sc.skip { $0 & 0xC0 == 0x80 }
            if active { error(start, "unexpected character '\(String(decoding: sc.bytes[from..<sc.i], as: UTF8.self))'") }
        }
        if let open = conditions.last {
            error(open.loc, "#!ifdef/#!ifndef is never closed with #!endif")
        }
    }

    static func twoCharacterPunct(_ a: UInt8, _ b: UInt8) -> String? {
        switch (a, b) {
        case (ASCII.equals, ASCII.equals): "=="
        case (ASCII.bang, ASCII.equals): "!="
        case (ASCII.equals, ASCII.tilde): "=~"
        case (ASCII.bang, ASCII.tilde): "!~"
        case (ASCII.amp, ASCII.amp): "&&"
        case (ASCII.pipe, ASCII.pipe): "||"
        case (ASCII.less, ASCII.equals): "<="
        case (ASCII.greater, ASCII.equals): ">="
        default: nil
        }
    }

    /// The one-character punctuation: = ! ( ) { } [ ] , ; : < > + - * / . | & %
    static func oneCharacterPunct(_ c: UInt8) -> String? {
        switch c {
        case UInt8(ascii: "="): "="
        case UInt8(ascii: "!"): "!"
        case UInt8(ascii: "("): "("
        case UInt8(ascii: ")"): ")"
        case UInt8(ascii: "{"): "{"
        case UInt8(ascii: "}"): "}"
        case UInt8(ascii: "["): "["
        case UInt8(ascii: "]"): "]"
        case UInt8(ascii: ","): ","
        case UInt8(ascii: ";"): ";"
        case UInt8(ascii: ":"): ":"
        case UInt8(ascii: "<"): "<"
        case UInt8(ascii: ">"): ">"
        case UInt8(ascii: "+"): "+"
        case UInt8(ascii: "-"): "-"
        case UInt8(ascii: "*"): "*"
        case UInt8(ascii: "/"): "/"
        case UInt8(ascii: "."): "."
        case UInt8(ascii: "|"): "|"
        case UInt8(ascii: "&"): "&"
        case UInt8(ascii: "%"): "%"
        default: nil
        }
    }
}

/// A position in a file's UTF-8 bytes, with its line and column.
private struct Scanner {
    let bytes: [UInt8]
    let file: String
    var i = 0
    var line = 1
    var column = 1
    var atLineStart = true

    init(bytes: [UInt8], file: String) {
        self.bytes = bytes
        self.file = file
    }

    var location: SourceLocation { SourceLocation(file: file, line: line, column: column) }

    @inline(__always) func peek(_ k: Int = 0) -> UInt8? {
        i + k < bytes.count ? bytes[i + k] : nil
    }

    /// Steps over one byte; a UTF-8 continuation byte does not move the column.
    @inline(__always) mutating func advance() {
        let c = bytes[i]
        if c == ASCII.lf {
            line += 1; column = 1; atLineStart = true
        } else if c & 0xC0 != 0x80 {
            column += 1
        }
        i += 1
    }

    mutating func skip(while accept: (UInt8) -> Bool) {
        while let c = peek(), accept(c) { advance() }
    }

    mutating func take(while accept: (UInt8) -> Bool) -> String {
        let from = i
        skip(while: accept)
        return String(decoding: bytes[from..<i], as: UTF8.self)
    }

    mutating func skipLine() { skip { $0 != ASCII.lf } }

    /// The rest of the line (not its end), without blanks around it.
    mutating func restOfLine() -> String {
        let from = i
        skipLine()
        var lo = from, hi = i
        while lo < hi, ASCII.isBlank(bytes[lo]) { lo += 1 }
        while hi > lo, ASCII.isBlank(bytes[hi - 1]) { hi -= 1 }
        return String(decoding: bytes[lo..<hi], as: UTF8.self)
    }
}

/// The bytes the lexer looks for.
private enum ASCII {
    static let lf = UInt8(ascii: "\n"), cr = UInt8(ascii: "\r"), tab = UInt8(ascii: "\t"), space = UInt8(ascii: " ")
    static let hash = UInt8(ascii: "#"), bang = UInt8(ascii: "!"), slash = UInt8(ascii: "/"), star = UInt8(ascii: "*")
    static let dquote = UInt8(ascii: "\""), squote = UInt8(ascii: "'"), backslash = UInt8(ascii: "\\")
    static let underscore = UInt8(ascii: "_"), dot = UInt8(ascii: "."), dollar = UInt8(ascii: "$")
    static let lparen = UInt8(ascii: "("), rparen = UInt8(ascii: ")")
    static let equals = UInt8(ascii: "="), tilde = UInt8(ascii: "~"), amp = UInt8(ascii: "&"), pipe = UInt8(ascii: "|")
    static let less = UInt8(ascii: "<"), greater = UInt8(ascii: ">")

    @inline(__always) static func isLetter(_ c: UInt8) -> Bool { (c | 0x20) >= UInt8(ascii: "a") && (c | 0x20) <= UInt8(ascii: "z") }
    @inline(__always) static func isDigit(_ c: UInt8) -> Bool { c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") }
    /// Space, tab or CR (a CRLF file's line ends in CR).
    @inline(__always) static func isBlank(_ c: UInt8) -> Bool { c == space || c == tab || c == cr }
}
