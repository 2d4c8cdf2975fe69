import SIPCore

// libFuzzer target: one SIP message as a datagram and as a framed stream
// message, then what a proxy does with a message that passes validation
// (typed headers, edits, serialisation). Built by scripts/fuzz against
// SIPCore compiled from Sources/SIPCore.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzMessage(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    for framing in [SIPFraming.datagram, .stream] {
        guard var message = try? SIPMessage.parse(bytes, framing: framing) else { continue }
        _ = message.headers
        _ = message.reasonPhrase
        _ = message.requestURIString
        guard let checked = try? message.validate() else { continue }
        _ = checked.topVia.description
        _ = try? message.vias()
        _ = try? message.routes()
        _ = try? message.recordRoutes()
        _ = try? message.paths()
        _ = message.expires
        _ = message.contentType
        _ = message.optionTags(.supported)
        for c in checked.contacts { _ = (c.address, c.expires, c.q, c.instance, c.regID) }
        if message.isRequest {
            _ = try? message.decrementMaxForwards()
            message.addRecordRoute(Array("<sip:127.0.0.1;lr>".utf8))
            _ = message.popFirstValue(.route)
        } else {
            _ = message.popFirstValue(.via)
        }
        _ = message.serialized()
    }
    return 0
}
