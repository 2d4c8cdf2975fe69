/// The few DNS messages RFC 3263 needs: a query for one name and type, and
/// the SRV, A and AAAA records of its answer (RFC 1035, RFC 2782, RFC 3596).
/// Pure encoding and decoding; `DNSClient` does the I/O.
public enum DNSRecordType: UInt16, Sendable {
    case a = 1
    case aaaa = 28
    case srv = 33
    case naptr = 35
}

/// A NAPTR record (RFC 3403) as RFC 3263 §4.1 uses it.
public struct NAPTRRecord: Sendable, Equatable {
    public var order: UInt16
    public var preference: UInt16
    public var flags: String
    public var services: String
    public var regexp: String
    public var replacement: String

    public init(order: UInt16, preference: UInt16, flags: String, services: String, regexp: String, replacement: String) {
        self.order = order
        self.preference = preference
        self.flags = flags
        self.services = services
        self.regexp = regexp
        self.replacement = replacement
    }
}

/// An SRV record (RFC 2782).
public struct SRVRecord: Sendable, Equatable {
    public var priority: UInt16
    public var weight: UInt16
    public var port: UInt16
    public var target: String
    public var ttl: UInt32

    public init(priority: UInt16, weight: UInt16, port: UInt16, target: String, ttl: UInt32) {
        self.priority = priority
        self.weight = weight
        self.port = port
        self.target = target
        self.ttl = ttl
    }
}

/// The records of an answer that matter here.
public struct DNSAnswer: Sendable, Equatable {
    public var id: UInt16
    /// RCODE: 0 no error, 3 name does not exist.
    public var responseCode: UInt8
    public var srv: [SRVRecord] = []
    public var naptr: [NAPTRRecord] = []
    /// A and AAAA addresses as text.
    public var addresses: [String] = []
    /// Smallest TTL of the records used.
    public var ttl: UInt32 = 0
}

public enum DNSMessage {
    /// A recursive query for `name` of `type`.
    public static func query(id: UInt16, name: String, type: DNSRecordType) -> [UInt8] {
        var out: [UInt8] = [UInt8(id >> 8), UInt8(id & 0xff), 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]
        for label in name.split(separator: ".") {
            let bytes = Array(label.utf8.prefix(63))
            out.append(UInt8(bytes.count))
            out.append(contentsOf: bytes)
        }
        out.append(0)
        out.append(contentsOf: [UInt8(type.rawValue >> 8), UInt8(type.rawValue & 0xff), 0, 1])
        return out
    }

    public struct Malformed: Error, Sendable {}

    /// Decodes an answer; records of other types are skipped.
    public static func parse(_ b: [UInt8]) throws(Malformed) -> DNSAnswer {
        guard b.count >= 12, b[2] & 0x80 != 0 else { throw Malformed() }
        var answer = DNSAnswer(id: UInt16(b[0]) << 8 | UInt16(b[1]), responseCode: b[3] & 0x0f)
        let qd = Int(u16(b, 4)), an = Int(u16(b, 6))
        var i = 12
        for _ in 0..<qd {
            _ = try name(b, &i)
            i += 4
        }
        var ttls: [UInt32] = []
        for _ in 0..<an {
            _ = try name(b, &i)
            guard i + 10 <= b.count else { throw Malformed() }
            let type = u16(b, i), ttl = UInt32(u16(b, i + 4)) << 16 | UInt32(u16(b, i + 6)), length = Int(u16(b, i + 8))
            i += 10
            guard i + length <= b.count else { throw Malformed() }
            switch DNSRecordType(rawValue: type) {
            case .a? where length == 4:
                answer.addresses.append(b[i..<i + 4].map(String.init).joined(separator: "."))
                ttls.append(ttl)
            case .aaaa? where length == 16:
                answer.addresses.append(stride(from: i, to: i + 16, by: 2).map { String(u16(b, $0), radix: 16) }.joined(separator: ":"))
                ttls.append(ttl)
            case .naptr? where length >= 7:
                var j = i + 4
                func characterString() throws(Malformed) -> String {
                    guard j < i + length else { throw Malformed() }
                    let n = Int(b[j])
                    guard j + 1 + n <= i + length else { throw Malformed() }
                    defer { j += 1 + n }
                    return String(decoding: b[(j + 1)..<(j + 1 + n)], as: UTF8.self)
                }
                let flags = try characterString(), services = try characterString(), regexp = try characterString()
                let replacement = try name(b, &j)
                answer.naptr.append(NAPTRRecord(order: u16(b, i), preference: u16(b, i + 2), flags: flags, services: services, regexp: regexp, replacement: replacement))
                ttls.append(ttl)
            case .srv? where length >= 7:
                var j = i + 6
                let target = try name(b, &j)
                answer.srv.append(SRVRecord(priority: u16(b, i), weight: u16(b, i + 2), port: u16(b, i + 4), target: target, ttl: ttl))
                ttls.append(ttl)
            default:
                break
            }
            i += length
        }
        answer.ttl = ttls.min() ?? 0
        return answer
    }

    private static func u16(_ b: [UInt8], _ i: Int) -> UInt16 { UInt16(b[i]) << 8 | UInt16(b[i + 1]) }

    /// A possibly compressed name at `i`; advances `i` past it.
    private static func name(_ b: [UInt8], _ i: inout Int) throws(Malformed) -> String {
        var labels: [String] = []
        var p = i
        var jumped = false
        var hops = 0
        while true {
            guard p < b.count else { throw Malformed() }
            let len = Int(b[p])
            if len == 0 {
                if !jumped { i = p + 1 }
                break
            }
            if len & 0xc0 == 0xc0 {
                guard p + 1 < b.count, hops < 16 else { throw Malformed() }
                if !jumped { i = p + 2 }
                p = (len & 0x3f) << 8 | Int(b[p + 1])
                jumped = true
                hops += 1
                continue
            }
            guard p + 1 + len <= b.count else { throw Malformed() }
            labels.append(String(decoding: b[(p + 1)...(p + len)], as: UTF8.self))
            p += 1 + len
        }
        return labels.joined(separator: ".")
    }

    /// RFC 2782 order: lowest priority first; within one priority, a
    /// weighted random order (`random` returns 0…upperBound).
    public static func order(_ records: [SRVRecord], random: (Int) -> Int = { Int.random(in: 0...$0) }) -> [SRVRecord] {
        var out: [SRVRecord] = []
        for priority in Set(records.map(\.priority)).sorted() {
            // Zero-weight records first, as RFC 2782 asks, so they get a small chance.
            var pool = records.filter { $0.priority == priority }.sorted { ($0.weight == 0 ? 0 : 1) < ($1.weight == 0 ? 0 : 1) }
            while !pool.isEmpty {
                let total = pool.reduce(0) { $0 + Int($1.weight) }
                let pick = random(total)
                var sum = 0
                var index = pool.count - 1
                for (k, r) in pool.enumerated() {
                    sum += Int(r.weight)
                    if sum >= pick { index = k; break }
                }
                out.append(pool.remove(at: index))
            }
        }
        return out
    }
}
