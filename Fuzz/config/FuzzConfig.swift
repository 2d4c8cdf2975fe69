import Foundation

// libFuzzer target: the input as the text of a ser.cfg file, loaded with
// an in-memory file reader (an include of any other file is "no such
// file"). Built by scripts/fuzz together with Sources/SIPConfig/*.swift in
// one module.

private let mainFile = "/fuzz/swiftser.cfg"

private struct NoSuchFile: Error {}

// The real table of script functions lives in SIPProxy, which this target
// does not build; these rows exercise every kind of signature the checker
// and the parser read (route-name arguments, route kinds, literal rules,
// roles, modules).
private let functions = FunctionCatalogue([
    FunctionSignature("route", args: 1...1, module: "core", routeArgument: .init(0, .request)),
    FunctionSignature("t_on_failure", args: 1...1, module: "tm", routeArgument: .init(0, .failure)),
    FunctionSignature("t_on_reply", args: 1...1, module: "tm", routeArgument: .init(0, .reply)),
    FunctionSignature("t_relay", args: 0...2, module: "tm", routes: [.request, .failure], roles: .relays),
    FunctionSignature("sl_send_reply", args: 2...2, module: "sl", rules: [.replyCode(0)]),
    FunctionSignature("xlog", args: 1...2, module: "xlog", rules: [.oneOf(index: 0, values: ["L_ERR", "L_INFO"], whenCount: 2)]),
    FunctionSignature("is_method", args: 1...1, module: "textops"),
    FunctionSignature("auth_check", args: 3...3, module: "auth_db", roles: .authenticates),
])

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfig(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let text = data.map { String(decoding: UnsafeBufferPointer(start: $0, count: size), as: UTF8.self) } ?? ""
    let reader: Lexer.FileReader = { path in
        guard path == mainFile else { throw NoSuchFile() }
        return text
    }
    do {
        let config = try ConfigLoader.load(file: mainFile, functions: functions, readFile: reader)
        _ = config.warnings.map(\.description)
    } catch {
        _ = error.diagnostics.map(\.description)
    }
    return 0
}
