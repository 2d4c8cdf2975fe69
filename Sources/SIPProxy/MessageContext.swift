import SIPConfig
import SIPCore
import SIPTransport

/// A script value: Kamailio's pseudo-variables are strings or integers,
/// or null when unset.
enum Value: Equatable, Sendable {
    case null
    case int(Int)
    case str(String)

    var string: String {
        switch self {
        case .null: return ""
        case .int(let n): return String(n)
        case .str(let s): return s
        }
    }

    /// As xlog prints it: `<null>` for an unset value.
    var printable: String { self == .null ? "<null>" : string }

    var int: Int {
        switch self {
        case .null: return 0
        case .int(let n): return n
        case .str(let s): return Int(s) ?? 0
        }
    }

    var truthy: Bool {
        switch self {
        case .null: return false
        case .int(let n): return n > 0
        case .str(let s): return !s.isEmpty
        }
    }
}

/// Everything the route script reads and changes while it runs one message.
final class MessageContext: @unchecked Sendable { // used by one thread at a time: the request's script, then its failure_route (held until the script returns) or a look-up's completion; the transaction shell reads only what it copied at creation
    let received: ReceivedMessage
    /// The message as the script has edited it, with the top Via stamped.
    var message: SIPMessage {
        _read { applyTopVia(); yield edited }
        _modify { applyTopVia(); yield &edited }
        set { applyTopVia(); edited = newValue }
    }
    private var edited: SIPMessage

    /// Whether the script rewrote the Request-URI (read without writing a
    /// pending Via stamp, which cannot change it).
    var requestURIRewritten: Bool { edited.requestURIRewritten }
    var flags: UInt64 = 0
    var vars: [String: Value] = [:]
    var avps: [String: Value] = [:]
    /// `$du`: where to send instead of the Request-URI.
    var destinationURI: String?
    /// Targets found by lookup(): the first is the Request-URI, more mean
    /// parallel forking.
    var targets: [Target] = []
    /// A reply was sent (sl_send_reply, t_reply, t_relay's error reply).
    var replied = false
    /// record_route() was called.
    var recordRoute = false
    var recordRouteParams = ""
    /// mf_process_maxfwd_header() already decremented Max-Forwards.
    var maxForwardsDone = false
    var failureRoute: RouteBlock?
    var replyRoute: RouteBlock?
    var branchRoute: RouteBlock?
    /// The script whose block is running (set by `run(block:)`); `route`
    /// and `t_on_*` resolve their block numbers in it.
    var script: CompiledScript?
    /// In onreply_route / failure_route: the reply's status.
    var status: Int?
    /// The transaction this request created or matched (t_relay / t_newtran).
    /// Weak: the transaction holds its context; the transaction table owns both.
    weak var transaction: ServerTransaction?
    /// The running block kind (functions allowed differ).
    var routeKind: RouteScript.Kind = .request
    /// Loop guard for while loops and route() depth.
    var steps = 0
    var depth = 0
    /// Credentials www_authorize / proxy_authorize / auth_check accepted,
    /// and the header they came from (consume_credentials, $au, …).
    var authCredentials: DigestCredentials?
    var authHeader: SIPHeaderName?
    /// www_authorize, proxy_authorize, auth_check or tls_peer_verified_from()
    /// accepted the request (save() then lists every binding in its 200).
    var authenticated = false
    /// The last authorize found a stale nonce: the next challenge says stale=true.
    var authStale = false
    /// The last error reply a function would give (for sl_reply_error).
    var lastError: (Int, String)?
    /// The transaction shard, written into the branch parameters made for
    /// this request so responses find it directly.
    var transactionShard = 0
    /// RFC 3261 §16.4: whether the request came with a route set at all
    /// (loose_route()); the core took this proxy's own values off its top.
    var hadRouteSet = false
    /// Route values are left once ours were taken off.
    var routesRemain = false
    /// A copy of a request whose transaction another thread already made
    /// (absorbed as a retransmission), or a request t_relay answered with
    /// 503 at the transaction cap: the script's replies send nothing more.
    var duplicate = false
    /// The transaction cap refused this request a transaction (t_relay,
    /// t_newtran); a 503 made for it carries Retry-After.
    var transactionRefused: TransactionLimits.Refusal?
    /// RFC 5393: the Max-Breadth each parallel branch carries.
    var maxBreadthPerBranch: Int?
    /// The loop hash of the request as received (§16.3 step 4), made once.
    var loopHash: UInt64?

    /// The request as received plus `received`/`rport` on its top Via:
    /// what locally generated replies copy their Via from.
    var requestForReplies: SIPMessage {
        _read {
            applyTopVia()
            if let stamped { yield stamped } else { yield received.message }
        }
    }
    /// The request with the stamp written in, once it has been (nil: the
    /// request as received needed none, or it is still pending).
    private var stamped: SIPMessage?

    /// The top Via value with `received`/`rport` (RFC 3261 §18.2.1,
    /// RFC 3581), not yet written into `message`: a stateless reply copies
    /// it straight from here, so a request answered by the script without
    /// being read or forwarded is never edited. Any use of `message` or
    /// `requestForReplies` writes it in first.
    private(set) var pendingTopVia: Via.Stamp?

    /// Sets the stamped top Via value (see `pendingTopVia`).
    func stampTopVia(_ value: Via.Stamp) { pendingTopVia = value }

    private func applyTopVia() {
        guard let v = pendingTopVia else { return }
        pendingTopVia = nil
        edited.replaceFirstValue(.via, with: v.octets)
        stamped = edited
    }

    /// What validation parsed from the received message (top Via, tags,
    /// CSeq); nil for messages not validated here.
    let checked: SIPMessage.Checked?

    /// Whether the request's To has a tag, when validation told.
    var toHasTag: Bool? { checked.map { $0.toTag != nil } }

    /// The To tag of replies made here for this request, computed once.
    lazy var localTag: String = ProxyCore.localTag(received.message, checked: checked)

    init(received: ReceivedMessage, checked: SIPMessage.Checked? = nil) {
        self.received = received
        self.edited = received.message
        self.checked = checked
    }

    /// A copy of what `ProxyCore.prepare` reads, for a branch prepared
    /// later on another thread (after a DNS look-up): this context belongs
    /// to the request's thread, whose script may go on changing it. Made
    /// on the request's thread.
    func snapshotForBranch() -> MessageContext {
        let c = MessageContext(received: received, checked: checked)
        c.edited = message
        c.stamped = stamped
        c.destinationURI = destinationURI
        c.targets = targets
        c.recordRoute = recordRoute
        c.recordRouteParams = recordRouteParams
        c.maxForwardsDone = maxForwardsDone
        c.maxBreadthPerBranch = maxBreadthPerBranch
        c.script = script
        c.transactionShard = transactionShard
        c.loopHash = loopHash
        c.hadRouteSet = hadRouteSet
        c.routesRemain = routesRemain
        return c
    }
}
