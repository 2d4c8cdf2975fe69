import ArgumentParser
import Foundation
import SIPConfig
import SIPProxy

/// `swiftser user add|passwd|rm|list`: the subscriber table, like
/// `kamctl add|passwd|rm`. Passwords come from a prompt without echo or,
/// when stdin is not a terminal, from its first line; never from argv.
struct User: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage the users digest authentication accepts (the subscriber table).",
        subcommands: [Add.self, Passwd.self, Rm.self, List.self])

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add a user; asks for the password (or reads it from stdin).")
        @OptionGroup var options: ConfigOptions
        @Argument(help: "USER@DOMAIN (the domain is the realm: the From/To domain the user's phone uses).") var address: String
        func run() throws {
            let (user, domain) = try User.split(address)
            let (store, config) = try User.open(options)
            if try store.find(username: user, domain: domain) != nil {
                throw ValidationError("\(user)@\(domain) already exists; change its password with 'swiftser user passwd \(user)@\(domain)'")
            }
            let password = try User.readPassword()
            try store.put(.make(username: user, domain: domain, password: password, keepPassword: config.auth.calculateHA1))
            print("added \(user)@\(domain)")
        }
    }

    struct Passwd: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Set a user's password; asks for it (or reads it from stdin).")
        @OptionGroup var options: ConfigOptions
        @Argument(help: "USER@DOMAIN") var address: String
        func run() throws {
            let (user, domain) = try User.split(address)
            let (store, config) = try User.open(options)
            guard try store.find(username: user, domain: domain) != nil else { throw ValidationError("no user \(user)@\(domain)") }
            let password = try User.readPassword()
            try store.put(.make(username: user, domain: domain, password: password, keepPassword: config.auth.calculateHA1))
            print("password of \(user)@\(domain) changed")
        }
    }

    struct Rm: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a user.")
        @OptionGroup var options: ConfigOptions
        @Argument(help: "USER@DOMAIN") var address: String
        func run() throws {
            let (user, domain) = try User.split(address)
            let (store, _) = try User.open(options)
            guard try store.remove(username: user, domain: domain) else { throw ValidationError("no user \(user)@\(domain)") }
            print("removed \(user)@\(domain)")
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the users.")
        @OptionGroup var options: ConfigOptions
        func run() throws {
            let (store, _) = try User.open(options)
            for s in try store.all() {
                var hashes: [String] = []
                if !s.ha1.isEmpty { hashes.append("MD5") }
                if !s.ha1SHA256.isEmpty { hashes.append("SHA-256") }
                if !s.password.isEmpty { hashes.append("plain password") }
                print("\(s.username)@\(s.domain)  \(hashes.joined(separator: ", "))")
            }
        }
    }

    /// `user@domain`: user and domain non-empty, no white space, controls,
    /// `@`, `:` or quotes in the user (they would break the digest).
    static func split(_ address: String) throws -> (String, String) {
        let parts = address.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else { throw ValidationError("expected USER@DOMAIN, found '\(address)'") }
        let user = String(parts[0]), domain = String(parts[1]).lowercased()
        let badUser = user.unicodeScalars.contains { $0.value <= 0x20 || $0.value == 0x7F || $0 == ":" || $0 == "\"" || $0 == "\\" }
        guard !badUser, user.utf8.count <= 64 else { throw ValidationError("user '\(user)': no spaces, control characters, ':', '\"' or '\\', at most 64 octets") }
        let hostOK = domain.utf8.count <= 253 && domain.unicodeScalars.allSatisfy {
            ($0 >= "a" && $0 <= "z") || ($0 >= "0" && $0 <= "9") || $0 == "." || $0 == "-" || $0 == ":" || $0 == "[" || $0 == "]"
        }
        guard hostOK else { throw ValidationError("domain '\(domain)' is not a host name or address") }
        return (user, domain)
    }

    /// The subscriber store the config uses; refuses a config that keeps none on disk.
    static func open(_ options: ConfigOptions) throws -> (SubscriberStore, Config) {
        let config = Startup.loadConfig(options)
        guard let path = SubscriberStore.defaultPath(config) else {
            throw ValidationError("\(options.file) keeps no database (usrloc db_mode=0 and no auth_db db_url): users added here would be lost")
        }
        do {
            return (try SubscriberStore(path: path), config)
        } catch {
            throw ValidationError("\(error)")
        }
    }

    /// The password: prompted twice without echo on a terminal, else the
    /// first line of stdin. Empty passwords are refused.
    static func readPassword() throws -> String {
        let password: String
        if isatty(STDIN_FILENO) != 0 {
            let first = try prompt("Password: ")
            let again = try prompt("Again: ")
            guard first == again else { throw ValidationError("the passwords differ") }
            password = first
        } else {
            guard let line = readLine(strippingNewline: true) else { throw ValidationError("no password on stdin") }
            password = line.hasSuffix("\r") ? String(line.dropLast()) : line
        }
        guard !password.isEmpty else { throw ValidationError("empty password refused") }
        guard password.utf8.count <= 256 else { throw ValidationError("password longer than 256 octets refused") }
        return password
    }

    static func prompt(_ text: String) throws -> String {
        FileHandle.standardError.write(Data(text.utf8))
        var saved = termios()
        tcgetattr(STDIN_FILENO, &saved)
        var quiet = saved
        quiet.c_lflag &= ~tcflag_t(ECHO)
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet)
        defer {
            tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved)
            FileHandle.standardError.write(Data("\n".utf8))
        }
        guard let line = readLine(strippingNewline: true) else { throw ValidationError("no password given") }
        return line
    }
}
