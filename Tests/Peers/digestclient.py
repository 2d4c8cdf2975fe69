#!/usr/bin/env python3
"""A SIP digest-authentication client for SwiftSER's tests (RFC 7616 /
RFC 8760): sends a REGISTER (or INVITE/MESSAGE) over UDP, answers the 401/407
challenge and prints what happens.

Usage: digestclient.py --port P [--method REGISTER] [--user alice]
         [--domain localhost] [--password secret] [--algorithm SHA-256|MD5]
         [--qop auth|auth-int|none] [--body TEXT] [--realm R] [--delay S]
         [--replay] [--raw-authorization VALUE] [--from-user U]
Output, one line each:
  CHALLENGE <code> <header value>     for each challenge header received
  RESPONSE <code> [stale]             for each final response
  REPLAY <code>                       the response to the same credentials sent again
Exit 0 when a final response was received.
"""
import argparse, hashlib, re, socket, sys, time, uuid


def h(alg, data):
    if isinstance(data, str):
        data = data.encode()
    return (hashlib.sha256 if alg == "SHA-256" else hashlib.md5)(data).hexdigest()


def parse_challenge(value):
    params = {}
    rest = value.split(None, 1)[1] if " " in value else ""
    for m in re.finditer(r'([A-Za-z0-9_-]+)\s*=\s*("((?:[^"\\]|\\.)*)"|[^,\s]+)', rest):
        params[m.group(1).lower()] = m.group(3) if m.group(3) is not None else m.group(2)
    return params


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--method", default="REGISTER")
    p.add_argument("--user", default="alice")
    p.add_argument("--from-user")
    p.add_argument("--to-user")
    p.add_argument("--domain", default="localhost")
    p.add_argument("--from-domain", help="the From domain (default --domain)")
    p.add_argument("--ruri", help="the Request-URI (default from --domain and the method)")
    p.add_argument("--password", default="secret")
    p.add_argument("--algorithm", default="SHA-256")
    p.add_argument("--qop", default="auth")
    p.add_argument("--body", default="")
    p.add_argument("--realm", help="answer with this realm instead of the challenge's")
    p.add_argument("--delay", type=float, default=0.0, help="wait before answering the challenge")
    p.add_argument("--replay", action="store_true", help="send the authenticated request again with the same nc")
    p.add_argument("--next-nc", action="store_true", help="send a second request with the same nonce and nc 2")
    p.add_argument("--raw-authorization", help="send this Authorization value instead of computing one")
    p.add_argument("--wait", type=float, default=3.0)
    a = p.parse_args()

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(a.wait)
    local = s.getsockname()[1]
    call_id = uuid.uuid4().hex + "@127.0.0.1"
    from_tag = uuid.uuid4().hex[:8]
    cseq = [0]
    ruri = a.ruri or ("sip:%s" % a.domain if a.method == "REGISTER" else "sip:%s@%s" % (a.to_user or "bob", a.domain))
    from_user = a.from_user or a.user
    to_user = a.to_user or (a.user if a.method == "REGISTER" else "bob")
    body = a.body.encode()

    def request(auth_header=None):
        cseq[0] += 1
        lines = [
            "%s %s SIP/2.0" % (a.method, ruri),
            "Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK-%s;rport" % (local, uuid.uuid4().hex[:12]),
            "Max-Forwards: 70",
            "From: <sip:%s@%s>;tag=%s" % (from_user, a.from_domain or a.domain, from_tag),
            "To: <sip:%s@%s>" % (to_user, a.domain),
            "Call-ID: %s" % call_id,
            "CSeq: %d %s" % (cseq[0], a.method),
            "Contact: <sip:%s@127.0.0.1:%d>" % (a.user, local),
            "Expires: 300",
        ]
        if auth_header:
            lines.append(auth_header)
        if body:
            lines.append("Content-Type: text/plain")
        lines.append("Content-Length: %d" % len(body))
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def exchange(msg):
        s.sendto(msg, (a.host, a.port))
        while True:
            try:
                data, _ = s.recvfrom(65535)
            except socket.timeout:
                return None, []
            text = data.decode("utf-8", "replace")
            head = text.split("\r\n\r\n", 1)[0].split("\r\n")
            code = int(head[0].split()[1])
            if code < 200:
                continue
            print("REASON %d %s" % (code, head[0].split(" ", 2)[2] if head[0].count(" ") >= 2 else ""))
            challenges = []
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() in ("www-authenticate", "proxy-authenticate"):
                    challenges.append(value.strip())
            return code, challenges

    code, challenges = exchange(request())
    if code is None:
        print("NO-RESPONSE")
        return 1
    for c in challenges:
        print("CHALLENGE %d %s" % (code, c))
    if code not in (401, 407):
        print("RESPONSE %d" % code)
        return 0
    header_name = "Authorization" if code == 401 else "Proxy-Authorization"
    chosen = None
    for c in challenges:
        params = parse_challenge(c)
        if params.get("algorithm", "MD5").upper() == a.algorithm.upper():
            chosen = params
            break
    if chosen is None:
        print("NO-CHALLENGE-FOR %s" % a.algorithm)
        return 1
    if a.delay:
        time.sleep(a.delay)

    def authorization(params, nc):
        realm = a.realm or params["realm"]
        alg = a.algorithm.upper()
        uri = ruri
        ha1 = h(alg, "%s:%s:%s" % (a.user, realm, a.password))
        cnonce = uuid.uuid4().hex[:16]
        qop = None if a.qop == "none" else a.qop
        if qop == "auth-int":
            ha2 = h(alg, "%s:%s:%s" % (a.method, uri, h(alg, body)))
        else:
            ha2 = h(alg, "%s:%s" % (a.method, uri))
        ncs = "%08x" % nc
        if qop:
            resp = h(alg, "%s:%s:%s:%s:%s:%s" % (ha1, params["nonce"], ncs, cnonce, qop, ha2))
            extra = ', qop=%s, nc=%s, cnonce="%s"' % (qop, ncs, cnonce)
        else:
            resp = h(alg, "%s:%s:%s" % (ha1, params["nonce"], ha2))
            extra = ""
        return '%s: Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s", algorithm=%s%s' % (
            header_name, a.user, realm, params["nonce"], uri, resp, alg, extra)

    if a.raw_authorization is not None:
        header = "%s: %s" % (header_name, a.raw_authorization)
    else:
        header = authorization(chosen, 1)
    msg = request(header)
    code, challenges = exchange(msg)
    if code is None:
        print("NO-RESPONSE")
        return 1
    for c in challenges:
        print("CHALLENGE %d %s" % (code, c))
    stale = any("stale=true" in c.lower() for c in challenges)
    print("RESPONSE %d%s" % (code, " stale" if stale else ""))
    if a.replay:
        # The same Authorization (same nonce and nc) in a new transaction.
        code2, _ = exchange(request(header))
        print("REPLAY %s" % code2)
    if a.next_nc:
        code3, _ = exchange(request(authorization(chosen, 2)))
        print("NEXT %s" % code3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
