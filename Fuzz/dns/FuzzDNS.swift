// libFuzzer target: a DNS answer as the stub resolver receives it, then the
// RFC 2782 ordering of its SRV records. Built by scripts/fuzz together with
// Sources/SIPTransport/DNSMessage.swift (which imports nothing).

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzDNS(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    guard let answer = try? DNSMessage.parse(bytes) else { return 0 }
    _ = DNSMessage.order(answer.srv, random: { $0 / 2 })
    _ = DNSMessage.order(answer.srv, random: { $0 })
    return 0
}
