import ArgumentParser
import Foundation
import SIPConfig
import SIPTLS

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a config: syntax, script, TLS files. Prints the listen sockets and the TLS domain table.")

    @OptionGroup var options: ConfigOptions

    func run() throws {
        try Check.report(options)
    }

    /// Loads and checks the config, printing what `check` prints; throws
    /// `ExitCode(1)` (after printing why) when it cannot be used.
    static func report(_ options: ConfigOptions) throws {
        let config = Startup.loadConfig(options)
        for w in config.warnings { print(w.description) }
        print("config \(options.file): OK")
        print("\nlisten sockets:")
        for l in config.listens {
            print("  \(l)\(l.advertisedHost.map { " advertise \($0)\(l.advertisedPort.map { ":\($0)" } ?? "")" } ?? "")")
        }
        if !config.aliases.isEmpty { print("aliases: \(config.aliases.joined(separator: ", "))") }
        let core = config.core
        print("\nlimits (security.md):")
        print("  connections: tcp_max_connections=\(core.tcpMaxConnections) tls_max_connections=\(core.tlsMaxConnections) (inbound), tcp_max_outbound_connections=\(core.tcpMaxOutboundConnections), tcp_max_connections_per_ip=\(core.tcpMaxConnectionsPerIP), tls_max_handshakes=\(config.tls.maxHandshakes)")
        print("  timeouts: tls_handshake_timeout=\(config.tls.handshakeTimeout) s, tcp_msg_read_timeout=\(core.tcpMessageReadTimeout) s, tcp_connection_lifetime=\(core.tcpConnectionLifetime) s, tcp_send_timeout=\(core.tcpSendTimeout) s, tls_send_timeout=\(config.tls.sendTimeout) s")
        print("  write queues: tcp_conn_wq_max=\(core.tcpConnWriteQueueMax) (in effect \(max(core.tcpConnWriteQueueMax, core.maxMessageSize)) octets), tcp_wq_max=\(core.tcpWriteQueueMax) octets")
        print("  transactions: max_transactions=\(config.transactions.maxTransactions), max_transactions_per_ip=\(config.transactions.maxTransactionsPerIP), max_branches=\(config.transactions.maxBranches)")
        print("  dns: dns_max_pending=\(core.dnsMaxPending), dns_cache_max_entries=\(core.dnsCacheMaxEntries), dns_use_search_list=\(core.dnsUseSearchList ? "yes" : "no")")
        print("  script: max_while_loops=\(core.maxWhileLoops)")
        print("  tls_crl_stale=\(config.tls.crlStaleFails ? "fail" : "warn")")
        print("  file descriptors needed: \(config.descriptorsNeeded) (RLIMIT_NOFILE is raised to it at start)")
        if config.tls.disabled {
            print("\nTLS: disabled (disable_tls=1)")
            return
        }
        if config.tls.autoDevelopmentCertificates, let d = config.tls.defaultServer, !FileManager.default.fileExists(atPath: d.certificate) {
            print("\nTLS: \(d.certificate) does not exist yet; the proxy creates development certificates at start (tls_auto_dev_certificates=yes)")
            return
        }
        guard Startup.needsTLS(config) else {
            print("\nTLS: no TLS listener and no certificate; outbound TLS unavailable")
            return
        }
        let table: TLSDomainTable
        do {
            table = try TLSDomainTable.build(config.tls)
        } catch {
            for e in error.errors { print("error: \(e)") }
            throw ExitCode(1)
        }
        for w in table.warnings { print("warning: \(w)") }
        print("\nTLS domains (handshake timeout \(config.tls.handshakeTimeout) s, send timeout \(config.tls.sendTimeout) s):")
        for d in table.servers + table.clients {
            print("  \(d.domain.name)")
            print("    certificate \(d.domain.certificate): \(d.summary.subject)")
            print("      issuer \(d.summary.issuer), expires \(ISO8601DateFormatter().string(from: d.summary.notValidAfter)), key \(d.summary.keyType)")
            if !d.summary.alternativeNames.isEmpty { print("      SAN \(d.summary.alternativeNames.joined(separator: " "))") }
            print("    private key \(d.domain.privateKey)")
            print("    CA list \(d.domain.caList ?? "(system trust store)")\(d.trustedCASubjects.isEmpty ? "" : ": " + d.trustedCASubjects.joined(separator: "; "))")
            print("    method \(d.domain.method)")
            print("    ciphers (TLS 1.2) \(d.cipherList.openSSLString)")
            print("    \(d.verificationDescription)")
        }
    }
}
