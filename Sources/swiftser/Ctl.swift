import ArgumentParser
import Foundation

struct Ctl: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Talk to a running proxy: tls.reload, tls.list, ul.dump, conn.count, version.")

    @Option(name: .shortAndLong, help: "The control socket (control_socket in the config).")
    var socket = "var/swiftser.ctl"

    @Argument(help: "The command.") var command: [String]

    func run() throws {
        let fd = Foundation.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ValidationError("cannot create a socket") }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let path = Array(socket.utf8CString)
        guard path.count <= MemoryLayout.size(ofValue: addr.sun_path) else { throw ValidationError("socket path too long") }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            path.withUnsafeBytes { raw.copyMemory(from: $0) }
        }
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard ok == 0 else {
            throw ValidationError("cannot reach the proxy at \(socket): \(String(cString: strerror(errno))) (is it running? is control_socket set?)")
        }
        let line = command.joined(separator: " ") + "\n"
        _ = line.withCString { write(fd, $0, strlen($0)) }
        var answer = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(fd, &buf, buf.count)
            if n <= 0 { break }
            answer.append(contentsOf: buf[0..<n])
        }
        print(String(decoding: answer, as: UTF8.self), terminator: "")
    }
}
