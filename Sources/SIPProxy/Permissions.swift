import Atomics
import Foundation
import SIPConfig

/// One line of the permissions address table.
struct AddressEntry: Sendable, Equatable {
    var group: Int
    var network: IPNetwork
    /// 0: any port.
    var port: Int
    var tag: String?
}

/// Why an address file was not loaded.
enum AddressFileError: Error, Equatable, CustomStringConvertible {
    case unreadable(path: String)
    case tooLarge(path: String, limit: Int)
    case tooManyEntries(limit: Int)
    case badLine(line: Int, problem: Problem)

    enum Problem: Equatable {
        case fieldCount, group, address, port
    }

    var description: String {
        switch self {
        case .unreadable(let path): return "cannot read the address file \(path)"
        case .tooLarge(let path, let limit): return "the address file \(path) is larger than \(limit) octets"
        case .tooManyEntries(let limit): return "the address file has more than \(limit) entries (max_address_entries)"
        case .badLine(let line, let problem):
            switch problem {
            case .fieldCount: return "address file line \(line): expected 'group address[/prefix] [port] [tag]'"
            case .group: return "address file line \(line): the group must be a number from 1 to 2147483647"
            case .address: return "address file line \(line): not an IPv4 or IPv6 address or range"
            case .port: return "address file line \(line): the port must be a number from 0 (any) to 65535"
            }
        }
    }
}

/// The permissions module's address table (Kamailio's `address` table:
/// grp, ip_addr, mask, port, tag), read from a text file: one entry per
/// line, `group address[/prefix] [port] [tag]`, `#` starts a comment.
/// Plain addresses are matched before ranges (as Kamailio's hash table is
/// searched before its subnet table), each in file order.
struct AddressTable: Sendable, Equatable {
    let entries: [AddressEntry]

    init(entries: [AddressEntry]) {
        // Full-length prefixes (single addresses) first; stable otherwise.
        let single = entries.filter { $0.network.prefix == $0.network.bytes.count * 8 }
        let ranges = entries.filter { $0.network.prefix != $0.network.bytes.count * 8 }
        self.entries = single + ranges
    }

    static let empty = AddressTable(entries: [])

    /// Octets a file may have per allowed entry.
    static let octetsPerEntry = 512

    static func parse(_ text: String, maxEntries: Int) -> Result<AddressTable, AddressFileError> {
        var entries: [AddressEntry] = []
        var lineNumber = 0
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            let line = raw.prefix { $0 != "#" }
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" })
            if fields.isEmpty { continue }
            guard fields.count >= 2 && fields.count <= 4 else { return .failure(.badLine(line: lineNumber, problem: .fieldCount)) }
            guard let group = Int(fields[0]), (1...Int(Int32.max)).contains(group) else {
                return .failure(.badLine(line: lineNumber, problem: .group))
            }
            guard let network = IPNetwork(String(fields[1])) else { return .failure(.badLine(line: lineNumber, problem: .address)) }
            var port = 0
            if fields.count > 2 {
                guard let p = Int(fields[2]), (0...65535).contains(p) else { return .failure(.badLine(line: lineNumber, problem: .port)) }
                port = p
            }
            guard entries.count < maxEntries else { return .failure(.tooManyEntries(limit: maxEntries)) }
            entries.append(AddressEntry(group: group, network: network, port: port, tag: fields.count > 3 ? String(fields[3]) : nil))
        }
        return .success(AddressTable(entries: entries))
    }

    /// The first entry the source matches (in `group` when given).
    func match(ip: String, port: Int, group: Int? = nil) -> AddressEntry? {
        var a = Substring(ip)
        if a.hasPrefix("[") && a.hasSuffix("]") { a = a.dropFirst().dropLast() }
        guard let bytes = IPNetwork.addressBytes(String(a)) else { return nil }
        for e in entries where (group == nil || e.group == group) && (e.port == 0 || e.port == port) && e.network.contains(addressBytes: bytes) {
            return e
        }
        return nil
    }
}

/// The address table in use, swapped whole on reload: a message reads it
/// with one atomic load, never a lock.
final class AddressPermissions: Sendable {
    final class Box: AtomicReference, Sendable {
        let table: AddressTable
        init(_ table: AddressTable) { self.table = table }
    }

    let file: String?
    let maxEntries: Int
    private let current: ManagedAtomic<Box>

    var table: AddressTable { current.load(ordering: .acquiring).table }

    init(file: String?, maxEntries: Int) {
        self.file = file
        self.maxEntries = maxEntries
        current = ManagedAtomic(Box(.empty))
    }

    /// Reads the file (nothing when none is configured) and, when it is
    /// valid, puts its table in use; otherwise the old table stays.
    @discardableResult
    func reload() -> Result<Int, AddressFileError> {
        guard let file else { return .success(0) }
        let result = AddressPermissions.read(file, maxEntries: maxEntries)
        if case .success(let t) = result { current.store(Box(t), ordering: .releasing) }
        return result.map(\.entries.count)
    }

    /// Reads and parses an address file (also `swiftser check`).
    static func read(_ file: String, maxEntries: Int) -> Result<AddressTable, AddressFileError> {
        let limit = maxEntries * AddressTable.octetsPerEntry
        guard let h = FileHandle(forReadingAtPath: file) else { return .failure(.unreadable(path: file)) }
        defer { try? h.close() }
        let data: Data
        do {
            data = try h.read(upToCount: limit + 1) ?? Data()   // nil: an empty file
        } catch {
            return .failure(.unreadable(path: file))
        }
        guard data.count <= limit else { return .failure(.tooLarge(path: file, limit: limit)) }
        return AddressTable.parse(String(decoding: data, as: UTF8.self), maxEntries: maxEntries)
    }
}

/// Checks of module files a config names, for `swiftser check` and start-up.
public enum ModuleFiles {
    /// Why the permissions address file cannot be used; nil when it can
    /// (or none is configured).
    public static func addressFileProblem(_ config: Config) -> String? {
        guard let file = config.permissions.addressFile else { return nil }
        if case .failure(let why) = AddressPermissions.read(file, maxEntries: config.permissions.maxAddressEntries) {
            return why.description
        }
        return nil
    }
}
