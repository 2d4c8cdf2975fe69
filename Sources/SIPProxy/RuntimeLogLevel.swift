import Atomics
import Logging

/// The proxy's log level on SER's `debug` scale (-5 alert … 3 debug),
/// changed while running by `cfg.set core debug N`. Read with one relaxed
/// atomic load each time a logger checks its level.
public final class RuntimeLogLevel: Sendable {
    private let value: ManagedAtomic<Int>

    /// The `debug` values accepted (SER/Kamailio's L_ALERT … L_DBG).
    public static let range = -5...3

    public init(_ debug: Int) {
        value = ManagedAtomic(min(max(debug, RuntimeLogLevel.range.lowerBound), RuntimeLogLevel.range.upperBound))
    }

    public var debug: Int { value.load(ordering: .relaxed) }

    /// Sets the level; false (and no change) when outside `range`.
    @discardableResult
    public func set(_ debug: Int) -> Bool {
        guard RuntimeLogLevel.range.contains(debug) else { return false }
        value.store(debug, ordering: .relaxed)
        return true
    }

    public var level: Logger.Level { RuntimeLogLevel.level(debug) }

    /// SER's scale to swift-log's levels.
    public static func level(_ debug: Int) -> Logger.Level {
        switch debug {
        case ...(-2): return .critical
        case -1: return .error
        case 0: return .warning
        case 1: return .notice
        case 2: return .info
        default: return .debug
        }
    }
}

/// A log handler whose level follows a `RuntimeLogLevel`; the lines go to
/// the wrapped handler, with the current message's metadata.
public struct RuntimeLevelLogHandler: LogHandler {
    public var inner: any LogHandler
    public let runtime: RuntimeLogLevel

    public init(_ inner: any LogHandler, runtime: RuntimeLogLevel) {
        self.inner = inner
        self.runtime = runtime
        self.inner.logLevel = .trace
    }

    /// Reads the shared level; setting it on one logger changes it for all.
    public var logLevel: Logger.Level {
        get { runtime.level }
        set {
            switch newValue {
            case .trace, .debug: runtime.set(3)
            case .info: runtime.set(2)
            case .notice: runtime.set(1)
            case .warning: runtime.set(0)
            case .error: runtime.set(-1)
            case .critical: runtime.set(-2)
            }
        }
    }

    public var metadata: Logger.Metadata {
        get { inner.metadata }
        set { inner.metadata = newValue }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { inner[metadataKey: key] }
        set { inner[metadataKey: key] = newValue }
    }

    /// Adds the metadata of the message being handled on this thread, if
    /// any (`MessageLogContext`), then hands the line on.
    public func log(event: LogEvent) {
        guard let message = MessageLogContext.current else {
            inner.log(event: event)
            return
        }
        var e = event
        e.metadata = (e.metadata ?? [:]).merging(message) { own, _ in own }
        inner.log(event: e)
    }
}
