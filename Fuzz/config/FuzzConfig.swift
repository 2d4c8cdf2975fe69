import Foundation

// libFuzzer target: the input as the text of a ser.cfg file, loaded with
// an in-memory file reader (an include of any other file is "no such
// file"). Built by scripts/fuzz together with Sources/SIPConfig/*.swift in
// one module.

private let mainFile = "/fuzz/swiftser.cfg"

private struct NoSuchFile: Error {}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfig(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let text = data.map { String(decoding: UnsafeBufferPointer(start: $0, count: size), as: UTF8.self) } ?? ""
    let reader: Lexer.FileReader = { path in
        guard path == mainFile else { throw NoSuchFile() }
        return text
    }
    do {
        let config = try ConfigLoader.load(file: mainFile, readFile: reader)
        _ = config.warnings.map(\.description)
    } catch {
        _ = error.diagnostics.map(\.description)
    }
    return 0
}
