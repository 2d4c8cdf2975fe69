import Foundation
import NIOCore
import SIPConfig
import SIPCore
import SIPTLS
import SIPTransport

/// One target a request is sent to: the Request-URI for it, and where to
/// send when that is not what the URI says (a registered contact's
/// connection or NAT address, `$du`).
struct Target {
    var uri: String
    var destination: Destination?
    /// Path values learnt at registration (RFC 3327), used as Route.
    var path: [String] = []
}

/// A request ready to go out on one branch.
struct OutgoingRequest {
    var bytes: [UInt8]
    var destination: Destination
    var branch: String
    var message: SIPMessage
}

extension ProxyCore {
    /// Why a request could not be forwarded; each case has its status.
    enum ForwardError: Error, CustomStringConvertible, Equatable {
        case tooManyHops
        case loop
        case noRequestURI
        /// A URI that is not sip:/sips: (416).
        case unsupportedScheme(String)
        /// A sips: request with no TLS path (RFC 5630; 480).
        case sipsNeedsTLS
        /// The next hop's URI does not parse or its host does not resolve (478).
        case unresolvable(String)
        case noListener(TransportProtocol)
        /// The next hop's NAPTR records must be looked up first (RFC 3263 §4.1).
        case needsLookup(String)

        var status: (Int, String) {
            switch self {
            case .tooManyHops: return (483, "Too Many Hops")
            case .loop: return (482, "Loop Detected")
            case .unsupportedScheme: return (416, "Unsupported URI Scheme")
            case .sipsNeedsTLS: return (480, "Temporarily Unavailable (sips: needs a TLS path)")
            case .noRequestURI, .unresolvable: return (478, "Unresolvable Destination")
            case .noListener, .needsLookup: return (503, "Service Unavailable")
            }
        }

        var description: String {
            switch self {
            case .tooManyHops: return "Max-Forwards reached 0"
            case .loop: return "the request came back unchanged through this proxy (RFC 3261 §16.3 step 4)"
            case .noRequestURI: return "no Request-URI"
            case .unsupportedScheme(let s): return "URI scheme '\(s)' is not routable"
            case .sipsNeedsTLS: return "a sips: request may only be forwarded over TLS"
            case .unresolvable(let why): return why
            case .noListener(let p): return "no \(p.rawValue) listener (or TLS disabled) to send from"
            case .needsLookup(let name): return "NAPTR records of \(name) not looked up yet"
            }
        }
    }

    /// RFC 3261 §16.11: a branch that is the same for retransmissions and
    /// for a CANCEL or ACK of the same INVITE; it carries the transaction's
    /// shard and the request's loop hash (`Matching.branch`).
    func branchID(_ ctx: MessageContext, target: String, index: Int, stateful: Bool) -> String {
        let m = ctx.received.message
        var h = FNV64()
        if let via = ctx.checked?.topVia ?? (try? m.topVia()) ?? nil, via.hasRFC3261Branch {
            h.add(via.branch ?? "")
            h.add(via.host)
            h.add(String(via.port ?? 0))
        } else {
            h.add(((try? m.to()) ?? nil)?.tag ?? "")
            h.add(((try? m.from()) ?? nil)?.tag ?? "")
            h.add(m.callID ?? "")
            h.add(String(((try? m.cseq()) ?? nil)?.number ?? 0))
            h.add(m.requestURIString ?? "")
        }
        h.add(target)
        h.add(String(index))
        return Matching.branch(shard: stateful ? ctx.transactionShard : 0, loop: loopHash(ctx), transaction: h.value, stateful: stateful)
    }

    /// The request's loop hash, made once.
    func loopHash(_ ctx: MessageContext) -> UInt64 {
        if let h = ctx.loopHash { return h }
        // Every Route value counts, ours too (§16.6 step 8): a request sent
        // back through us by an application server with our Route is a spiral.
        let h = Matching.loopHash(ctx.received.message, checked: ctx.checked)
        ctx.loopHash = h
        return h
    }

    /// RFC 3261 §16.3 step 4: the request carries a Via of ours whose
    /// branch has the loop hash this request has now — it came back
    /// unchanged, a loop (a spiral changed its Request-URI or Route).
    func isLooped(_ ctx: MessageContext) -> Bool {
        guard let vias = try? ctx.received.message.vias(), vias.count > 1 else { return false }
        let mine = Matching.base32(loopHash(ctx), digits: Matching.loopDigits)
        for v in vias.dropFirst() {
            guard let b = v.branch, let part = Matching.loopPart(ofBranch: b), part == mine else { continue }
            if isMyself(host: v.host, port: v.port ?? (v.transport == "TLS" ? 5061 : 5060)) { return true }
        }
        return false
    }

    /// Builds a request for one target: Request-URI, Max-Forwards, route
    /// set from Path, next hop (Route, `$du`, the binding's destination or
    /// the Request-URI), our Via, Record-Route (double when the two legs
    /// use different sockets, RFC 5658).
    /// A URI's octets begin with `sips:` (any case).
    static func isSIPS(_ uri: ArraySlice<UInt8>?) -> Bool {
        guard let uri, uri.count >= 5 else { return false }
        let i = uri.startIndex
        return uri[i] | 0x20 == 0x73 && uri[i + 1] | 0x20 == 0x69 && uri[i + 2] | 0x20 == 0x70 && uri[i + 3] | 0x20 == 0x73 && uri[i + 4] == 0x3A
    }

    func prepare(_ ctx: MessageContext, target: Target, forced: (TransportProtocol?, String, UInt16?)?, branchIndex: Int, mayDefer: Bool = false, stateful: Bool = false) throws(ForwardError) -> OutgoingRequest {
        var m = ctx.message
        if target.uri != m.requestURIString { m.setRequestURI(target.uri) }
        if !ctx.maxForwardsDone {
            guard let mf = try? m.decrementMaxForwards() else { throw .tooManyHops }
            if mf == 0 { throw .tooManyHops }
        }
        if branchIndex == 0 && m.method != .ack && m.method != .cancel && isLooped(ctx) { throw .loop }
        for p in target.path.reversed() {
            m.insertHeader(SIPHeaderField(.route, value: ArraySlice(Array(p.utf8))), at: m.firstIndex(of: .route) ?? m.headerCount)
        }
        if let breadth = ctx.maxBreadthPerBranch {
            _ = m.removeHeaders(named: "Max-Breadth")
            m.appendHeader("Max-Breadth", String(breadth))
        }
        // §16.6 step 6: a next hop that is a strict router (no `lr`) gets
        // the request with its URI as the Request-URI; the Request-URI goes
        // to the end of the Route set.
        var strictNextHop = false
        if ctx.destinationURI == nil, forced == nil, let routes = try? m.routes(first: 1), let first = routes.first, !first.uri.isLooseRouter {
            strictNextHop = true
            let uri = m.requestURIString ?? ""
            _ = m.popFirstValue(.route)
            m.appendHeader(SIPHeaderField(.route, value: ArraySlice(Array("<\(uri)>".utf8))))
            m.setRequestURI(first.uri.description)
        }
        // Next hop.
        var dest: Destination
        do {
            if let forced, !forced.1.isEmpty {
                let proto = forced.0 ?? .udp
                dest = try resolver.destination(for: SIPURI(host: forced.1, port: forced.2 ?? proto.defaultPort), forced: proto)
            } else if let du = ctx.destinationURI {
                dest = try resolver.destination(for: try SIPURI.parse(du), forced: forced?.0, mayDefer: mayDefer)
            } else if !strictNextHop, let route = ((try? m.routes(first: 1)) ?? []).first {
                dest = try resolver.destination(for: route.uri, forced: forced?.0, mayDefer: mayDefer)
            } else if !strictNextHop, let d = target.destination {
                dest = d
            } else {
                guard let s = m.requestURIString else { throw ForwardError.noRequestURI }
                dest = try resolver.destination(for: try SIPURI.parse(s), forced: forced?.0, mayDefer: mayDefer)
            }
        } catch let e as ForwardError {
            throw e
        } catch let e as Resolver.ResolveError {
            switch e {
            case .needsNAPTR(let name): throw .needsLookup(name)
            case .unsupportedScheme(let s): throw .unsupportedScheme(s)
            case .sipsNeedsTLS: throw .sipsNeedsTLS
            }
        } catch {
            throw .unresolvable(String(describing: error))
        }
        // A TLS next hop must have a name TLS can carry (SNI, RFC 5922).
        if dest.proto == .tls, dest.connectionID == nil {
            let name = dest.tlsServerName ?? dest.host
            let bare = name.hasPrefix("[") ? String(name.dropFirst().dropLast()) : name
            if !PeerIdentity.isIPLiteral(bare) && !SIPTransport.isValidServerName(bare) {
                throw .unresolvable("'\(LogText(String(bare.prefix(64))))' cannot be a TLS server name")
            }
        }
        // RFC 5630: a request whose Request-URI is (or arrived as) sips:
        // leaves only over TLS — never downgraded by a lookup() to a sip: contact.
        let sipsRequest = Self.isSIPS(m.requestURIBytes) || Self.isSIPS(ctx.received.message.requestURIBytes)
        if sipsRequest && dest.proto != .tls {
            throw .sipsNeedsTLS
        }
        guard let out = transport.listener(for: dest.proto, ipv6: dest.host.utf8.contains(0x3A)), !(dest.proto == .tls && config.tls.disabled) else {
            throw .noListener(dest.proto)
        }
        let outHost = out.advertisedHost ?? out.host
        let outPort = out.advertisedPort ?? out.port
        let branch = branchID(ctx, target: target.uri, index: branchIndex, stateful: stateful)
        let viaHost = outHost.utf8.contains(0x3A) ? "[\(outHost)]" : outHost
        var via = "SIP/2.0/\(dest.proto.rawValue.uppercased()) \(viaHost):\(outPort);branch=\(branch)"
        if dest.proto == .udp { via += ";rport" }
        m.pushVia(Array(via.utf8))
        if ctx.recordRoute && m.method != .register {
            let inL = ctx.received.listener
            // RFC 5630: a sips: Request-URI or top Route asks for a sips:
            // Record-Route (on a TLS leg).
            let sips = sipsRequest || (((try? m.routes(first: 1)) ?? []).first?.uri.scheme == .sips)
            func rr(_ l: ListenSocket, r2: Bool) -> [UInt8] {
                let h = l.advertisedHost ?? l.host
                let secure = sips && l.proto == .tls
                var s = "<\(secure ? "sips" : "sip"):\(h.utf8.contains(0x3A) ? "[\(h)]" : h):\(l.advertisedPort ?? l.port)"
                if l.proto != .udp && !secure { s += ";transport=\(l.proto.rawValue)" }
                s += ";lr"
                if r2 { s += ";r2=on" }
                if !ctx.recordRouteParams.isEmpty { s += ";" + ctx.recordRouteParams }
                return Array((s + ">").utf8)
            }
            let same = inL.proto == out.proto && inL.host == out.host && inL.port == out.port
            if same || !scriptOf(ctx).recordRoute.doubleRecordRoute {
                m.addRecordRoute(rr(inL, r2: false))
            } else {
                m.addRecordRoute(rr(inL, r2: true))
                m.addRecordRoute(rr(out, r2: true))
            }
        }
        return OutgoingRequest(bytes: m.serialized(), destination: dest, branch: branch, message: m)
    }

    /// forward()/forward_udp/tcp/tls()/send(): sends the request on without
    /// keeping state. A next hop
    /// whose NAPTR records are not cached yet (RFC 3263 §4.1) is sent once
    /// the look-up completes (`mayDefer` false then).
    func forwardStateless(_ ctx: MessageContext, forced: (TransportProtocol?, String, UInt16?)?, mayDefer: Bool = true) -> Bool {
        guard ctx.message.isRequest else { return false }
        let uri = ctx.message.requestURIString ?? ""
        let target = ctx.targets.first ?? Target(uri: uri, destination: nil)
        do {
            let out = try prepare(ctx, target: target, forced: forced, branchIndex: 0, mayDefer: mayDefer)
            logger.debug("forwarding \(ctx.message.method?.name ?? "") statelessly to \(out.destination)")
            metrics.forwardedRequest()
            if case .notApplicable = transport.sendDirect(out.bytes, to: out.destination) {
                transport.send(out.bytes, to: out.destination).whenFailure { [logger] e in
                    logger.info("stateless forward to \(out.destination) failed: \(e)")
                }
            }
            return true
        } catch .needsLookup(let name) {
            // Sent from the look-up's thread: a copy, not the request's context.
            let snapshot = ctx.snapshotForBranch()
            transport.dns.lookup(name, .naptr).whenComplete { [weak self] _ in
                _ = self?.forwardStateless(snapshot, forced: forced, mayDefer: false)
            }
            return true
        } catch {
            logger.info("cannot forward \(ctx.message.method?.name ?? "") \(LogText(uri)): \(error)")
            ctx.lastError = error.status
            switch error {
            case .tooManyHops, .loop, .unsupportedScheme:
                reply(ctx, code: error.status.0, reason: error.status.1)
            default:
                break
            }
            return false
        }
    }
}
