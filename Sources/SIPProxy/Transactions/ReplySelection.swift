/// Choosing the response a proxy sends upstream when no 2xx came (RFC 3261
/// §16.7 step 6 and 7).
enum ReplySelection {
    /// Lower is better. 6xx first; then the lowest class; within 4xx the
    /// responses a caller can act on (401, 407, 415, 420, 484) before the
    /// others and 408 last; within 5xx 503 last. A response made here
    /// (timeout, transport error) loses a tie with one received.
    static func rank(_ status: Int, local: Bool) -> Int {
        let cls = status / 100
        var r: Int
        switch cls {
        case 6: r = 0
        case 2: r = -100
        case 3: r = 300
        case 4:
            switch status {
            case 401, 407, 415, 420, 484: r = 400
            case 408: r = 420
            default: r = 410
            }
        case 5: r = status == 503 ? 520 : 500
        default: r = 900
        }
        return r * 2 + (local ? 1 : 0)
    }

    /// The status that goes upstream for a chosen one: a 503 becomes 500
    /// (§16.7 step 6: the upstream element must not think this proxy is
    /// overloaded because a downstream one is).
    static func upstreamStatus(_ status: Int) -> Int { status == 503 ? 500 : status }

    /// Whether the challenges of other branches are merged into this one (§16.7 step 7).
    static func mergesChallenges(_ status: Int) -> Bool { status == 401 || status == 407 }
}
