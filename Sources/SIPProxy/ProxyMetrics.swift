import Atomics
import CoreMetrics
import NIOConcurrencyHelpers
import Prometheus
import SIPCore
import SIPTransport

/// The proxy's counters and gauges, named after Kamailio's statistics
/// where one exists, kept in a Prometheus registry of this proxy's own
/// (no process-wide `MetricsSystem.bootstrap`, so several proxies in one
/// process, as in the tests, keep apart) and made through swift-metrics'
/// API with swift-prometheus as the backend.
///
/// Per message only relaxed atomic increments happen: every counter is
/// made once here, the ones with a label are picked by an array index,
/// and nothing is allocated or locked. Gauges (transactions, contacts,
/// connections, the transport's own counters) are read when scraped.
/// docs/operations.md lists every name.
public final class ProxyMetrics: Sendable {
    /// Where every metric lives; `render()` writes it out.
    public let registry: PrometheusCollectorRegistry

    /// `rcv_requests` by method (index: `methodIndex`).
    private let rcvRequests: [CoreMetrics.Counter]
    /// `rcv_replies` by class (index: `classIndex`).
    private let rcvReplies: [CoreMetrics.Counter]
    /// `fwd_requests`: requests sent on (stateless and by transactions).
    private let fwdRequests: CoreMetrics.Counter
    /// `fwd_replies` by class: replies received and sent on upstream.
    private let fwdReplies: [CoreMetrics.Counter]
    /// `sent_replies` by class: replies made here (sl and tm).
    private let sentReplies: [CoreMetrics.Counter]
    private let dropRequests: [CoreMetrics.Counter]
    private let dropReplies: [CoreMetrics.Counter]
    private let authChallenges: CoreMetrics.Counter
    private let authResults: [CoreMetrics.Counter]
    private let pikeBlocked: CoreMetrics.Counter
    /// New transactions refused at a cap, by `TransactionLimits.Refusal`.
    private let refusedTransactions: [CoreMetrics.Counter]
    /// Route-script faults met while a message ran, by `ScriptFault`.
    private let scriptFaults: [CoreMetrics.Counter]
    /// Whether each `ScriptFault` has been logged yet (it is logged once).
    private let scriptFaultLogged: [ManagedAtomic<Bool>]

    // Gauges, set from their sources when scraped.
    private let activeTransactions: CoreMetrics.Gauge
    private let registeredUsers: CoreMetrics.Gauge
    private let locationContacts: CoreMetrics.Gauge
    private let openConnections: [CoreMetrics.Gauge]
    private let tlsHandshakesInProgress: CoreMetrics.Gauge
    private let queuedBytes: CoreMetrics.Gauge
    private let peakQueuedBytes: CoreMetrics.Gauge
    private let peakConnectionQueue: CoreMetrics.Gauge
    /// The transport's counters (`TransportCounterValues`), copied when
    /// scraped; in the order of `transportNames` and `transportValues`.
    private let transportMirrors: [Prometheus.Counter]
    /// The DNS client's counters (`DNSCounterValues`), copied when scraped.
    private let dnsMirrors: [Prometheus.Counter]
    private let dnsPending: CoreMetrics.Gauge
    private let dnsCacheEntries: CoreMetrics.Gauge
    /// Serialises scrapes (the mirrors are reset and set again).
    private let scrapeLock = NIOLock()

    static let transportNames: [(String, [(String, String)])] = [
        ("swiftser_udp_send_errors_total", []),
        ("swiftser_tcp_write_queue_closes_total", [("limit", "tcp_conn_wq_max")]),
        ("swiftser_tcp_write_queue_closes_total", [("limit", "tcp_wq_max")]),
        ("swiftser_tcp_keepalive_pongs_total", [("outcome", "sent")]),
        ("swiftser_tcp_keepalive_pongs_total", [("outcome", "skipped")]),
        ("swiftser_tcp_read_pauses_total", []),
        ("swiftser_tcp_refused_connections_total", [("limit", "tcp_max_connections_per_ip")]),
        ("swiftser_tcp_refused_connections_total", [("limit", "max_connections")]),
        ("swiftser_tls_handshake_evictions_total", []),
        ("swiftser_tcp_msg_read_timeouts_total", []),
        ("swiftser_tls_handshakes_total", [("outcome", "completed")]),
        ("swiftser_tls_handshakes_total", [("outcome", "failed")]),
        ("swiftser_tls_handshakes_total", [("outcome", "timeout")]),
        ("swiftser_tls_handshakes_total", [("outcome", "refused")]),
    ] + TLSFailure.Group.allCases.map { ("swiftser_tls_handshake_failures_total", [("reason", $0.label)]) }

    static func transportValues(_ v: TransportCounterValues) -> [Int] {
        [v.udpSendErrors, v.queueLimitCloses, v.globalQueueLimitCloses, v.pongsSent, v.pongsSkipped, v.readPauses,
         v.perAddressRefusals, v.poolRefusals, v.handshakeEvictions, v.messageReadTimeouts,
         v.tlsHandshakesCompleted, v.tlsHandshakesFailed, v.tlsHandshakeTimeouts, v.tlsVerificationRefusals]
            + v.tlsHandshakeFailuresByGroup
    }

    static let dnsNames: [(String, [(String, String)])] = [
        ("swiftser_dns_queries_total", []),
        ("swiftser_dns_cache_hits_total", []),
        ("swiftser_dns_failures_total", [("reason", "timeout")]),
        ("swiftser_dns_failures_total", [("reason", "error")]),
        ("swiftser_dns_failures_total", [("reason", "dns_max_pending")]),
        ("swiftser_dns_cache_evictions_total", []),
    ]

    static func dnsValues(_ v: DNSCounterValues) -> [Int] {
        [v.queries, v.cacheHits, v.timeouts, v.errors, v.refused, v.evictions]
    }

    /// Request → final response latency of stateful transactions.
    let finalResponseLatency = LatencyHistogram(
        name: "swiftser_tm_final_response_seconds",
        boundsMs: [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000])

    private let draining = ManagedAtomic<Bool>(false)

    /// Why a request was not routed.
    public enum RequestDrop: Int, CaseIterable, Sendable {
        /// Failed validation (answered with an error status unless an ACK).
        case malformed
        /// Proxy-Require named an extension we do not support (answered 420).
        case badExtension
        /// Failed the script's sanity_check() (answered by it).
        case sanity
        /// A REGISTER beyond the registrar queue's backlog (answered 503).
        case registrarBacklog

        var label: String {
            switch self {
            case .malformed: return "malformed"
            case .badExtension: return "bad_extension"
            case .sanity: return "sanity"
            case .registrarBacklog: return "registrar_backlog"
            }
        }
    }

    /// Why a reply was not sent on.
    public enum ReplyDrop: Int, CaseIterable, Sendable {
        case malformed, viaNotOurs, tooManyVias, noTransaction, script, broadcast, loop

        var label: String {
            switch self {
            case .malformed: return "malformed"
            case .viaNotOurs: return "via_not_ours"
            case .tooManyVias: return "too_many_vias"
            case .noTransaction: return "no_transaction"
            case .script: return "script"
            case .broadcast: return "broadcast"
            case .loop: return "loop"
            }
        }
    }

    /// A fault of the route script met at run time: the script goes on
    /// (or stops) as `docs/configuration.md` says, the fault is counted as
    /// `swiftser_script_faults_total{reason}` and logged the first time.
    public enum ScriptFault: Int, CaseIterable, Sendable {
        /// A `while` loop ran `max_while_loops` iterations and was stopped.
        case whileLoopLimit
        /// One message ran more than `ProxyCore.maxSteps` statements.
        case stepLimit
        /// route() calls nested deeper than `ProxyCore.maxDepth`.
        case depthLimit
        /// A regular expression made at run time (from a variable) did not compile.
        case invalidRegex
        /// `/` or `%` by zero (the result is 0).
        case divisionByZero
        /// `Int.min / -1` or `Int.min % -1` (the result wraps).
        case overflow

        var label: String {
            switch self {
            case .whileLoopLimit: return "max_while_loops"
            case .stepLimit: return "max_steps"
            case .depthLimit: return "max_depth"
            case .invalidRegex: return "invalid_regex"
            case .divisionByZero: return "division_by_zero"
            case .overflow: return "overflow"
            }
        }
    }

    static let methodNames = ["INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS", "INFO", "PRACK",
                              "SUBSCRIBE", "NOTIFY", "UPDATE", "MESSAGE", "REFER", "PUBLISH", "other"]
    static let classNames = ["1xx", "2xx", "3xx", "4xx", "5xx", "6xx"]
    /// Labels of `auth_results` (AuthResult other than `noCredentials`).
    static let authOutcomes: [(AuthResult, String)] = [
        (.ok, "ok"), (.invalidPassword, "invalid_password"), (.userUnknown, "user_unknown"), (.staleNonce, "stale_nonce"),
        (.nonceReused, "nonce_reused"), (.userMismatch, "user_mismatch"), (.drop, "malformed"), (.error, "error"),
    ]

    public init() {
        let registry = PrometheusCollectorRegistry()
        self.registry = registry
        let f = PrometheusMetricsFactory(registry: registry)
        func counter(_ name: String, _ dims: [(String, String)] = []) -> CoreMetrics.Counter {
            CoreMetrics.Counter(label: name, dimensions: dims, factory: f)
        }
        func gauge(_ name: String, _ dims: [(String, String)] = []) -> CoreMetrics.Gauge {
            CoreMetrics.Gauge(label: name, dimensions: dims, factory: f)
        }
        rcvRequests = Self.methodNames.map { counter("swiftser_rcv_requests_total", [("method", $0)]) }
        rcvReplies = Self.classNames.map { counter("swiftser_rcv_replies_total", [("class", $0)]) }
        fwdRequests = counter("swiftser_fwd_requests_total")
        fwdReplies = Self.classNames.map { counter("swiftser_fwd_replies_total", [("class", $0)]) }
        sentReplies = Self.classNames.map { counter("swiftser_sent_replies_total", [("class", $0)]) }
        dropRequests = RequestDrop.allCases.map { counter("swiftser_drop_requests_total", [("reason", $0.label)]) }
        dropReplies = ReplyDrop.allCases.map { counter("swiftser_drop_replies_total", [("reason", $0.label)]) }
        authChallenges = counter("swiftser_auth_challenges_total")
        authResults = Self.authOutcomes.map { counter("swiftser_auth_results_total", [("result", $0.1)]) }
        pikeBlocked = counter("swiftser_pike_blocked_total")
        refusedTransactions = TransactionLimits.Refusal.allCases.map { counter("swiftser_tm_refused_transactions_total", [("limit", $0.parameter)]) }
        scriptFaults = ScriptFault.allCases.map { counter("swiftser_script_faults_total", [("reason", $0.label)]) }
        scriptFaultLogged = ScriptFault.allCases.map { _ in ManagedAtomic(false) }

        activeTransactions = gauge("swiftser_active_transactions")
        registeredUsers = gauge("swiftser_registered_users")
        locationContacts = gauge("swiftser_location_contacts")
        openConnections = ["tcp", "tls"].map { gauge("swiftser_tcp_current_opened_connections", [("transport", $0)]) }
        tlsHandshakesInProgress = gauge("swiftser_tls_handshakes_in_progress")
        queuedBytes = gauge("swiftser_tcp_queued_bytes")
        peakQueuedBytes = gauge("swiftser_tcp_queued_bytes_peak")
        peakConnectionQueue = gauge("swiftser_tcp_connection_queued_bytes_peak")
        // The transport keeps its own (locked, rare-path) counters: these
        // mirror them at scrape time, straight in the registry.
        func mirror(_ name: String, _ labels: [(String, String)] = []) -> Prometheus.Counter {
            registry.makeCounter(name: name, labels: labels)
        }
        transportMirrors = Self.transportNames.map { mirror($0.0, $0.1) }
        dnsMirrors = Self.dnsNames.map { mirror($0.0, $0.1) }
        dnsPending = gauge("swiftser_dns_pending")
        dnsCacheEntries = gauge("swiftser_dns_cache_entries")
    }

    // MARK: Per message

    static func methodIndex(_ m: SIPMethod?) -> Int {
        switch m {
        case .invite?: return 0
        case .ack?: return 1
        case .bye?: return 2
        case .cancel?: return 3
        case .register?: return 4
        case .options?: return 5
        case .info?: return 6
        case .prack?: return 7
        case .subscribe?: return 8
        case .notify?: return 9
        case .update?: return 10
        case .message?: return 11
        case .refer?: return 12
        case .publish?: return 13
        case .other?, nil: return 14
        }
    }

    /// 1xx → 0 … 6xx → 5 (a status outside 100–699 counts with the nearest class).
    static func classIndex(_ status: Int) -> Int { min(5, max(0, status / 100 - 1)) }

    @inline(__always) func receivedRequest(_ m: SIPMethod?) { rcvRequests[Self.methodIndex(m)].increment() }
    @inline(__always) func receivedReply(_ status: Int) { rcvReplies[Self.classIndex(status)].increment() }
    @inline(__always) func forwardedRequest() { fwdRequests.increment() }
    @inline(__always) func forwardedReply(_ status: Int) { fwdReplies[Self.classIndex(status)].increment() }
    @inline(__always) func sentReply(_ status: Int) { sentReplies[Self.classIndex(status)].increment() }
    func droppedRequest(_ r: RequestDrop) { dropRequests[r.rawValue].increment() }
    func droppedReply(_ r: ReplyDrop) { dropReplies[r.rawValue].increment() }
    func authChallenged() { authChallenges.increment() }
    func authenticated(_ r: AuthResult) {
        if let i = Self.authOutcomes.firstIndex(where: { $0.0 == r }) { authResults[i].increment() }
    }
    func pikeBlockedRequest() { pikeBlocked.increment() }
    func refusedTransaction(_ r: TransactionLimits.Refusal) { refusedTransactions[r.rawValue].increment() }
    /// Counts a script fault; true the first time this kind is met (log it then).
    func scriptFault(_ f: ScriptFault) -> Bool {
        scriptFaults[f.rawValue].increment()
        return !scriptFaultLogged[f.rawValue].exchange(true, ordering: .relaxed)
    }

    // MARK: Health

    /// True once a drain (or anything else) has said this proxy should get
    /// no new work: `/ready` answers 503 from then on. Lock-free.
    public var isDraining: Bool {
        get { draining.load(ordering: .relaxed) }
        set { draining.store(newValue, ordering: .relaxed) }
    }

    // MARK: Scrape

    /// Reads the gauges' sources and writes every metric in the
    /// Prometheus text format (version 0.0.4).
    func render(core: ProxyCore) -> [UInt8] {
        scrapeLock.withLock { renderLocked(core: core) }
    }

    private func renderLocked(core: ProxyCore) -> [UInt8] {
        activeTransactions.record(core.transactions.activeCount)
        let loc = core.location.counts()
        registeredUsers.record(loc.users)
        locationContacts.record(loc.contacts)
        let t = core.transport
        openConnections[0].record(t.connectionCount(.tcp))
        openConnections[1].record(t.connectionCount(.tls))
        tlsHandshakesInProgress.record(t.handshakesInProgress)
        let v = t.counters.values
        queuedBytes.record(v.queuedBytes)
        peakQueuedBytes.record(v.peakQueuedBytes)
        peakConnectionQueue.record(v.peakConnectionQueue)
        for (c, n) in zip(transportMirrors, Self.transportValues(v)) {
            c.reset()
            c.increment(by: Int64(max(0, n)))
        }
        let d = t.dns.counters
        dnsPending.record(d.pending)
        dnsCacheEntries.record(d.cacheEntries)
        for (c, n) in zip(dnsMirrors, Self.dnsValues(d)) {
            c.reset()
            c.increment(by: Int64(max(0, n)))
        }
        var out = registry.emitToBuffer()
        finalResponseLatency.emit(into: &out)
        return out
    }
}

/// A Prometheus histogram with fixed millisecond bounds kept in atomics, so
/// that recording takes no lock (swift-prometheus' histograms lock).
final class LatencyHistogram: Sendable {
    let name: String
    let boundsMs: [Int64]
    /// One per bound plus +Inf; not cumulative (summed when emitted).
    private let buckets: [ManagedAtomic<Int64>]
    private let sumMs = ManagedAtomic<Int64>(0)

    init(name: String, boundsMs: [Int64]) {
        self.name = name
        self.boundsMs = boundsMs
        self.buckets = (0...boundsMs.count).map { _ in ManagedAtomic<Int64>(0) }
    }

    func record(ms: Int64) {
        let v = max(0, ms)
        var i = 0
        while i < boundsMs.count && v > boundsMs[i] { i += 1 }
        buckets[i].wrappingIncrement(ordering: .relaxed)
        sumMs.wrappingIncrement(by: v, ordering: .relaxed)
    }

    func emit(into out: inout [UInt8]) {
        out.append(contentsOf: "# TYPE \(name) histogram\n".utf8)
        var total: Int64 = 0
        for (i, b) in buckets.enumerated() {
            total &+= b.load(ordering: .relaxed)
            let le = i < boundsMs.count ? Self.seconds(boundsMs[i]) : "+Inf"
            out.append(contentsOf: "\(name)_bucket{le=\"\(le)\"} \(total)\n".utf8)
        }
        out.append(contentsOf: "\(name)_sum \(Self.seconds(sumMs.load(ordering: .relaxed)))\n".utf8)
        out.append(contentsOf: "\(name)_count \(total)\n".utf8)
    }

    /// Milliseconds as seconds in plain decimal ("0.005", "2.5", "30").
    static func seconds(_ ms: Int64) -> String {
        let whole = ms / 1000, frac = ms % 1000
        if frac == 0 { return "\(whole)" }
        var f = String(frac)
        while f.count < 3 { f = "0" + f }
        while f.hasSuffix("0") { f.removeLast() }
        return "\(whole).\(f)"
    }
}
