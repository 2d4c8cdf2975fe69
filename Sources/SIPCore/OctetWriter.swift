import Foundation

/// Writes octets into a buffer whose size was computed up front: one
/// allocation and plain copies instead of a growing array. Every write is
/// checked against the capacity, so a wrong size estimate stops the process
/// rather than writing past the end.
struct OctetWriter {
    private let base: UnsafeMutablePointer<UInt8>
    private let capacity: Int
    private(set) var count = 0

    init(_ buffer: UnsafeMutableBufferPointer<UInt8>) {
        base = buffer.baseAddress!
        capacity = buffer.count
    }

    /// An array of at most `capacity` octets filled by `body`.
    static func array(capacity: Int, _ body: (inout OctetWriter) -> Void) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: Swift.max(capacity, 1)) { buffer, initialized in
            var w = OctetWriter(buffer)
            body(&w)
            initialized = w.count
        }
    }

    @inline(__always) mutating func put(_ b: UInt8) {
        precondition(count < capacity, "OctetWriter: capacity exceeded")
        base[count] = b
        count += 1
    }

    @inline(__always) mutating func put(_ a: UInt8, _ b: UInt8) {
        precondition(count + 2 <= capacity, "OctetWriter: capacity exceeded")
        base[count] = a
        base[count + 1] = b
        count += 2
    }

    mutating func put(_ bytes: UnsafeRawBufferPointer) {
        guard let src = bytes.baseAddress, !bytes.isEmpty else { return }
        precondition(count + bytes.count <= capacity, "OctetWriter: capacity exceeded")
        memcpy(base + count, src, bytes.count)
        count += bytes.count
    }

    mutating func put(_ s: ArraySlice<UInt8>) { s.withUnsafeBytes { put($0) } }
    mutating func put(_ a: [UInt8]) { a.withUnsafeBytes { put($0) } }
    mutating func put(_ s: String) {
        var s = s
        s.withUTF8 { put(UnsafeRawBufferPointer($0)) }
    }

    /// A non-negative integer in decimal (at most 20 octets).
    mutating func putDecimal(_ n: Int) {
        precondition(n >= 0)
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)
        var v = UInt64(n)
        var len = 0
        withUnsafeMutableBytes(of: &digits) { d in
            repeat {
                d[23 - len] = UInt8(truncatingIfNeeded: v % 10) &+ 0x30
                v /= 10
                len += 1
            } while v > 0
            put(UnsafeRawBufferPointer(rebasing: d[(24 - len)...]))
        }
    }
}
