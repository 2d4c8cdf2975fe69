import X509

/// The identities a certificate asserts and the RFC 5922 §7 check of a
/// server certificate against the SIP domain we meant to reach.
public enum PeerIdentity {
    /// Identities in the order RFC 5922 §7.1 looks at them.
    public struct Names: Sendable, Equatable {
        /// Host parts of `sip:`/`sips:` SAN URIs without a user part.
        public var sipDomains: [String] = []
        public var dnsNames: [String] = []
        public var ipAddresses: [String] = []
        /// Common names, used only when there is no subjectAltName at all.
        public var commonNames: [String] = []
        public var hasSubjectAltName = false
    }

    public static func names(of cert: Certificate) -> Names {
        var n = Names()
        if let sans = try? cert.extensions.subjectAlternativeNames {
            n.hasSubjectAltName = true
            for s in sans {
                switch s {
                case .uniformResourceIdentifier(let uri):
                    let lower = uri.lowercased()
                    guard lower.hasPrefix("sip:") || lower.hasPrefix("sips:") else { continue }
                    let rest = lower.drop(while: { $0 != ":" }).dropFirst()
                    if rest.contains("@") { continue } // a user's URI, not a domain
                    let host = rest.split(separator: ";").first.map(String.init) ?? String(rest)
                    n.sipDomains.append(host)
                case .dnsName(let d): n.dnsNames.append(d.lowercased())
                case .ipAddress(let b): n.ipAddresses.append(ipString(Array(b.bytes)))
                default: break
                }
            }
        }
        for rdn in cert.subject {
            for attr in rdn where attr.type == .RDNAttributeType.commonName {
                let s = String(describing: attr.value)
                n.commonNames.append(s.lowercased())
            }
        }
        return n
    }

    /// RFC 5922 §7.2: does `cert` name `domain`? SIP URIs in the SAN first,
    /// else DNS names in the SAN; the subject CN only when the certificate
    /// has no subjectAltName. An IP literal target matches an IP SAN.
    /// Wildcards (`*.example.com`, one label) only when allowed.
    public static func matches(_ cert: Certificate, domain rawDomain: String, allowWildcards: Bool) -> Bool {
        var domain = rawDomain.lowercased()
        if domain.hasPrefix("[") && domain.hasSuffix("]") { domain = String(domain.dropFirst().dropLast()) }
        if domain.hasSuffix(".") { domain.removeLast() }
        let n = names(of: cert)
        if isIPLiteral(domain) {
            return n.ipAddresses.contains { normalizeIP($0) == normalizeIP(domain) }
        }
        let candidates: [String]
        if !n.sipDomains.isEmpty {
            candidates = n.sipDomains
        } else if n.hasSubjectAltName {
            candidates = n.dnsNames
        } else {
            candidates = n.commonNames
        }
        return candidates.contains { nameMatches($0, domain, allowWildcards: allowWildcards) }
    }

    static func nameMatches(_ pattern: String, _ domain: String, allowWildcards: Bool) -> Bool {
        if pattern == domain { return true }
        guard allowWildcards, pattern.hasPrefix("*."), !pattern.dropFirst(2).contains("*") else { return false }
        let suffix = pattern.dropFirst(1) // ".example.com"
        guard domain.hasSuffix(suffix) else { return false }
        let label = domain.dropLast(suffix.count)
        return !label.isEmpty && !label.contains(".")
    }

    public static func isIPLiteral(_ s: String) -> Bool {
        if s.utf8.contains(0x3A) { return true }
        // Dotted quad: four runs of 1-3 digits, each at most 255 (read
        // over the octets: this runs for every request routed by name).
        var groups = 0, digits = 0, value = 0
        for b in s.utf8 {
            if b == 0x2E {
                guard digits > 0, groups < 3 else { return false }
                groups += 1
                digits = 0
                value = 0
            } else if b >= 0x30 && b <= 0x39 {
                digits += 1
                value = value * 10 + Int(b - 0x30)
                guard digits <= 3, value <= 255 else { return false }
            } else {
                return false
            }
        }
        return groups == 3 && digits > 0
    }

    static func normalizeIP(_ s: String) -> String { s.lowercased() }

    /// Text form of an IPv4 (4 octets) or IPv6 (16 octets) address.
    public static func ipString(_ b: [UInt8]) -> String {
        if b.count == 4 { return b.map(String.init).joined(separator: ".") }
        if b.count == 16 {
            var groups: [UInt16] = []
            for i in stride(from: 0, to: 16, by: 2) { groups.append(UInt16(b[i]) << 8 | UInt16(b[i + 1])) }
            // Longest run of zero groups becomes "::".
            var best = (start: -1, len: 0)
            var i = 0
            while i < 8 {
                if groups[i] == 0 {
                    var j = i
                    while j < 8 && groups[j] == 0 { j += 1 }
                    if j - i > best.len && j - i > 1 { best = (i, j - i) }
                    i = j
                } else { i += 1 }
            }
            func hex(_ r: ArraySlice<UInt16>) -> String { r.map { String($0, radix: 16) }.joined(separator: ":") }
            if best.start < 0 { return hex(groups[...]) }
            return hex(groups[0..<best.start]) + "::" + hex(groups[(best.start + best.len)...])
        }
        return b.map { String($0, radix: 16) }.joined()
    }
}
