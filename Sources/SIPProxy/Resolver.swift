import Foundation
import Logging
import SIPConfig
import SIPCore
import SIPTLS
import SIPTransport

/// Turns a next-hop URI into a transport destination (RFC 3263): the
/// transport from `transport=` or the `sips:` scheme, else UDP (NAPTR is
/// not consulted); for a name without a port, an SRV name
/// (`_sip._udp`, `_sip._tcp`, `_sips._tcp`) the transport looks up when the
/// message is sent, trying its targets in order; else the port from the URI
/// or the transport's default and the address from a hosts file
/// (`dns_hosts_file`) or from DNS (A, then AAAA) when the message is sent.
struct Resolver {
    let hosts: [String: String]
    let logger: Logger
    let srvLookup: Bool

    init(hostsFile: String?, srvLookup: Bool = true, logger: Logger) {
        self.logger = logger
        self.srvLookup = srvLookup
        var map: [String: String] = [:]
        if let hostsFile, let text = try? String(contentsOfFile: hostsFile, encoding: .utf8) {
            for line in text.split(separator: "\n") {
                let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
                guard let ip = fields.first, !ip.hasPrefix("#") else { continue }
                for name in fields.dropFirst() where !name.hasPrefix("#") { map[name.lowercased()] = String(ip) }
            }
        }
        self.hosts = map
    }

    enum ResolveError: Error, CustomStringConvertible {
        case unsupportedScheme(String)
        case sipsNeedsTLS
        var description: String {
            switch self {
            case .unsupportedScheme(let s): return "URI scheme '\(s)' is not routable"
            case .sipsNeedsTLS: return "a sips: URI may only be reached over TLS"
            }
        }
    }

    /// The destination for a URI; `forced` overrides the transport.
    func destination(for uri: SIPURI, forced: TransportProtocol? = nil) throws -> Destination {
        guard uri.isSIP else { throw ResolveError.unsupportedScheme(uri.scheme.name) }
        var proto: TransportProtocol
        if let forced {
            proto = forced
        } else if uri.scheme == .sips {
            proto = .tls
        } else if let t = uri.transport, let p = TransportProtocol(rawValue: t) {
            proto = p
        } else {
            proto = .udp
        }
        if uri.scheme == .sips && proto != .tls { throw ResolveError.sipsNeedsTLS }
        let port = uri.port ?? proto.defaultPort
        var host = uri.maddr ?? uri.host
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        let name = uri.host.hasPrefix("[") ? nil : uri.host
        if let ip = hosts[host.lowercased()] {
            return Destination(proto: proto, host: ip, port: port, tlsServerName: name)
        }
        var srv: String? = nil
        if srvLookup, uri.port == nil, let name, uri.maddr == nil, !PeerIdentity.isIPLiteral(host), host.lowercased() != "localhost" {
            srv = (proto == .tls ? "_sips._tcp." : proto == .tcp ? "_sip._tcp." : "_sip._udp.") + host
        }
        return Destination(proto: proto, host: host, port: port, tlsServerName: name, srvName: srv)
    }
}

extension SIPURI {
    var maddr: String? { parameter("maddr") }
}
