import Foundation
import Logging
import SIPConfig
import SIPProxy
import SIPTLS

/// Loading a config and its TLS domains, shared by `run` and `check`.
enum Startup {
    /// Loads the config or prints every error and exits 1.
    static func loadConfig(_ options: ConfigOptions) -> Config {
        do {
            let config = try ConfigLoader.load(file: options.file, functions: ScriptFunctions.catalogue, defines: options.defineMap)
            if let problem = ModuleFiles.addressFileProblem(config) {
                FileHandle.standardError.write(Data("error: \(problem)\n1 error in \(options.file)\n".utf8))
                Foundation.exit(1)
            }
            return config
        } catch {
            FileHandle.standardError.write(Data((error.description + "\n").utf8))
            let n = error.diagnostics.count
            FileHandle.standardError.write(Data("\(n) error\(n == 1 ? "" : "s") in \(options.file)\n".utf8))
            Foundation.exit(1)
        }
    }

    /// True when a TLS domain table is needed: TLS listeners, or TLS
    /// settings the operator wrote (client domains, explicit certificate).
    static func needsTLS(_ config: Config) -> Bool {
        if config.tls.disabled { return false }
        if config.listens.contains(where: { $0.proto == .tls }) { return true }
        return config.tls.domains.contains { !$0.isDefault } || FileManager.default.fileExists(atPath: config.tls.defaultServer?.certificate ?? "")
    }

    /// Makes a development CA and server certificate when the config asks
    /// for it (`tls_auto_dev_certificates=yes`, as etc/swiftser.cfg does)
    /// and the default domain's files are missing.
    static func makeDevelopmentCertificates(_ config: Config, logger: Logger) throws {
        guard config.tls.autoDevelopmentCertificates, let d = config.tls.defaultServer,
              !FileManager.default.fileExists(atPath: d.certificate) || !FileManager.default.fileExists(atPath: d.privateKey)
        else { return }
        let dir = (d.certificate as NSString).deletingLastPathComponent
        let caCert = dir + "/dev-ca.pem"
        let caKey = dir + "/dev-ca.key"
        let ca: CertificateGenerator.Issued
        if FileManager.default.fileExists(atPath: caCert), FileManager.default.fileExists(atPath: caKey) {
            ca = try CertificateGenerator.readCA(certificate: caCert, key: caKey)
        } else {
            ca = try CertificateGenerator.makeCA(commonName: "SwiftSER development CA")
            try CertificateGenerator.write(ca, certificate: caCert, key: caKey)
        }
        var req = CertificateGenerator.Request(commonName: "localhost")
        req.dnsNames = ["localhost"]
        req.ipAddresses = Array(Set(config.listens.map(\.host).filter { PeerIdentity.isIPLiteral($0) } + ["127.0.0.1", "::1"])).sorted()
        req.sipURIs = ["sip:localhost"]
        let server = try CertificateGenerator.issue(req, by: ca)
        try CertificateGenerator.write(server, certificate: d.certificate, key: d.privateKey)
        if let caList = d.caList, !FileManager.default.fileExists(atPath: caList) {
            try CertificateGenerator.writeFile(caList, try ca.certificatePEM(), mode: 0o644)
        }
        let banner = String(repeating: "*", count: 72)
        logger.warning("\(banner)")
        logger.warning("DEVELOPMENT CERTIFICATES CREATED: \(d.certificate) signed by \(caCert).")
        logger.warning("They are for development only. For production, set tls_certificate, tls_private_key")
        logger.warning("and tls_ca_list to certificates of your own and remove tls_auto_dev_certificates.")
        logger.warning("\(banner)")
    }

    /// Builds the TLS domain table or prints every problem and exits 1.
    static func buildTLS(_ config: Config) -> TLSDomainTable? {
        guard needsTLS(config) else { return nil }
        do {
            return try TLSDomainTable.build(config.tls)
        } catch {
            for e in error.errors { FileHandle.standardError.write(Data("error: \(e)\n".utf8)) }
            Foundation.exit(1)
        }
    }

    /// A script that authenticates with no user yet: says how to add one.
    static func adviseOnUsers(_ config: Config, _ store: SubscriberStore, logger: Logger, configFile: String) {
        guard config.modules.contains("auth_db"), (try? store.count()) == 0 else { return }
        let domain = config.aliases.first.map { a in a.hasPrefix("[") ? a : String(a.split(separator: ":").first ?? Substring(a)) } ?? config.listens.first?.host ?? "localhost"
        let file = configFile == "etc/swiftser.cfg" ? "" : " -f \(configFile)"
        logger.warning("no users yet: nobody can register or call until you add one, e.g.")
        logger.warning("    swiftser user add\(file) alice@\(domain)")
    }

}
