import Crypto
import Foundation
import Testing

/// The RFC 4475 torture corpus, kept in the repository under
/// `Tests/Fixtures/rfc4475/` with its `SHA256SUMS` and `EXPECTED.tsv`.
/// A missing or unreadable file fails the test that needs it with a
/// message naming the file; nothing here traps.
enum TortureCorpus {
    struct Row: Sendable, CustomStringConvertible {
        let name: String
        let verdict: String
        let section: String
        let outcome: String
        var description: String { name }

        /// The message's bytes; a missing file records a test issue and gives no bytes.
        var bytes: [UInt8] {
            let file = TortureCorpus.directory + "/" + name + ".dat"
            guard let data = FileManager.default.contents(atPath: file) else {
                Issue.record("RFC 4475 fixture \(file) is missing or unreadable")
                return []
            }
            return Array(data)
        }
    }

    /// Tests/SIPCoreTests/TortureCorpus.swift → repository root → Tests/Fixtures/rfc4475.
    static let directory: String = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/rfc4475").path

    /// Why `EXPECTED.tsv` could not be read, or nil.
    static let loadError: String? = loaded.1

    static let rows: [Row] = loaded.0

    private static let loaded: ([Row], String?) = {
        let file = directory + "/EXPECTED.tsv"
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
            return ([], "RFC 4475 corpus index \(file) is missing or unreadable")
        }
        var rows: [Row] = []
        for (i, line) in text.split(separator: "\n").enumerated() where !line.hasPrefix("#") {
            let f = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            guard f.count >= 4 else { return (rows, "\(file):\(i + 1): expected at least 4 tab-separated fields") }
            rows.append(Row(name: f[0], verdict: f[1], section: f[2], outcome: f[3]))
        }
        return (rows, nil)
    }()

    /// The row named `name`; a missing one records a test issue and gives an empty row.
    static func row(_ name: String) -> Row {
        if let r = rows.first(where: { $0.name == name }) { return r }
        Issue.record("RFC 4475 row '\(name)' not in \(directory)/EXPECTED.tsv\(loadError.map { " (\($0))" } ?? "")")
        return Row(name: name, verdict: "", section: "", outcome: "")
    }
}

@Suite("RFC 4475 fixture in the repository")
struct TortureCorpusFixtureTests {
    @Test("EXPECTED.tsv reads and lists 50 messages")
    func index() {
        #expect(TortureCorpus.loadError == nil, "\(TortureCorpus.loadError ?? "")")
        #expect(TortureCorpus.rows.count == 50)
    }

    @Test("every file matches SHA256SUMS, and every message of EXPECTED.tsv is listed there")
    func checksums() {
        let dir = TortureCorpus.directory
        guard let text = try? String(contentsOfFile: dir + "/SHA256SUMS", encoding: .utf8) else {
            Issue.record("\(dir)/SHA256SUMS is missing or unreadable")
            return
        }
        var listed: Set<String> = []
        for line in text.split(separator: "\n") {
            // sha256sum's format: 64 hex digits, two spaces (or space and '*'), the name.
            let parts = line.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
            guard parts.count == 2, parts[0].count == 64 else {
                Issue.record("SHA256SUMS: malformed line '\(line)'")
                continue
            }
            var name = parts[1].trimmingCharacters(in: .whitespaces)
            if name.hasPrefix("*") { name.removeFirst() }
            listed.insert(name)
            guard let data = FileManager.default.contents(atPath: dir + "/" + name) else {
                Issue.record("\(dir)/\(name) is listed in SHA256SUMS but missing")
                continue
            }
            let digest = SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
            #expect(digest == parts[0].lowercased(), "\(name): sha256 \(digest), SHA256SUMS says \(parts[0])")
        }
        #expect(listed.contains("EXPECTED.tsv"))
        for row in TortureCorpus.rows {
            #expect(listed.contains(row.name + ".dat"), "\(row.name).dat is not in SHA256SUMS")
        }
    }
}
