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
    var sources: [String: [Substring]] = [:]
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
        guard let lines = sources[loc.file], loc.line >= 1, loc.line <= lines.count else { return nil }
        return String(lines[loc.line - 1])
    }

    mutating func error(_ loc: SourceLocation, _ message: String) {
        diagnostics.append(ConfigDiagnostic(.error, loc, message, sourceLine: line(loc)))
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
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        sources[file] = lines.map { $0.hasSuffix("\r") ? $0.dropLast() : $0 }
        let chars = Array(text.unicodeScalars)
        var i = 0
        var line = 1
        var col = 1
        var space = true
        // Preprocessor state: a stack of (active, sawElse).
        var conditions: [(active: Bool, elseSeen: Bool, loc: SourceLocation)] = []
        var active: Bool { conditions.allSatisfy { $0.active } }
        var atLineStart = true

        func loc() -> SourceLocation { SourceLocation(file: file, line: line, column: col) }
        func advance() {
            if chars[i] == "\n" { line += 1; col = 1; atLineStart = true } else { col += 1 }
            i += 1
        }
        func peek(_ k: Int = 0) -> Unicode.Scalar? { i + k < chars.count ? chars[i + k] : nil }
        func restOfLine() -> String {
            var s = ""
            while let c = peek(), c != "\n" { s.unicodeScalars.append(c); advance() }
            return s.trimmingCharacters(in: .whitespaces)
        }

        while i < chars.count {
            let c = chars[i]
            if c == "\n" || c == " " || c == "\t" || c == "\r" {
                if c == "\n" { atLineStart = true } 
                advance()
                space = true
                continue
            }
            let wasLineStart = atLineStart
            atLineStart = false
            // Preprocessor directives: "#!" or "!!" at the start of a line.
            if wasLineStart, (c == "#" || c == "!"), peek(1) == "!" {
                let start = loc()
                advance(); advance()
                var word = ""
                while let d = peek(), d.properties.isAlphabetic || d == "_" { word.unicodeScalars.append(d); advance() }
                let arg = restOfLine()
                switch word {
                case "ifdef", "ifndef":
                    let name = arg.split(separator: " ").first.map(String.init) ?? ""
                    if name.isEmpty { error(start, "#!\(word) needs a name") }
                    let defined = defines[name] != nil
                    conditions.append((word == "ifdef" ? defined : !defined, false, start))
                case "else":
                    if conditions.isEmpty { error(start, "#!else without #!ifdef or #!ifndef"); break }
                    if conditions[conditions.count - 1].elseSeen { error(start, "second #!else for the same #!ifdef") }
                    conditions[conditions.count - 1].active.toggle()
                    conditions[conditions.count - 1].elseSeen = true
                case "endif":
                    if conditions.isEmpty { error(start, "#!endif without #!ifdef or #!ifndef") } else { conditions.removeLast() }
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
            if c == "#" {
                while let d = peek(), d != "\n" { advance() }
                space = true
                continue
            }
            if c == "/" && peek(1) == "/" {
                while let d = peek(), d != "\n" { advance() }
                space = true
                continue
            }
            if c == "/" && peek(1) == "*" {
                let start = loc()
                advance(); advance()
                var closed = false
                while i < chars.count {
                    if chars[i] == "*" && peek(1) == "/" { advance(); advance(); closed = true; break }
                    advance()
                }
                if !closed { error(start, "comment '/*' is never closed") }
                space = true
                continue
            }
            let start = loc()
            let hadSpace = space
            space = false
            func emit(_ kind: Token.Kind) {
                if active { out.append(Token(kind: kind, location: start, spaceBefore: hadSpace)) }
            }
            // Strings.
            if c == "\"" || c == "'" {
                let q = c
                advance()
                var s = ""
                var closed = false
                while let d = peek() {
                    if d == "\n" { break }
                    if d == "\\", let e = peek(1) {
                        advance(); advance()
                        switch e {
                        case "n": s += "\n"
                        case "r": s += "\r"
                        case "t": s += "\t"
                        default: s.unicodeScalars.append(e)
                        }
                        continue
                    }
                    advance()
                    if d == q { closed = true; break }
                    s.unicodeScalars.append(d)
                }
                if !closed { if active { error(start, "string is not closed on this line") } }
                emit(.string(s))
                continue
            }
            // Numbers (an IPv4 address becomes a dotted identifier).
            if c.properties.numericType != nil && c.isASCII {
                var s = ""
                while let d = peek(), d.isASCII, d.properties.numericType != nil || d == "." || (d.properties.isAlphabetic) {
                    s.unicodeScalars.append(d)
                    advance()
                }
                if let n = Int(s) { emit(.number(n)) } else { emit(.identifier(s)) }
                continue
            }
            // Identifiers (letters, digits, '_', '.'): defines expand here.
            if c.properties.isAlphabetic || c == "_" {
                var s = ""
                while let d = peek(), d.properties.isAlphabetic || d.properties.numericType != nil || d == "_" || d == "." {
                    s.unicodeScalars.append(d)
                    advance()
                }
                // A trailing '.' belongs to the next token.
                while s.hasSuffix(".") { s.removeLast(); i -= 1; col -= 1 }
                if (s == "include_file" || s == "import_file"), active {
                    // include_file "path"
                    while let d = peek(), d == " " || d == "\t" { advance() }
                    let pathStart = loc()
                    var path = restOfLine()
                    if path.hasSuffix(";") { path.removeLast() }
                    path = path.trimmingCharacters(in: CharacterSet(charactersIn: "\" "))
                    if path.isEmpty { error(pathStart, "\(s) needs a file name"); continue }
                    let full = resolve(path, relativeTo: file)
                    if s == "import_file", (try? readFile(full)) == nil { continue }
                    lexFile(full, from: pathStart, into: &out)
                    space = true
                    continue
                }
                if let d = defines[s], active {
                    for var t in d {
                        t.location = start
                        t.spaceBefore = hadSpace
                        out.append(t)
                    }
                    continue
                }
                emit(.identifier(s))
                continue
            }
            // Pseudo-variables: $name, $name(arg), $(name), $name(arg)[index] is not supported.
            if c == "$" {
                advance()
                var name = ""
                var arg: String? = nil
                if peek() == "(" {
                    advance()
                    while let d = peek(), d != ")" && d != "\n" { name.unicodeScalars.append(d); advance() }
                    if peek() == ")" { advance() } else { error(start, "'$(' is not closed") }
                } else {
                    while let d = peek(), d.properties.isAlphabetic || d.properties.numericType != nil || d == "_" { name.unicodeScalars.append(d); advance() }
                    if peek() == "(" {
                        advance()
                        var a = ""
                        var depth = 1
                        while let d = peek(), d != "\n" {
                            if d == "(" { depth += 1 }
                            if d == ")" { depth -= 1; if depth == 0 { break } }
                            a.unicodeScalars.append(d)
                            advance()
                        }
                        if peek() == ")" { advance() } else { error(start, "'$\(name)(' is not closed") }
                        arg = a
                    }
                }
                if name.isEmpty { error(start, "'$' must be followed by a pseudo-variable name") }
                emit(.pseudoVariable(name, arg))
                continue
            }
            // Punctuation, longest first.
            let two: String = {
                guard let n = peek(1) else { return "" }
                var s = ""
                s.unicodeScalars.append(c)
                s.unicodeScalars.append(n)
                return s
            }()
            if ["==", "!=", "=~", "!~", "&&", "||", "<=", ">="].contains(two) {
                advance(); advance()
                emit(.punct(two))
                continue
            }
            if "=!(){}[],;:<>+-*/.|&%".unicodeScalars.contains(c) {
                advance()
                emit(.punct(String(Character(c))))
                continue
            }
            advance()
            if active { error(start, "unexpected character '\(Character(c))'") }
        }
        if let open = conditions.last {
            error(open.loc, "#!ifdef/#!ifndef is never closed with #!endif")
        }
    }
}
