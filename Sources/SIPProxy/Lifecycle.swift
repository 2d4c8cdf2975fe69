import Logging
import ServiceLifecycle
import UnixSignals

// The proxy's parts as swift-service-lifecycle services. The command line
// binds and starts everything itself (so a port in use is exit status 1
// before anything runs), then runs these in one `ServiceGroup` whose
// graceful-shutdown signals are SIGTERM and SIGINT. The group shuts its
// services down one at a time in reverse order, so with the order
// [ReloadSignalService, ControlServer, HTTPStatusServer, ProxyService] the
// proxy drains first while the control socket, `/ready` (503 from the
// drain's start) and the reload signals still answer.

/// The SIP proxy while it runs: expired registrations are purged once a
/// minute; on graceful shutdown it drains (`ProxyCore.beginDrain`, then
/// waits for the transactions in progress, at most `shutdown_timeout`) and
/// closes every listener and connection (TLS with close_notify). A further
/// stop signal during the drain, or the task's cancellation, stops it at
/// once. The location database is the caller's to close afterwards (the
/// control socket may still read it until its own service stops).
public struct ProxyService: Service {
    /// How the drain ended.
    enum DrainEnd: Sendable, Equatable {
        /// No transaction was left.
        case finished
        /// `shutdown_timeout` passed with this many transactions in progress.
        case timedOut(remaining: Int)
        /// A further stop signal arrived during the drain.
        case stopSignal
        /// The task was cancelled (the group is stopping at once).
        case cancelled
    }

    /// How often expired registrations are removed.
    static let purgeInterval: Duration = .seconds(60)
    /// How often the drain looks at the number of transactions in progress.
    static let drainPollInterval: Duration = .milliseconds(50)

    let core: ProxyCore
    let logger: Logger
    let stopAtOnceSignals: [UnixSignal]

    /// `stopAtOnceSignals`: signals that end a drain at once (the group's
    /// graceful-shutdown signals, so that a second SIGTERM stops). They are
    /// trapped only once graceful shutdown has begun, so the signal that
    /// began it does not count.
    public init(core: ProxyCore, logger: Logger, stopAtOnceSignals: [UnixSignal] = [.sigterm, .sigint]) {
        self.core = core
        self.logger = logger
        self.stopAtOnceSignals = stopAtOnceSignals
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown { [core, logger] in
            await Self.purgeExpiredRegistrations(core.location, logger: logger)
        }
        let end: DrainEnd = Task.isCancelled ? .cancelled : await drain()
        stop(after: end)
    }

    /// Removes expired registrations every `purgeInterval` until the task is cancelled.
    static func purgeExpiredRegistrations(_ location: LocationService, logger: Logger) async {
        while true {
            do { try await Task.sleep(for: purgeInterval) } catch { return }
            let n = location.purgeExpired()
            if n > 0 { logger.info("purged \(n) expired registration\(n == 1 ? "" : "s")") }
        }
    }

    /// Begins the drain and waits until no transaction is left, or
    /// `shutdown_timeout` passes, or a further stop signal arrives.
    func drain() async -> DrainEnd {
        // Trapped before the drain shows (503, /ready): a signal sent once
        // it shows is counted; the one that began the drain was delivered
        // before and is not.
        let signals = stopAtOnceSignals.isEmpty ? nil : await UnixSignalsSequence(trapping: stopAtOnceSignals)
        core.beginDrain()
        let timeout = core.config.core.shutdownTimeout
        logger.notice("draining: \(core.activeTransactions) transaction(s) in progress; up to \(timeout) s (shutdown_timeout)")
        return await withTaskGroup(of: DrainEnd?.self) { group in
            group.addTask { [core] in await Self.waitForTransactions(core, timeout: .seconds(timeout)) }
            if let signals {
                group.addTask {
                    for await _ in signals { return .stopSignal }
                    return nil // cancelled: the other child has the answer
                }
            }
            var end = DrainEnd.cancelled
            while let next = await group.next() {
                if let next {
                    end = next
                    break
                }
            }
            group.cancelAll()
            return end
        }
    }

    /// Waits until `core` has no transaction in progress or `timeout` passes.
    static func waitForTransactions(_ core: ProxyCore, timeout: Duration) async -> DrainEnd {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while core.activeTransactions > 0 {
            let now = clock.now
            if now >= deadline { return .timedOut(remaining: core.activeTransactions) }
            do {
                try await Task.sleep(until: min(deadline, now + drainPollInterval), clock: clock)
            } catch {
                return .cancelled
            }
        }
        return .finished
    }

    /// Closes every listener and connection; after a drain that ran its
    /// course, waits (at most `SIPTransport.closeWait`) for the connections
    /// to close so that TLS ones end with close_notify.
    func stop(after end: DrainEnd) {
        let waitForClose: Bool
        switch end {
        case .finished:
            waitForClose = true
        case .timedOut(let n):
            logger.warning("shutdown_timeout reached with \(n) transaction(s) in progress")
            waitForClose = true
        case .stopSignal:
            logger.notice("second stop signal: stopping at once")
            waitForClose = false
        case .cancelled:
            logger.notice("cancelled: stopping at once")
            waitForClose = false
        }
        logger.notice("stopping")
        core.transport.shutdown(waitForClose: waitForClose)
    }
}

/// SIGHUP reloads the TLS files (as `tls.reload`), SIGUSR1 the route script
/// (as `cfg.reload`; a script that fails the checks leaves the running one
/// and its errors go to the log). Runs until graceful shutdown reaches it.
public struct ReloadSignalService: Service {
    let control: ControlServer

    public init(control: ControlServer) {
        self.control = control
    }

    public func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup, .sigusr1)
        await cancelWhenGracefulShutdown { [control] in
            for await signal in signals {
                if signal == .sighup {
                    _ = control.reloadTLS()
                } else if signal == .sigusr1 {
                    _ = control.core.reloadScript()
                }
            }
        }
    }
}

/// The control socket serves from `start(group:)` until graceful shutdown
/// (or cancellation), then closes and its file is removed.
extension ControlServer: Service {
    public func run() async throws {
        try? await gracefulShutdown()
        stop()
    }
}

/// The `http_listen` listener serves from `start(group:)` until graceful
/// shutdown (or cancellation), then closes.
extension HTTPStatusServer: Service {
    public func run() async throws {
        try? await gracefulShutdown()
        stop()
    }
}
