import ArgumentParser
import Foundation
import SIPTLS

struct Certs: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make a CA and certificates signed by it (replaces the seed's openssl scripts).",
        subcommands: [CA.self, Server.self, Client.self])

    struct CA: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a CA: DIR/ca.pem and DIR/ca.key (mode 0600).")
        @Option(help: "Folder for ca.pem and ca.key.") var dir = "etc/certs"
        @Option(help: "Common name of the CA.") var name = "SwiftSER CA"
        @Option(help: "Key type: ec (ECDSA P-256), rsa2048, rsa3072.") var key = "ec"
        @Option(help: "Validity in days (development certificates: short-lived).") var days = CertificateGenerator.defaultValidDays

        func run() throws {
            guard let kind = CertificateGenerator.KeyKind(rawValue: key) else { throw ValidationError("--key must be ec, rsa2048 or rsa3072") }
            let ca = try CertificateGenerator.makeCA(commonName: name, validDays: days, key: kind)
            try CertificateGenerator.write(ca, certificate: dir + "/ca.pem", key: dir + "/ca.key")
            print("wrote \(dir)/ca.pem and \(dir)/ca.key (\(ca.certificate.subject))")
        }
    }

    struct EndEntity: ParsableArguments {
        @Option(help: "Common name.") var name: String
        @Option(help: "DNS subjectAltName (repeatable).") var dns: [String] = []
        @Option(help: "IP subjectAltName (repeatable).") var ip: [String] = []
        @Option(name: .customLong("sip-uri"), help: "URI subjectAltName such as sip:example.com (repeatable).") var sipURI: [String] = []
        @Option(help: "Folder holding ca.pem and ca.key.") var caDir = "etc/certs"
        @Option(help: "Output prefix: writes PREFIX.pem and PREFIX.key (default: CA folder/NAME).") var out: String?
        @Option(help: "Key type: ec, rsa2048, rsa3072.") var key = "ec"
        @Option(help: "Validity in days (development certificates: short-lived).") var days = CertificateGenerator.defaultValidDays

        func issue(defaultDNS: Bool) throws {
            guard let kind = CertificateGenerator.KeyKind(rawValue: key) else { throw ValidationError("--key must be ec, rsa2048 or rsa3072") }
            guard FileManager.default.fileExists(atPath: caDir + "/ca.pem"), FileManager.default.fileExists(atPath: caDir + "/ca.key") else {
                throw ValidationError("no CA in \(caDir) (ca.pem and ca.key); create one with: swiftser certs ca --dir \(caDir)")
            }
            let ca: CertificateGenerator.Issued
            do {
                ca = try CertificateGenerator.readCA(certificate: caDir + "/ca.pem", key: caDir + "/ca.key")
            } catch {
                throw ValidationError("cannot read the CA in \(caDir): \(error)")
            }
            var req = CertificateGenerator.Request(commonName: name)
            req.dnsNames = dns.isEmpty && defaultDNS && !name.contains(" ") ? [name] : dns
            req.ipAddresses = ip
            req.sipURIs = sipURI
            req.key = kind
            req.validDays = days
            let cert = try CertificateGenerator.issue(req, by: ca)
            let prefix = out ?? (caDir + "/" + name.replacingOccurrences(of: " ", with: "_"))
            try CertificateGenerator.write(cert, certificate: prefix + ".pem", key: prefix + ".key")
            print("wrote \(prefix).pem and \(prefix).key (\(cert.certificate.subject), signed by \(ca.certificate.subject))")
        }
    }

    struct Server: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Issue a server certificate (serverAuth and clientAuth).")
        @OptionGroup var options: EndEntity
        func run() throws { try options.issue(defaultDNS: true) }
    }

    struct Client: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Issue a client certificate (for a phone or a peer proxy).")
        @OptionGroup var options: EndEntity
        func run() throws { try options.issue(defaultDNS: false) }
    }
}
