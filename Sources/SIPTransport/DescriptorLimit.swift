#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Logging

/// `RLIMIT_NOFILE`: raised at start to what the connection limits need.
public enum DescriptorLimit {
    /// The limits need more descriptors than the hard limit allows.
    public struct TooLow: Error, CustomStringConvertible {
        public var needed: Int
        public var hardLimit: Int
        public var description: String {
            "the connection limits need \(needed) file descriptors (tcp_max_connections, tls_max_connections, tcp_max_outbound_connections, "
                + "tls_max_handshakes and the listeners) but RLIMIT_NOFILE's hard limit is \(hardLimit): "
                + "raise it (ulimit -Hn, systemd LimitNOFILE=) or lower the limits"
        }
    }

    /// The soft and hard limits now.
    public static var current: (soft: Int, hard: Int) {
        var r = rlimit()
        guard getrlimit(resourceNumber, &r) == 0 else { return (0, 0) }
        return (clampToInt(r.rlim_cur), clampToInt(r.rlim_max))
    }

    /// Raises the soft limit to `needed` when it is lower; throws when the
    /// hard limit is lower.
    public static func raise(toFit needed: Int, logger: Logger) throws {
        var r = rlimit()
        guard getrlimit(resourceNumber, &r) == 0 else { return }
        let soft = clampToInt(r.rlim_cur), hard = clampToInt(r.rlim_max)
        if soft >= needed { return }
        guard hard >= needed else { throw TooLow(needed: needed, hardLimit: hard) }
        r.rlim_cur = rlim_t(needed)
        guard setrlimit(resourceNumber, &r) == 0 else { throw TooLow(needed: needed, hardLimit: soft) }
        logger.info("RLIMIT_NOFILE raised from \(soft) to \(needed) for the connection limits")
    }

    private static func clampToInt(_ v: rlim_t) -> Int {
        v >= rlim_t(Int.max) ? Int.max : Int(v)
    }

    #if os(Linux)
    private static var resourceNumber: __rlimit_resource_t { __rlimit_resource_t(UInt32(RLIMIT_NOFILE.rawValue)) }
    #else
    private static var resourceNumber: Int32 { RLIMIT_NOFILE }
    #endif
}
