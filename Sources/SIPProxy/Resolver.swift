import Foundation
import Logging
import SIPConfig
import SIPCore
import SIPTransport

/// Turns a next-hop URI into a transport destination (RFC 3263, in part):
/// the transport from `transport=` or the `sips:` scheme, the port from the
/// URI or the transport's default, the address from a hosts file when one
/// is configured (`dns_hosts_file`), else from the system resolver when the
/// message is sent.
struct Resolver {
    let hosts: [String: String]
    let logger: Logger

    init(hostsFile: String?, logger: Logger) {
        self.logger = logger
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
        return Destination(proto: proto, host: host, port: port, tlsServerName: name)
    }
}

extension SIPURI {
    var maddr: String? { parameter("maddr") }
}
