// libFuzzer target: an Authorization / Proxy-Authorization header value
// (the digest credentials parser and the realm-only reader). Built by
// scripts/fuzz together with Sources/SIPProxy/Digest.swift and the
// CryptoStub module (the parsers use no hash).

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzDigest(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = data.map { UnsafeBufferPointer(start: $0, count: size) } ?? UnsafeBufferPointer(start: nil, count: 0)
    _ = DigestCredentials.realm(of: bytes)
    if case .success(let c) = DigestCredentials.parse(bytes) {
        _ = (c.user, c.domain, c.nonceCount)
    }
    return 0
}
