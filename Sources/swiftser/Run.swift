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

        // Signals (plain DispatchSource handlers): HUP reloads TLS files,
        // USR1 reloads the route script, INT and TERM drain and then stop;
        // a second INT or TERM stops at once.
        signal(SIGHUP, SIG_IGN)
        signal(SIGUSR1, SIG_IGN)
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        signal(SIGPIPE, SIG_IGN)
        let queue = DispatchQueue(label: "signals")
        let hup = DispatchSource.makeSignalSource(signal: SIGHUP, queue: queue)
        hup.setEventHandler { _ = control.reloadTLS() }
        hup.resume()
        let usr1 = DispatchSource.makeSignalSource(signal: SIGUSR1, queue: queue)
        usr1.setEventHandler { _ = core.reloadScript() }
        usr1.resume()
        let drain = DispatchSemaphore(value: 0)
        let force = DispatchSemaphore(value: 0)
        var stopSignals = 0 // touched only on `queue`
        var stops: [DispatchSourceSignal] = []
        for sig in [SIGINT, SIGTERM] {
            let s = DispatchSource.makeSignalSource(signal: sig, queue: queue)
            s.setEventHandler {
                stopSignals += 1
                if stopSignals == 1 { drain.signal() } else if stopSignals == 2 { force.signal() }
            }
            s.resume()
            stops.append(s)
        }
        let purge = group.next().scheduleRepeatedTask(initialDelay: .seconds(60), delay: .seconds(60)) { _ in
            let n = location.purgeExpired()
            if n > 0 { logger.info("purged \(n) expired registration\(n == 1 ? "" : "s")") }
        }
        drain.wait()
        // Drain: no new connections, 503 to new requests, transactions in
        // progress finish until none is left or shutdown_timeout passes.
        core.beginDrain()
        logger.notice("draining: \(core.activeTransactions) transaction(s) in progress; up to \(config.core.shutdownTimeout) s (shutdown_timeout)")
        let deadline = DispatchTime.now() + .seconds(config.core.shutdownTimeout)
        var forced = false
        while core.activeTransactions > 0 {
            let now = DispatchTime.now()
            if now >= deadline {
                logger.warning("shutdown_timeout reached with \(core.activeTransactions) transaction(s) in progress")
                break
            }
            if force.wait(timeout: min(deadline, now + .milliseconds(50))) == .success {
                logger.notice("second stop signal: stopping at once")
                forced = true
                break
            }
        }
        logger.notice("stopping")
        purge.cancel()
        http?.stop()
        control.stop()
        // Connections close (TLS with close_notify) before the loops stop.
        transport.shutdown(waitForClose: !forced)
        location.close()
        try? group.syncShutdownGracefully()
        if let pidPath { try? FileManager.default.removeItem(atPath: pidPath) }
    }
}
