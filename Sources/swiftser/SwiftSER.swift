import ArgumentParser
import Foundation
import SIPProxy

@main
struct SwiftSER: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "swiftser",
        abstract: "A SIP proxy with a SER-style TLS transport.",
        discussion: """
        Without a command, runs the proxy in the foreground on the config of -f. \
        The Debian package's config is /etc/swiftser/swiftser.cfg (its state in /var/lib/swiftser, \
        the control socket /run/swiftser/swiftser.ctl) and its systemd unit swiftser.service. \
        Signals: SIGHUP reloads the TLS files, SIGUSR1 the route script, SIGTERM drains and stops. \
        Guides: /usr/share/doc/swiftser (operations.md, configuration.md) or docs/ of the source.
        """,
        version: SwiftSERVersion.full,
        subcommands: [Run.self, Check.self, Certs.self, Ctl.self, User.self],
        defaultSubcommand: Run.self)

    /// Kamailio's command-line habits mapped onto the commands, then parsed.
    static func main() {
        switch KamailioArguments.rewrite(Array(CommandLine.arguments.dropFirst())) {
        case .success(let args): main(args)
        case .failure(let e):
            FileHandle.standardError.write(Data("swiftser: \(e.message)\n".utf8))
            Foundation.exit(64)
        }
    }
}

/// Rewrites Kamailio's spellings that ArgumentParser cannot take as they
/// are: `-V`/`-v` (version), `-DD` (stay in the foreground: SwiftSER
/// always does, so the word is dropped). `-DDD` (daemonize) is refused:
/// SwiftSER does not fork; a service manager runs it.
enum KamailioArguments {
    struct Failure: Error, Equatable {
        var message: String
    }

    static func rewrite(_ args: [String]) -> Result<[String], Failure> {
        // `ctl` passes its words through as they are (`cfg.set core debug -1`).
        if args.first == "ctl" || args.first == "certs" { return .success(args) }
        var out: [String] = []
        for a in args {
            switch a {
            case "-DD": continue
            case "-DDD": return .failure(Failure(message: "-DDD (daemonize) is not supported: SwiftSER stays in the foreground; run it under systemd (Type=simple) or another service manager"))
            case "-V", "-v": out.append("--version")
            default: out.append(a)
            }
        }
        return .success(out)
    }
}

/// Options shared by the commands that read a config.
struct ConfigOptions: ParsableArguments {
    @Option(name: .shortAndLong, help: "The config file.")
    var file: String = "etc/swiftser.cfg"

    @Option(name: .customShort("D"), help: ArgumentHelp("Define a name for #!ifdef (repeatable): -D WITH_TLS or -D NAME=value.", valueName: "name[=value]"))
    var defines: [String] = []

    @Option(name: .customShort("A"), help: ArgumentHelp("Define a name for #!ifdef, as Kamailio's -A (repeatable): -A WITH_TLS or -A NAME=value.", valueName: "name[=value]"))
    var kamailioDefines: [String] = []

    var defineMap: [String: String] {
        var m: [String: String] = [:]
        for d in defines + kamailioDefines {
            let parts = d.split(separator: "=", maxSplits: 1).map(String.init)
            guard let name = parts.first, !name.isEmpty else { continue }
            m[name] = parts.count > 1 ? parts[1] : ""
        }
        return m
    }
}
