import Foundation
import SIPConfig
import SIPProxy
import Testing

/// The one table of script functions (SIPProxy's `ScriptFunctions`) is what
/// the checker reads: every row is checked the same way.
@Suite("The table of script functions drives the checker")
struct FunctionTableTests {
    let catalogue = ScriptFunctions.catalogue

    @Test("every row has its own name and a module a config may load")
    func uniqueNames() {
        #expect(catalogue.duplicates.isEmpty, "duplicated rows: \(catalogue.duplicates)")
        #expect(catalogue.byName.count > 40)
        for (name, f) in catalogue.byName {
            #expect(f.name == name)
            #expect(f.minArgs >= 0 && f.minArgs <= f.maxArgs, "\(name)")
            #expect(f.module == "core" || Builtins.modules.contains(f.module), "\(name): module \(f.module)")
        }
    }

    /// A call of `name` with `count` arguments (route names that exist).
    func call(_ f: FunctionSignature, _ count: Int) -> String {
        let args = (0..<count).map { i -> String in
            if f.routeArgument?.index == i { return "r" }
            if f.rules.contains(where: { if case .replyCode(i) = $0 { return true }; return false }) { return "\"200\"" }
            return "\"1\""
        }
        return "\(f.name)(\(args.joined(separator: ", ")))"
    }

    func diagnostics(_ body: String, block: String = "request_route") -> [ConfigDiagnostic] {
        let text = """
        \(block) { \(body); }
        route[r] { drop; }
        failure_route[r] { drop; }
        onreply_route[r] { drop; }
        branch_route[r] { drop; }
        \(block == "request_route" ? "" : "request_route { drop; }")
        """
        do {
            _ = try ConfigLoader.load(text: text, functions: catalogue)
            return []
        } catch {
            return error.diagnostics.filter { $0.severity == .error }
        }
    }

    @Test("every function: the right number of arguments passes, one too few or too many is refused")
    func arity() {
        for f in catalogue.byName.values.sorted(by: { $0.name < $1.name }) {
            let ok = diagnostics(call(f, f.minArgs))
            #expect(ok.isEmpty, "\(f.name) with \(f.minArgs): \(ok.map(\.message))")
            let more = diagnostics(call(f, f.maxArgs + 1))
            #expect(more.contains { $0.message.hasPrefix("\(f.name) takes ") }, "\(f.name) with \(f.maxArgs + 1): \(more.map(\.message))")
            if f.minArgs > 0 {
                let fewer = diagnostics(call(f, f.minArgs - 1))
                #expect(fewer.contains { $0.message.hasPrefix("\(f.name) takes ") }, "\(f.name) with \(f.minArgs - 1)")
            }
        }
    }

    @Test("every function limited to some route kinds is refused in the others and accepted in its own")
    func routeKinds() {
        let blocks: [(RouteScript.Kind, String)] = [(.failure, "failure_route[x]"), (.reply, "onreply_route[x]"), (.branch, "branch_route[x]")]
        var limited = 0
        for f in catalogue.byName.values {
            guard let allowed = f.routes else { continue }
            limited += 1
            for (kind, block) in blocks {
                let d = diagnostics(call(f, f.minArgs), block: block)
                let refused = d.contains { $0.message.hasPrefix("\(f.name) cannot be used in \(kind.rawValue)") }
                #expect(refused == !allowed.contains(kind), "\(f.name) in \(kind.rawValue): \(d.map(\.message))")
            }
        }
        #expect(limited > 0)
        #expect(catalogue["t_relay"]?.routes?.contains(.reply) == false)
    }

    @Test("a function the table does not have is unknown")
    func unknown() {
        #expect(diagnostics("no_such_function()").contains { $0.message == "unknown function 'no_such_function'" })
    }
}
