import Foundation
import NIOCore
import SIPConfig
import SIPCore
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
    enum ForwardError: Error, CustomStringConvertible {
        case tooManyHops
        case loop
        case unroutable(String)
        case noListener(TransportProtocol)
        /// The next hop's NAPTR records must be looked up first (RFC 3263 §4.1).
        case needsLookup(String)

        var status: (Int, String) {
            switch self {
            case .tooManyHops: return (483, "Too Many Hops")
            case .loop: return (482, "Loop Detected")
            case .unroutable(let why):
                if why.contains("sips") { return (480, "Temporarily Unavailable (sips: needs a TLS path)") }
                return why.contains("scheme") ? (416, "Unsupported URI Scheme") : (478, "Unresolvable Destination")
            case .noListener, .needsLookup: return (503, "Service Unavailable")
            }
        }

        var description: String {
            switch self {
            case .tooManyHops: return "Max-Forwards reached 0"
            case .loop: return "the request already passed this proxy with the same branch"
            case .unroutable(let why): return why
            case .noListener(let p): return "no \(p.rawValue) listener (or TLS disabled) to send from"
            case .needsLookup(let name): return "NAPTR records of \(name) not looked up yet"
            }
        }
    }

    /// RFC 3261 §16.11: a branch that is the same for retransmissions and
    /// for a CANCEL or ACK of the same INVITE.
    func branchID(_ m: SIPMessage, target: String, index: Int) -> String {
        var h = FNV64()
        if let via = try? m.topVia(), via.hasRFC3261Branch {
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
        return "z9hG4bKss" + String(h.value, radix: 36)
    }

    /// Builds a request for one target: Request-URI, Max-Forwards, route
    /// set from Path, next hop (Route, `$du`, the binding's destination or
    /// the Request-URI), our Via, Record-Route (double when the two legs
    /// use different sockets, RFC 5658).
    func prepare(_ ctx: MessageContext, target: Target, forced: (TransportProtocol?, String, UInt16?)?, branchIndex: Int, mayDefer: Bool = false) throws(ForwardError) -> OutgoingRequest {
        var m = ctx.message
        if target.uri != m.requestURIString { m.setRequestURI(target.uri) }
        if !ctx.maxForwardsDone {
            guard let mf = try? m.decrementMaxForwards() else { throw .tooManyHops }
            if mf == 0 { throw .tooManyHops }
        }
        for p in target.path.reversed() {
            m.insertHeader(SIPHeaderField(.route, value: ArraySlice(Array(p.utf8))), at: m.firstIndex(of: .route) ?? m.headerCount)
        }
        // Next hop.
        var dest: Destination
        do {
            if let forced, !forced.1.isEmpty {
                let proto = forced.0 ?? .udp
                dest = try resolver.destination(for: SIPURI(host: forced.1, port: forced.2 ?? proto.defaultPort), forced: proto)
            } else if let du = ctx.destinationURI {
                dest = try resolver.destination(for: try SIPURI.parse(du), forced: forced?.0, mayDefer: mayDefer)
            } else if let route = ((try? m.routes()) ?? []).first {
                dest = try resolver.destination(for: route.uri, forced: forced?.0, mayDefer: mayDefer)
            } else if let d = target.destination {
                dest = d
            } else {
                guard let s = m.requestURIString else { throw ForwardError.unroutable("no Request-URI") }
                dest = try resolver.destination(for: try SIPURI.parse(s), forced: forced?.0, mayDefer: mayDefer)
            }
        } catch let e as ForwardError {
            throw e
        } catch Resolver.ResolveError.needsNAPTR(let name) {
            throw .needsLookup(name)
        } catch {
            throw .unroutable(String(describing: error))
        }
        // RFC 5630: a request whose Request-URI is (or arrived as) sips:
        // leaves only over TLS — never downgraded by a lookup() to a sip: contact.
        let sips = [m.requestURIString, ctx.received.message.requestURIString].contains { $0?.lowercased().hasPrefix("sips:") == true }
        if sips && dest.proto != .tls {
            throw .unroutable("a sips: request may only be forwarded over TLS")
        }
        guard let out = transport.listener(for: dest.proto, ipv6: dest.host.utf8.contains(0x3A)), !(dest.proto == .tls && config.tls.disabled) else {
            throw .noListener(dest.proto)
        }
        let outHost = out.advertisedHost ?? out.host
        let outPort = out.advertisedPort ?? out.port
        let branch = branchID(ctx.received.message, target: target.uri, index: branchIndex)
        // Loop detection (RFC 3261 §16.3 step 4): our own Via with this branch.
        for v in (try? m.vias()) ?? [] where v.branch == branch && isMyself(host: v.host, port: v.port) {
            throw .loop
        }
        let viaHost = outHost.utf8.contains(0x3A) ? "[\(outHost)]" : outHost
        var via = "SIP/2.0/\(dest.proto.rawValue.uppercased()) \(viaHost):\(outPort);branch=\(branch)"
        if dest.proto == .udp { via += ";rport" }
        m.pushVia(Array(via.utf8))
        if ctx.recordRoute && m.method != .register {
            let inL = ctx.received.listener
            func rr(_ l: ListenSocket, r2: Bool) -> [UInt8] {
                let h = l.advertisedHost ?? l.host
                var s = "<sip:\(h.utf8.contains(0x3A) ? "[\(h)]" : h):\(l.advertisedPort ?? l.port)"
                if l.proto != .udp { s += ";transport=\(l.proto.rawValue)" }
                s += ";lr"
                if r2 { s += ";r2=on" }
                if !ctx.recordRouteParams.isEmpty { s += ";" + ctx.recordRouteParams }
                return Array((s + ">").utf8)
            }
            let same = inL.proto == out.proto && inL.host == out.host && inL.port == out.port
            if same || !config.recordRoute.doubleRecordRoute {
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
            transport.send(out.bytes, to: out.destination).whenFailure { [logger] e in
                logger.info("stateless forward to \(out.destination) failed: \(e)")
            }
            return true
        } catch .needsLookup(let name) {
            transport.dns.lookup(name, .naptr).whenComplete { [weak self] _ in
                _ = self?.forwardStateless(ctx, forced: forced, mayDefer: false)
            }
            return true
        } catch {
            logger.info("cannot forward \(ctx.message.method?.name ?? "") \(uri): \(error)")
            ctx.lastError = error.status
            if error.status.0 == 483 || error.status.0 == 482 || error.status.0 == 416 {
                reply(ctx, code: error.status.0, reason: error.status.1)
            }
            return false
        }
    }
}
