import CAres
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SIPConfig

#if canImport(Glibc)
import Glibc
#endif

/// Errors of a DNS look-up.
public enum DNSError: Error, Sendable, CustomStringConvertible {
    case timeout(String)
    case malformed(String)
    /// `dns_max_pending` look-ups are in progress: this one was not started.
    case overloaded(String)
    /// The resolver failed for another reason (c-ares status code).
    case failed(String, Int32)

    public var description: String {
        switch self {
        case .timeout(let n): return "no answer from the DNS servers for \(n)"
        case .malformed(let n): return "malformed DNS answer for \(n)"
        case .overloaded(let n): return "DNS look-up of \(n) refused: dns_max_pending look-ups in progress"
        case .failed(let n, let status): return "DNS look-up of \(n) failed (c-ares status \(status))"
        }
    }
}

/// What the DNS client was told by the config.
public struct DNSSettings: Sendable, Equatable {
    /// `dns_server` (IP[:port]); nil: every `nameserver` of /etc/resolv.conf.
    public var server: DNSServerAddress?
    /// `dns_max_pending`.
    public var maxPending = 1024
    /// `dns_cache_max_entries`.
    public var maxCacheEntries = 10_000
    /// `dns_use_search_list`: `search` domains of /etc/resolv.conf, by its `ndots`.
    public var useSearchList = true
    /// Milliseconds before a query is sent again (to the next server), and
    /// how often each server is tried.
    public var timeoutMs: Int32 = 1000
    public var tries: Int32 = 2

    public init() {}

    public init(_ core: CoreSettings) {
        server = core.dnsServer.flatMap { DNSServerAddress($0) }
        maxPending = max(1, core.dnsMaxPending)
        maxCacheEntries = max(1, core.dnsCacheMaxEntries)
        useSearchList = core.dnsUseSearchList
    }
}

/// What the DNS client did since it was made (`/metrics`).
public struct DNSCounterValues: Sendable, Equatable {
    /// Look-ups sent to the resolver (not answered from the cache).
    public var queries = 0
    /// Look-ups answered from the cache.
    public var cacheHits = 0
    /// Look-ups no server answered in time.
    public var timeouts = 0
    /// Look-ups that failed otherwise (server failure or refusal, a bad name, a malformed answer).
    public var errors = 0
    /// Look-ups refused because `dns_max_pending` were in progress.
    public var refused = 0
    /// Cache entries dropped before their expiry because the cache was full.
    public var evictions = 0
    /// Look-ups in progress now.
    public var pending = 0
    /// Answers in the cache now.
    public var cacheEntries = 0
}

/// DNS look-ups for RFC 3263 (NAPTR, SRV, A, AAAA) through c-ares, the
/// maintained asynchronous resolver: every query has a random ID and its
/// own channel, so its own UDP socket with a random source port, connected
/// to the server it asks (datagrams from anyone else never reach it); an
/// answer is taken only when its ID and question are the query's; a
/// truncated answer is asked again over TCP; every `nameserver` of
/// /etc/resolv.conf is tried in turn (or `dns_server`), and names are
/// tried with its `search` domains as its `ndots` says.
///
/// Answers are cached for their TTL (at most an hour; "no such name", no
/// records, and no usable answer at all for 30 s), at most
/// `dns_cache_max_entries` of them, expired ones swept every 30 s and when
/// the cache is full. At most `dns_max_pending` look-ups are in progress
/// at once (several asking the same question share one); more fail at once
/// with `DNSError.overloaded`.
public final class DNSClient: @unchecked Sendable { // mutable state (cache, in-flight questions, counters) is guarded by `lock`
    public let settings: DNSSettings
    private let group: EventLoopGroup
    private let lock = NIOLock()
    private var cache: [String: (answer: DNSAnswer, expires: NIODeadline)] = [:]
    /// Questions being asked, each with everyone waiting for its answer.
    private var inFlight: [String: [EventLoopPromise<DNSAnswer>]] = [:]
    private var counterValues = DNSCounterValues()
    /// System resolver (getaddrinfo) look-ups running on the thread pool.
    private var systemPending = 0
    private var sweeper: RepeatedTask?
    private var engine: AresEngine?
    /// When the cache was last swept because it was full.
    private var lastFullSweep = NIODeadline.uptimeNanoseconds(0)

    public init(settings: DNSSettings, group: EventLoopGroup) {
        self.settings = settings
        self.group = group
    }

    /// The counters and gauges of this client.
    public var counters: DNSCounterValues {
        lock.withLock {
            var v = counterValues
            v.pending = inFlight.count + systemPending
            v.cacheEntries = cache.count
            return v
        }
    }

    /// The address of `host` from the system resolver (`getaddrinfo`, which
    /// reads /etc/hosts), on SwiftNIO's thread pool: counted with the c-ares
    /// queries and under the same `dns_max_pending` bound, so a flood of
    /// requests for unknown names cannot queue without limit on the pool.
    public func systemAddress(of host: String, port: Int, on loop: EventLoop) -> EventLoopFuture<SocketAddress> {
        let admitted: Bool = lock.withLock {
            guard inFlight.count + systemPending < settings.maxPending else {
                counterValues.refused += 1
                return false
            }
            systemPending += 1
            counterValues.queries += 1
            return true
        }
        guard admitted else { return loop.makeFailedFuture(DNSError.overloaded(host)) }
        return NIOThreadPool.singleton.runIfActive(eventLoop: loop) {
            try SocketAddress.makeAddressResolvingHost(host, port: port)
        }.always { [weak self] result in
            guard let self else { return }
            self.lock.withLock {
                self.systemPending -= 1
                if case .failure = result { self.counterValues.errors += 1 }
            }
        }
    }

    /// Looks `name` up (from the cache when fresh).
    public func lookup(_ name: String, _ type: DNSRecordType) -> EventLoopFuture<DNSAnswer> {
        let loop = group.next()
        let key = "\(type.rawValue)|\(name.lowercased())"
        let now = NIODeadline.now()
        enum Step { case hit(DNSAnswer), wait, ask, refuse }
        let promise = loop.makePromise(of: DNSAnswer.self)
        let step: Step = lock.withLock {
            if let hit = cache[key], hit.expires > now {
                counterValues.cacheHits += 1
                return .hit(hit.answer)
            }
            if inFlight[key] != nil {
                inFlight[key]?.append(promise)
                return .wait
            }
            if inFlight.count >= settings.maxPending {
                counterValues.refused += 1
                return .refuse
            }
            inFlight[key] = [promise]
            counterValues.queries += 1
            return .ask
        }
        switch step {
        case .hit(let a): promise.succeed(a)
        case .wait: break
        case .refuse: promise.fail(DNSError.overloaded(name))
        case .ask:
            startSweeperIfNeeded()
            engineOrStart().submit(name: name, type: type, search: settings.useSearchList) { [weak self] result in
                self?.answered(key, name, result)
            }
        }
        return promise.futureResult
    }

    /// The resolver's outcome for a question: cached, and given to everyone waiting.
    private func answered(_ key: String, _ name: String, _ result: Result<DNSAnswer, DNSError>) {
        let answer: DNSAnswer
        let seconds: Int64
        switch result {
        case .success(let a):
            answer = a
            let empty = a.responseCode != 0 || (a.srv.isEmpty && a.addresses.isEmpty && a.naptr.isEmpty)
            seconds = empty ? 30 : max(1, min(Int64(a.ttl), 3600))
        case .failure(let e):
            // No usable answer: the name counts as empty (SERVFAIL) for 30 s,
            // so servers that fail are not asked again for every request.
            answer = DNSAnswer(id: 0, responseCode: 2)
            seconds = 30
            lock.withLock {
                if case .timeout = e { counterValues.timeouts += 1 } else { counterValues.errors += 1 }
            }
        }
        let waiting: [EventLoopPromise<DNSAnswer>] = lock.withLock {
            store(key, answer, expires: .now() + .seconds(seconds))
            return inFlight.removeValue(forKey: key) ?? []
        }
        for p in waiting { p.succeed(answer) }
    }

    /// Puts an answer in the cache (call with `lock` held). When it is
    /// full: expired entries go first (at most one such sweep a second);
    /// if none have expired, an eighth of the cache is dropped.
    private func store(_ key: String, _ answer: DNSAnswer, expires: NIODeadline) {
        if cache[key] == nil && cache.count >= settings.maxCacheEntries {
            let now = NIODeadline.now()
            if now - lastFullSweep >= .seconds(1) {
                lastFullSweep = now
                cache = cache.filter { $0.value.expires > now }
            }
            if cache.count >= settings.maxCacheEntries {
                let drop = max(1, settings.maxCacheEntries / 8)
                for k in Array(cache.keys.prefix(drop)) { cache.removeValue(forKey: k) }
                counterValues.evictions += drop
            }
        }
        cache[key] = (answer, expires)
    }

    /// Removes expired answers.
    public func sweep() {
        let now = NIODeadline.now()
        lock.withLock { cache = cache.filter { $0.value.expires > now } }
    }

    private func startSweeperIfNeeded() {
        let start = lock.withLock { sweeper == nil }
        guard start else { return }
        let task = group.next().scheduleRepeatedTask(initialDelay: .seconds(30), delay: .seconds(30)) { [weak self] _ in self?.sweep() }
        let extra: RepeatedTask? = lock.withLock {
            if sweeper == nil { sweeper = task; return nil }
            return task
        }
        extra?.cancel()
    }

    private func engineOrStart() -> AresEngine {
        lock.withLock {
            if let engine { return engine }
            let e = AresEngine(settings: settings)
            engine = e
            return e
        }
    }

    /// The cached answer for `name`, when one is still fresh.
    public func cached(_ name: String, _ type: DNSRecordType) -> DNSAnswer? {
        let key = "\(type.rawValue)|\(name.lowercased())"
        return lock.withLock {
            guard let hit = cache[key], hit.expires > .now() else { return nil }
            return hit.answer
        }
    }

    /// Addresses of `name`: A records, else AAAA.
    public func addresses(of name: String) -> EventLoopFuture<[String]> {
        lookup(name, .a).flatMap { a in
            if !a.addresses.isEmpty { return self.group.next().makeSucceededFuture(a.addresses) }
            return self.lookup(name, .aaaa).map(\.addresses)
        }
    }

    /// Stops the resolver thread; look-ups in progress fail.
    public func close() {
        let (e, s) = lock.withLock { () -> (AresEngine?, RepeatedTask?) in
            defer { engine = nil; sweeper = nil }
            return (engine, sweeper)
        }
        s?.cancel()
        e?.stop()
    }

    deinit {
        sweeper?.cancel()
        engine?.stop()
    }
}

// MARK: - c-ares

/// c-ares' global state, set up once per process.
private let aresLibraryReady: Bool = ares_library_init(ARES_LIB_INIT_ALL) == ARES_SUCCESS

/// One question asked through its own c-ares channel.
private final class AresQuery {
    let name: String
    let type: DNSRecordType
    let search: Bool
    let done: (Result<DNSAnswer, DNSError>) -> Void
    var channel: ares_channel?
    var finished = false

    init(name: String, type: DNSRecordType, search: Bool, done: @escaping (Result<DNSAnswer, DNSError>) -> Void) {
        self.name = name
        self.type = type
        self.search = search
        self.done = done
    }

    /// c-ares' outcome: the answer's octets go through `DNSMessage.parse`.
    func complete(status: Int32, answer: [UInt8]) {
        guard !finished else { return }
        finished = true
        let result: Result<DNSAnswer, DNSError>
        switch status {
        case ARES_SUCCESS, ARES_ENODATA:
            if let a = try? DNSMessage.parse(answer) {
                result = .success(a)
            } else if status == ARES_ENODATA {
                result = .success(DNSAnswer(id: 0, responseCode: 0))
            } else {
                result = .failure(.malformed(name))
            }
        case ARES_ENOTFOUND:
            result = .success(DNSAnswer(id: 0, responseCode: 3))
        case ARES_ETIMEOUT:
            result = .failure(.timeout(name))
        default:
            result = .failure(.failed(name, status))
        }
        done(result)
    }
}

/// The callback c-ares calls when a query ends (on the engine's thread,
/// from inside `ares_process_fd`, `ares_search` or `ares_destroy`).
private let aresCallback: ares_callback = { arg, status, _, abuf, alen in
    guard let arg else { return }
    let q = Unmanaged<AresQuery>.fromOpaque(arg).takeUnretainedValue()
    let bytes = abuf.map { Array(UnsafeBufferPointer(start: $0, count: Int(max(0, alen)))) } ?? []
    q.complete(status: status, answer: bytes)
}

/// The thread that drives every c-ares channel: it polls their sockets
/// and an eventfd that new questions wake it with.
private final class AresEngine: @unchecked Sendable { // `queue` and `stopping` are guarded by `lock`; everything else is used only on the engine's thread
    let settings: DNSSettings
    private let lock = NIOLock()
    private var queue: [AresQuery] = []
    private var stopping = false
    private let wake: Int32
    /// Queries with a channel (engine thread only).
    private var active: [AresQuery] = []
    /// `dns_server` as c-ares' "host:port" list.
    private let serverCSV: String?

    init(settings: DNSSettings) {
        self.settings = settings
        self.wake = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        self.serverCSV = settings.server.map { s in s.host.contains(":") ? "[\(s.host)]:\(s.port)" : "\(s.host):\(s.port)" }
        let thread = Thread { [self] in self.run() }
        thread.name = "swiftser-dns"
        thread.start()
    }

    func submit(name: String, type: DNSRecordType, search: Bool, done: @escaping (Result<DNSAnswer, DNSError>) -> Void) {
        let q = AresQuery(name: name, type: type, search: search, done: done)
        let refused = lock.withLock { () -> Bool in
            if stopping { return true }
            queue.append(q)
            return false
        }
        if refused { return done(.failure(.failed(name, ARES_EDESTRUCTION))) }
        var one: UInt64 = 1
        _ = Glibc.write(wake, &one, 8)
    }

    func stop() {
        lock.withLock { stopping = true }
        var one: UInt64 = 1
        _ = Glibc.write(wake, &one, 8)
    }

    // Closed only here: a `submit` racing with `stop` may still write to it.
    deinit { Glibc.close(wake) }

    /// A channel for one query: the options of the config, the servers of
    /// `dns_server` or of /etc/resolv.conf.
    private func start(_ q: AresQuery) {
        guard aresLibraryReady else { return q.complete(status: ARES_ENOTINITIALIZED, answer: []) }
        var opts = ares_options()
        opts.timeout = settings.timeoutMs
        opts.tries = settings.tries
        opts.flags = 0
        var channel: ares_channel?
        let mask = ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_FLAGS
        var status = ares_init_options(&channel, &opts, mask)
        if status == ARES_SUCCESS, let csv = serverCSV { status = ares_set_servers_ports_csv(channel, csv) }
        guard status == ARES_SUCCESS, let channel else {
            if let channel { ares_destroy(channel) }
            return q.complete(status: status, answer: [])
        }
        q.channel = channel
        active.append(q)
        let arg = Unmanaged.passUnretained(q).toOpaque()
        let type = Int32(q.type.rawValue)
        // ns_c_in: the Internet class.
        if q.search {
            ares_search(channel, q.name, 1, type, aresCallback, arg)
        } else {
            ares_query(channel, q.name, 1, type, aresCallback, arg)
        }
    }

    private func run() {
        var pollSet: [pollfd] = []
        var owners: [Int] = []
        var socks = [ares_socket_t](repeating: -1, count: Int(ARES_GETSOCK_MAXNUM))
        while true {
            let (fresh, stop) = lock.withLock { () -> ([AresQuery], Bool) in
                defer { queue.removeAll() }
                return (queue, stopping)
            }
            if stop {
                // Every query still open ends (ARES_EDESTRUCTION) with its channel.
                for q in active { if let c = q.channel { ares_destroy(c) } }
                for q in active + fresh { q.complete(status: ARES_EDESTRUCTION, answer: []) }
                active.removeAll()
                return
            }
            for q in fresh { start(q) }
            reap()
            pollSet.removeAll(keepingCapacity: true)
            owners.removeAll(keepingCapacity: true)
            pollSet.append(pollfd(fd: wake, events: Int16(POLLIN), revents: 0))
            var timeoutMs = 1000
            for (i, q) in active.enumerated() {
                guard let c = q.channel else { continue }
                let bits = ares_getsock(c, &socks, ARES_GETSOCK_MAXNUM)
                for n in 0..<Int(ARES_GETSOCK_MAXNUM) {
                    let readable = bits & (1 << n) != 0
                    let writable = bits & (1 << (n + Int(ARES_GETSOCK_MAXNUM))) != 0
                    guard readable || writable else { continue }
                    pollSet.append(pollfd(fd: socks[n], events: Int16((readable ? POLLIN : 0) | (writable ? POLLOUT : 0)), revents: 0))
                    owners.append(i)
                }
                var most = timeval(tv_sec: 1, tv_usec: 0)
                var next = timeval()
                if let t = ares_timeout(c, &most, &next) {
                    timeoutMs = min(timeoutMs, Int(t.pointee.tv_sec) * 1000 + Int(t.pointee.tv_usec) / 1000)
                }
            }
            // Nothing in progress: sleep until a question comes.
            if active.isEmpty { timeoutMs = -1 }
            _ = poll(&pollSet, nfds_t(pollSet.count), Int32(max(-1, timeoutMs)))
            if pollSet[0].revents != 0 {
                var n: UInt64 = 0
                _ = Glibc.read(wake, &n, 8)
            }
            for k in pollSet.indices.dropFirst() where pollSet[k].revents != 0 {
                let q = active[owners[k - 1]]
                guard !q.finished, let c = q.channel else { continue }
                let r = pollSet[k].revents
                let fd = pollSet[k].fd
                let readFD = r & Int16(POLLIN | POLLERR | POLLHUP) != 0 ? fd : -1
                let writeFD = r & Int16(POLLOUT) != 0 ? fd : -1
                ares_process_fd(c, readFD, writeFD)
            }
            // Timeouts: c-ares sends again to the next server, or ends the query.
            for q in active where !q.finished {
                if let c = q.channel { ares_process_fd(c, -1, -1) }
            }
            reap()
        }
    }

    /// Channels whose query has ended are destroyed.
    private func reap() {
        guard active.contains(where: { $0.finished }) else { return }
        var keep: [AresQuery] = []
        for q in active {
            if q.finished {
                if let c = q.channel { ares_destroy(c) }
                q.channel = nil
            } else {
                keep.append(q)
            }
        }
        active = keep
    }
}
