import Foundation

/// The RFC 4475 torture corpus in `../shared/conformance/rfc4475/` next to
/// the repository (or where `SWIFTSER_SHARED` points).
enum TortureCorpus {
    struct Row: Sendable, CustomStringConvertible {
        let name: String
        let verdict: String
        let section: String
        let outcome: String
        var description: String { name }
        var bytes: [UInt8] { Array(FileManager.default.contents(atPath: TortureCorpus.directory + "/" + name + ".dat")!) }
    }

    static let directory: String = {
        if let env = ProcessInfo.processInfo.environment["SWIFTSER_SHARED"] {
            return env + "/conformance/rfc4475"
        }
        // Tests/SIPCoreTests/TortureCorpus.swift → repository root → ../shared
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return root.deletingLastPathComponent().appendingPathComponent("shared/conformance/rfc4475").path
    }()

    static let rows: [Row] = {
        guard let text = try? String(contentsOfFile: directory + "/EXPECTED.tsv", encoding: .utf8) else {
            fatalError("RFC 4475 corpus not found at \(directory); set SWIFTSER_SHARED")
        }
        return text.split(separator: "\n").filter { !$0.hasPrefix("#") }.map { line in
            let f = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            return Row(name: f[0], verdict: f[1], section: f[2], outcome: f[3])
        }
    }()

    static func row(_ name: String) -> Row { rows.first { $0.name == name }! }
}
