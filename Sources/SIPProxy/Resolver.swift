import Foundation
import Logging
import SIPConfig
import SIPCore
import SIPTLS
import SIPTransport

/// Turns a next-hop URI into a transport destination (RFC 3263). The
/// transport: `transport=` or a port in the URI decide; else, for a name,
/// the NAPTR records (RFC 3263 §4.1, `dns_try_naptr`) pick one we listen on
/// and give the SRV name; else TLS for `sips:`, UDP otherwise. For a name
/// without a port the transport later looks up the SRV name (`_sip._udp`,
/// `_sip._tcp`, `_sips._tcp`, or the NAPTR replacement) and tries its
/// targets in order; else the port from the URI or the transport's default
/// and the address from a hosts file (`dns_hosts_file`) or from DNS (A,
/// then AAAA) when the message is sent.
struct Resolver {
    let hosts: [String: String]
    let logger: Logger
    let srvLookup: Bool
    let naptrLookup: Bool
    /// Transports we can send on (listeners present, TLS not disabled).
    let supported: Set<TransportProtocol>
    /// Where cached NAPTR answers come from (the transport's DNS client).
    let transport: SIPTransport?

    init(hostsFile: String?, srvLookup: Bool = true, naptrLookup: Bool = false, supported: Set<TransportProtocol> = [.udp, .tcp, .tls],
         transport: SIPTransport? = nil, logger: Logger) {
        self.logger = logger
        self.srvLookup = srvLookup
        self.naptrLookup = naptrLookup && srvLookup
        self.supported = supported
        self.transport = transport
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
        /// The NAPTR records of this name are not known yet: look them up, then try again.
        case needsNAPTR(String)
        var description: String {
            switch self {
            case .unsupportedScheme(let s): return "URI scheme '\(s)' is not routable"
            case .sipsNeedsTLS: return "a sips: URI may only be reached over TLS"
            case .needsNAPTR(let n): return "NAPTR records of \(n) not looked up yet"
            }
        }
    }

    /// The destination for a URI; `forced` overrides the transport. With
    /// `mayDefer` a name whose NAPTR records are not cached yet throws
    /// `needsNAPTR`; without, the default transport is used.
    func destination(for uri: SIPURI, forced: TransportProtocol? = nil, mayDefer: Bool = false) throws -> Destination {
        guard uri.isSIP else { throw ResolveError.unsupportedScheme(uri.scheme.name) }
        var host = uri.maddr ?? uri.host
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        let name = uri.host.hasPrefix("[") ? nil : uri.host
        let mapped = hosts.isEmpty ? nil : hosts[host.lowercased()]
        let lookable = mapped == nil && name != nil && uri.maddr == nil && !PeerIdentity.isIPLiteral(host) && host.lowercased() != "localhost"
        let sips = uri.scheme == .sips
        var proto: TransportProtocol
        var naptrSRV: String? = nil
        if let forced {
            proto = forced
        } else if let t = uri.transport, let p = TransportProtocol(rawValue: t) {
            proto = sips ? .tls : p
        } else if naptrLookup, lookable, uri.port == nil {
            if let answer = transport?.dns.cached(host, .naptr) {
                if let (p, replacement) = Self.choose(answer.naptr, sips: sips, supported: supported) {
                    proto = p
                    naptrSRV = replacement
                } else {
                    proto = sips ? .tls : .udp
                }
            } else if mayDefer {
                throw ResolveError.needsNAPTR(host)
            } else {
                proto = sips ? .tls : .udp
            }
        } else {
            proto = sips ? .tls : .udp
        }
        if sips && proto != .tls { throw ResolveError.sipsNeedsTLS }
        let port = uri.port ?? proto.defaultPort
        if let ip = mapped {
            return Destination(proto: proto, host: ip, port: port, tlsServerName: name)
        }
        var srv: String? = nil
        if srvLookup, uri.port == nil, lookable {
            srv = naptrSRV ?? ((proto == .tls ? "_sips._tcp." : proto == .tcp ? "_sip._tcp." : "_sip._udp.") + host)
        }
        return Destination(proto: proto, host: host, port: port, tlsServerName: name, srvName: srv)
    }

    /// RFC 3263 §4.1: among the "s"-flagged NAPTR records whose service we
    /// can use (SIPS+D2T, SIP+D2T, SIP+D2U; only SIPS+D2T for a sips: URI),
    /// the lowest order, then the lowest preference: its transport and the
    /// SRV name it points to.
    static func choose(_ records: [NAPTRRecord], sips: Bool, supported: Set<TransportProtocol>) -> (TransportProtocol, String)? {
        var best: (NAPTRRecord, TransportProtocol)?
        for r in records where r.flags.lowercased() == "s" && !r.replacement.isEmpty {
            let p: TransportProtocol
            switch r.services.uppercased() {
            case "SIPS+D2T": p = .tls
            case "SIP+D2T" where !sips: p = .tcp
            case "SIP+D2U" where !sips: p = .udp
            default: continue
            }
            guard supported.contains(p) else { continue }
            if let b = best, (b.0.order, b.0.preference) <= (r.order, r.preference) { continue }
            best = (r, p)
        }
        return best.map { ($0.1, $0.0.replacement) }
    }
}

extension SIPURI {
    var maddr: String? { parameter("maddr") }
}
