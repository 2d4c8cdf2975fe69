import ArgumentParser
import SIPCore

/// What one unit of load is.
enum Scenario: String, ExpressibleByArgument, CaseIterable {
    /// One OPTIONS answered by the proxy's script (stateless).
    case options
    /// One REGISTER stored by the registrar.
    case register
    /// A whole call through the proxy to the UAS sipload plays:
    /// INVITE/100/180/200, ACK and BYE/200 along the Record-Route set.
    case call
}

/// Builds the requests of each scenario as text. Cheap enough for a load
/// generator; the proxy, not sipload, is what is measured.
struct RequestFactory {
    let proto: String
    let host: String
    let port: Int
    let domain: String
    let users: Int
    let uasHost: String
    let uasPort: Int
    /// REGISTER: the password of every user (digest authentication when the
    /// registrar challenges); nil: no credentials.
    var password: String? = nil

    private var target: String { host.contains(":") ? "[\(host)]" : host }
    private var via: String { "SIP/2.0/\(proto.uppercased()) \(target):9" }

    func options(callID: String) -> String {
        "OPTIONS sip:\(target):\(port) SIP/2.0\r\nVia: \(via);branch=z9hG4bK-\(callID);rport\r\nMax-Forwards: 70\r\n"
            + "From: <sip:load@\(domain)>;tag=l1\r\nTo: <sip:\(target)>\r\nCall-ID: \(callID)\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    }

    func registerUser(sequence: Int) -> String { "user\(sequence % max(users, 1))" }

    /// A REGISTER; `cseq` 2 with `authorization` answers a challenge.
    func register(callID: String, sequence: Int, cseq: Int = 1, authorization: String? = nil) -> String {
        let user = registerUser(sequence: sequence)
        let auth = authorization.map { "Authorization: \($0)\r\n" } ?? ""
        return "REGISTER sip:\(domain) SIP/2.0\r\nVia: \(via);branch=z9hG4bK-\(callID)-\(cseq);rport\r\nMax-Forwards: 70\r\n"
            + "From: <sip:\(user)@\(domain)>;tag=r1\r\nTo: <sip:\(user)@\(domain)>\r\nCall-ID: \(callID)\r\nCSeq: \(cseq) REGISTER\r\n"
            + auth
            + "Contact: <sip:\(user)@\(target):9;transport=\(proto)>;expires=3600\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n"
    }

    private static let sdp = "v=0\r\no=load 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"

    func invite(callID: String) -> String {
        let u = uasHost.contains(":") ? "[\(uasHost)]" : uasHost
        return "INVITE sip:uas@\(u):\(uasPort) SIP/2.0\r\nVia: \(via);branch=z9hG4bK-\(callID)-1;rport\r\nMax-Forwards: 70\r\n"
            + "From: <sip:load@\(domain)>;tag=c1\r\nTo: <sip:uas@\(domain)>\r\nCall-ID: \(callID)\r\nCSeq: 1 INVITE\r\n"
            + "Contact: <sip:load@\(target):9;transport=\(proto)>\r\nContent-Type: application/sdp\r\nContent-Length: \(Self.sdp.utf8.count)\r\n\r\n\(Self.sdp)"
    }

    /// ACK for a 2xx and the BYE that follows, both along the dialog's route
    /// set (the Record-Route of the 200, reversed) to the UAS's Contact.
    func ackAndBye(callID: String, ok: SIPMessage) -> (ack: String, bye: String) {
        let contact = ok.header(.contact).map { Self.uri(in: $0.valueString) } ?? "sip:uas@\(uasHost):\(uasPort)"
        let routes = ok.headerValues(.recordRoute).reversed().map { "Route: \(String(decoding: $0, as: UTF8.self))\r\n" }.joined()
        let to = ok.header(.to)?.valueString ?? ""
        let from = ok.header(.from)?.valueString ?? ""
        func request(_ method: String, _ cseq: Int, _ branch: String) -> String {
            "\(method) \(contact) SIP/2.0\r\nVia: \(via);branch=z9hG4bK-\(callID)-\(branch);rport\r\nMax-Forwards: 70\r\n\(routes)"
                + "From: \(from)\r\nTo: \(to)\r\nCall-ID: \(callID)\r\nCSeq: \(cseq) \(method)\r\nContent-Length: 0\r\n\r\n"
        }
        return (request("ACK", 1, "a"), request("BYE", 2, "b"))
    }

    /// The URI inside `<…>` of a name-address, or the whole value.
    static func uri(in value: String) -> String {
        guard let open = value.firstIndex(of: "<"), let close = value[open...].firstIndex(of: ">") else {
            return String(value.split(separator: ";").first ?? "")
        }
        return String(value[value.index(after: open)..<close])
    }
}
