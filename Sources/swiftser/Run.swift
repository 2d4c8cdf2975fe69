import ArgumentParser
import Dispatch
import Foundation
import Logging
import NIOCore
import NIOPosix
import SIPConfig
import SIPProxy
import SIPTLS
import SIPTransport
import ServiceLifecycle
import UnixSignals

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the proxy (the default command).")

    @OptionGroup var options: ConfigOptions

    @Flag(name: .customShort("c"), help: "Check the config (as `swiftser check`) and exit: 0 when it is usable, 1 when not (Kamailio's -c).")
    var checkOnly = false

    @Flag(name: .customShort("E"), help: "Log to standard error whatever log_stderror says (Kamailio's -E).")
    var logToStandardError = false

    @Option(name: .customShort("P"), help: ArgumentHelp("Write the process id to this file at start and remove it at exit (Kamailio's -P; overrides pid_file).", valueName: "pidfile"))
    var pidFile: String?

    @Option(name: .customShort("u"), help: ArgumentHelp("After binding the listening sockets, run as this user (a name or a number; Kamailio's -u). A name brings its groups unless -g is given.", valueName: "user"))
    var runUser: String?

    @Option(name: .customShort("g"), help: ArgumentHelp("After binding the listening sockets, run with this group (a name or a number; Kamailio's -g).", valueName: "group"))
    var runGroup: String?

    func run() throws {
        if checkOnly {
            try Check.report(options)
            return
        }
        // The stop and reload signals are blocked in this thread before any
        // other thread exists (threads inherit the mask): one sent during
        // start-up stays pending until the services' handlers read it (on
        // Linux through a signalfd, which wants them blocked), instead of
        // being lost or killing the process half started.
        var handled = sigset_t()
        sigemptyset(&handled)
        for sig in [SIGTERM, SIGINT, SIGHUP, SIGUSR1] { sigaddset(&handled, sig) }
        pthread_sigmask(SIG_BLOCK, &handled, nil)
        signal(SIGPIPE, SIG_IGN)
        let dropTo: Privileges.Target?
        switch Privileges.resolve(user: runUser, group: runGroup) {
        case .success(let t): dropTo = t
        case .failure(let e):
            FileHandle.standardError.write(Data("swiftser: \(e)\n".utf8))
            throw ExitCode(64)
        }
        let config = Startup.loadConfig(options)
        let runtimeLevel = RuntimeLogLevel(config.core.logLevel)
        // log_stderror (or -E): standard error, else syslog; log_format: text or JSON lines.
        let core0 = config.core
        if logToStandardError || core0.logStderror {
            if core0.logFormat == .json {
                LoggingSystem.bootstrap { label in RuntimeLevelLogHandler(JSONLinesLogHandler(label: label), runtime: runtimeLevel) }
            } else {
                LoggingSystem.bootstrap { label in
                    RuntimeLevelLogHandler(StreamLogHandler.standardError(label: label), runtime: runtimeLevel)
                }
            }
        } else {
            let sink = SyslogSocket(path: core0.syslogSocket, facility: core0.logFacility, name: core0.logName)
            LoggingSystem.bootstrap { label in
                RuntimeLevelLogHandler(SyslogLogHandler(label: label, format: core0.logFormat, sink: sink), runtime: runtimeLevel)
            }
        }
        let logger = Logger(label: "swiftser")
        for w in config.warnings { logger.warning("\(w.description)") }
        do {
            try Startup.makeDevelopmentCertificates(config, logger: logger)
        } catch {
            logger.error("cannot create development certificates: \(error)")
            throw ExitCode(1)
        }
        let tls = Startup.buildTLS(config)
        if let tls {
            for w in tls.warnings { logger.warning("\(w)") }
            for d in tls.servers + tls.clients {
                logger.info("TLS domain \(d.domain.name): \(d.summary.subject), \(d.domain.method), \(d.verificationDescription)")
            }
        }
        let threads = config.core.children > 0 ? config.core.children : System.coreCount
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let transport = SIPTransport(config: config, tls: tls, group: group, logger: logger)
        do {
            try transport.start()
        } catch {
            logger.error("\(error)")
            try? group.syncShutdownGracefully()
            throw ExitCode(1)
        }
        // -u/-g: the SIP sockets are bound; from here on the proxy runs as
        // the given user, so the files it makes (database, control socket)
        // are that user's.
        if let dropTo {
            if case .failure(let e) = Privileges.drop(to: dropTo) {
                logger.error("cannot drop privileges: \(e)")
                transport.shutdown()
                try? group.syncShutdownGracefully()
                throw ExitCode(1)
            }
            logger.notice("running as uid \(getuid()) gid \(getgid())")
        }
        let location: LocationService
        let subscribers: SubscriberStore
        do {
            location = try LocationService(path: config.registrar.dbMode == 0 ? nil : config.registrar.database)
            subscribers = try SubscriberStore(path: SubscriberStore.defaultPath(config))
        } catch {
            logger.error("\(error)")
            transport.shutdown()
            try? group.syncShutdownGracefully()
            throw ExitCode(1)
        }
        Startup.adviseOnUsers(config, subscribers, logger: logger, configFile: options.file)
        let core = ProxyCore(config: config, transport: transport, location: location, logger: logger, subscribers: subscribers,
                             defines: options.defineMap)
        transport.delegate = core
        let control = ControlServer(core: core, config: config, logger: logger, logLevel: runtimeLevel)
        do {
            try control.start(group: group)
        } catch {
            logger.warning("control socket \(config.core.controlSocket) not available: \(error)")
        }
        var http: HTTPStatusServer?
        if let address = config.core.httpListen {
            let server = HTTPStatusServer(core: core, address: address, logger: logger, control: control, rpcAccess: config.core.httpRPC)
            do {
                try server.start(group: group)
                http = server
            } catch {
                logger.error("cannot open http_listen \(address.host):\(address.port): \(error)")
                control.stop()
                transport.shutdown()
                try? group.syncShutdownGracefully()
                throw ExitCode(1)
            }
        }
        let pidPath = pidFile ?? config.core.pidFile
        if let pidPath {
            do {
                try "\(getpid())\n".write(toFile: pidPath, atomically: true, encoding: .utf8)
            } catch {
                logger.error("cannot write the pid file \(pidPath): \(error)")
                control.stop()
                transport.shutdown()
                try? group.syncShutdownGracefully()
                throw ExitCode(1)
            }
        }
        logger.notice("SwiftSER running: \(transport.listeners.map(\.description).joined(separator: ", ")); \(location.all().count) registrations loaded")

        // The parts run as swift-service-lifecycle services (SIPProxy's
        // Lifecycle.swift): SIGTERM or SIGINT shuts them down gracefully in
        // reverse order, so the proxy drains first while the control socket,
        // /ready and the reload signals still answer; a second SIGTERM or
        // SIGINT ends the drain at once. SIGHUP reloads the TLS files, SIGUSR1
        // the route script.
        let stopSignals: [UnixSignal] = [.sigterm, .sigint]
        var services: [any Service] = [ReloadSignalService(control: control), control]
        if let http { services.append(http) }
        services.append(ProxyService(core: core, logger: logger, stopAtOnceSignals: stopSignals))
        let lifecycle = ServiceGroup(services: services, gracefulShutdownSignals: stopSignals, logger: logger)
        // The group runs on Swift's concurrency pool while this main thread
        // waits. The main thread must stay: an async main would end it, and
        // /proc and ps would then show the process with the credentials it
        // had before -u/-g.
        let outcome = GroupOutcome()
        Task {
            do { try await lifecycle.run() } catch { outcome.error = error }
            outcome.done.signal()
        }
        outcome.done.wait()
        if let error = outcome.error { logger.error("stopped by an error: \(error)") }
        // The database is flushed (its write-ahead log checkpointed) once
        // nothing can write to it any more.
        location.close()
        try? group.syncShutdownGracefully()
        if let pidPath { try? FileManager.default.removeItem(atPath: pidPath) }
        if outcome.error != nil { throw ExitCode(1) }
    }
}

/// How the service group ended, handed from its task to the waiting main thread.
private final class GroupOutcome: @unchecked Sendable { // `error` is written once before `done.signal()` and read only after `done.wait()`
    var error: (any Error)?
    let done = DispatchSemaphore(value: 0)
}
