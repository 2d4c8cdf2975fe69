import Foundation

// A stand-in for swift-crypto's `Crypto` module, so that
// Sources/SIPProxy/Digest.swift compiles for fuzzing without swift-crypto
// and BoringSSL. The fuzz target exercises only the header parsers, which
// use no hash; these return zero octets of the right length and must never
// be linked into anything else.

public enum Insecure {
    public enum MD5 {
        public static func hash<D: DataProtocol>(data: D) -> [UInt8] { [UInt8](repeating: 0, count: 16) }
    }
}

public enum SHA256 {
    public static func hash<D: DataProtocol>(data: D) -> [UInt8] { [UInt8](repeating: 0, count: 32) }
}
