import ArgumentParser
import Foundation
import SIPConfig
import SIPCore
import SIPProxy

struct Ctl: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Call a JSON-RPC method of a running proxy (Kamailio's names) and print the result as JSON.",
        discussion: """
        Methods: core.version, core.uptime, core.psx, core.info, ul.dump, ul.lookup location AOR, \
        ul.rm location AOR, tls.list, tls.options, tls.reload, cfg.get core debug, cfg.set core debug N, \
        stats.get_statistics all, cfg.reload (reload the route script), system.listMethods.
        Parameters that look like integers are sent as numbers; write s:VALUE to send a string, i:VALUE a number.
        Exit status: 0 on a result, 1 on an error answer, 2 when the proxy cannot be reached.
        """)

    @Option(name: .shortAndLong, help: "The control socket (default: control_socket of the config given with -f, else var/swiftser.ctl, else /run/swiftser/swiftser.ctl).")
    var socket: String?

    @Option(name: .shortAndLong, help: "A config whose control_socket to use.")
    var file: String?

    @Flag(help: "Print the result as a readable table instead of JSON.")
    var table = false

    @Argument(parsing: .captureForPassthrough, help: "The method, then its parameters (options of ctl go before the method).")
    var command: [String] = []

    func run() throws {
        guard let method = command.first else { throw ValidationError("name a method, e.g. core.version") }
        let path = try socketPath()
        let params = command.dropFirst().map(Ctl.param)
        let request: [String: Any] = ["jsonrpc": "2.0", "method": method, "params": params, "id": 1]
        var body = try JSONSerialization.data(withJSONObject: request, options: [])
        body.append(0x0A)
        let answer: Data
        do {
            answer = try ControlClient.call(path: path, body)
        } catch {
            FileHandle.standardError.write(Data("swiftser ctl: \(error)\n".utf8))
            throw ExitCode(2)
        }
        guard let object = try? JSONSerialization.jsonObject(with: answer, options: [.fragmentsAllowed]) as? [String: Any] else {
            FileHandle.standardError.write(Data("swiftser ctl: the proxy's answer is not a JSON-RPC response: \(String(decoding: answer.prefix(200), as: UTF8.self))\n".utf8))
            throw ExitCode(1)
        }
        if let error = object["error"] as? [String: Any] {
            FileHandle.standardError.write(Data("error \(error["code"] ?? "?"): \(LogText.escaped("\(error["message"] ?? "")"))\n".utf8))
            for line in error["data"] as? [String] ?? [] { FileHandle.standardError.write(Data((LogText.escaped(line) + "\n").utf8)) }
            throw ExitCode(1)
        }
        let result = object["result"] ?? NSNull()
        print(table ? ControlText.table(result) : ControlText.json(result))
    }

    func socketPath() throws -> String {
        if let socket { return socket }
        if let file {
            do {
                return try ConfigLoader.load(file: file, functions: ScriptFunctions.catalogue).core.controlSocket
            } catch {
                throw ValidationError("cannot read \(file):\n\(error.description)")
            }
        }
        // A checkout's socket, else the Debian package's (/run/swiftser).
        let local = "var/swiftser.ctl"
        if !FileManager.default.fileExists(atPath: local), FileManager.default.fileExists(atPath: Ctl.packagedSocket) {
            return Ctl.packagedSocket
        }
        return local
    }

    /// Where the Debian package's config puts the control socket.
    static let packagedSocket = "/run/swiftser/swiftser.ctl"

    /// A command-line word as a JSON value: integers as numbers, `s:` and `i:` to force.
    static func param(_ word: String) -> Any {
        if word.hasPrefix("s:") { return String(word.dropFirst(2)) }
        if word.hasPrefix("i:"), let n = Int(word.dropFirst(2)) { return n }
        if let n = Int(word) { return n }
        return word
    }
}

/// A JSON-RPC call over the UNIX control socket.
enum ControlClient {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// Sends `body` and reads the answer until the proxy closes (at most 16 MiB, 30 s).
    static func call(path: String, _ body: Data) throws -> Data {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "cannot create a socket") }
        defer { close(fd) }
        var tv = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8CString)
        guard bytes.count <= MemoryLayout.size(ofValue: addr.sun_path) else { throw Failure(description: "socket path too long: \(path)") }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            bytes.withUnsafeBytes { raw.copyMemory(from: $0) }
        }
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard ok == 0 else {
            throw Failure(description: "cannot reach the proxy at \(path): \(String(cString: strerror(errno))) (is it running? is control_socket set?)")
        }
        var sent = 0
        let all = [UInt8](body)
        while sent < all.count {
            let n = all[sent...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { throw Failure(description: "write to \(path) failed: \(String(cString: strerror(errno)))") }
            sent += n
        }
        var answer = Data()
        var buf = [UInt8](repeating: 0, count: 65_536)
        while answer.count < 16 << 20 {
            let n = read(fd, &buf, buf.count)
            if n < 0 { throw Failure(description: "no answer from \(path): \(String(cString: strerror(errno)))") }
            if n == 0 { break }
            answer.append(contentsOf: buf[0..<n])
        }
        return answer
    }
}
