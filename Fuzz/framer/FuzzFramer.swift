import SIPCore

// libFuzzer target: the TCP/TLS stream framer fed in chunks. The first four
// octets of the input are chunk sizes (0 counts as 1), used in turn; the
// rest is the byte stream. Every framed message is then parsed as a stream
// message and validated. Built by scripts/fuzz against SIPCore compiled
// from Sources/SIPCore.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzFramer(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let data, size > 4 else { return 0 }
    let input = UnsafeBufferPointer(start: data, count: size)
    let sizes = input[0..<4].map { max(Int($0), 1) }
    let stream = input[4...]
    var framer = SIPStreamFramer()
    var offset = stream.startIndex
    var k = 0
    while offset < stream.endIndex {
        let end = min(offset + sizes[k % 4], stream.endIndex)
        framer.append(stream[offset..<end])
        offset = end
        k += 1
        while true {
            let event: SIPStreamFramer.Event?
            do { event = try framer.next() } catch { return 0 }  // the connection would close
            guard let event else { break }
            if case .message(let bytes) = event, let m = try? SIPMessage.parse(bytes, framing: .stream) {
                _ = try? m.validate()
            }
        }
        _ = framer.hasPartialMessage
        _ = framer.bufferedCount
    }
    return 0
}
