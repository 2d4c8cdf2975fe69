import ArgumentParser

@main
struct SwiftSER: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "swiftser",
        abstract: "A SIP proxy with a SER-style TLS transport.",
        subcommands: [Run.self, Check.self, Certs.self, Ctl.self, User.self],
        defaultSubcommand: Run.self)
}

/// Options shared by the commands that read a config.
struct ConfigOptions: ParsableArguments {
    @Option(name: .shortAndLong, help: "The config file.")
    var file: String = "etc/swiftser.cfg"

    @Option(name: .customShort("D"), help: "Define a name for #!ifdef (repeatable): -D WITH_TLS or -D NAME=value.")
    var defines: [String] = []

    var defineMap: [String: String] {
        var m: [String: String] = [:]
        for d in defines {
            let parts = d.split(separator: "=", maxSplits: 1).map(String.init)
            m[parts[0]] = parts.count > 1 ? parts[1] : ""
        }
        return m
    }
}
