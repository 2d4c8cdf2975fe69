#!/usr/bin/env python3
"""Scripted SIP user agents for SwiftSER's tests, over UDP, TCP or TLS.

  ua.py phone  --port P --proto tls --user alice [--answer 200|486|ring|silent] [--ca CA] [--cert C --key K]
      Registers sip:USER@HOST through the proxy, then answers calls: 180 then
      the --answer status (ring: 180 only; silent: nothing). Answers BYE and
      CANCEL. Prints one line per event; stops after --duration seconds.
  ua.py call   --port P --proto udp --to alice [--cancel] [--expect 200]
      Calls sip:TO@HOST through the proxy; on 200 sends ACK and BYE along the
      Record-Route set; with --cancel sends CANCEL after the 180 (with
      --cancel-when FILE, once FILE exists: the test decides when).
  ua.py register --port P --proto udp --user bob [--contacts N [--one-line]] [--expires S]
      Sends one REGISTER and prints the response and its Contacts.
With --password (default "test-password"), a 401/407 to REGISTER or INVITE
is answered once with digest credentials (RFC 7616: the first challenge
with SHA-256 or MD5, qop=auth when offered); --password "" never answers.
Events: REGISTERED, INVITE-RECEIVED, ACK-RECEIVED, BYE-RECEIVED, CANCEL-RECEIVED,
RESPONSE <code> <reason>, CALL-OK, BYE-OK, ERROR <why>.
"""
import argparse, hashlib, re, socket, ssl, sys, time, uuid

def log(*a):
    print(*a)
    sys.stdout.flush()

class Conn:
    def __init__(self, a):
        self.a = a
        self.proto = a.proto
        fam = socket.AF_INET6 if ":" in a.host else socket.AF_INET
        if a.proto == "udp":
            self.s = socket.socket(fam, socket.SOCK_DGRAM)
            self.s.bind((a.host, 0))
        else:
            raw = socket.create_connection((a.host, a.port), timeout=5)
            if a.proto == "tls":
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname = False
                if a.ca:
                    ctx.load_verify_locations(a.ca)
                    ctx.verify_mode = ssl.CERT_REQUIRED
                else:
                    ctx.verify_mode = ssl.CERT_NONE
                if a.cert:
                    ctx.load_cert_chain(a.cert, a.key)
                raw = ctx.wrap_socket(raw, server_hostname=None)
            self.s = raw
        self.local_port = self.s.getsockname()[1]
        self.buf = b""

    def send(self, text):
        data = text.encode() if isinstance(text, str) else text
        if self.proto == "udp":
            self.s.sendto(data, self.via_destination(data) or (self.a.host, self.a.port))
        else:
            self.s.sendall(data)

    @staticmethod
    def via_destination(data):
        """A response over UDP goes where its top Via says (RFC 3261 18.2.2, RFC 3581)."""
        if not data.startswith(b"SIP/2.0"):
            return None
        for line in data.split(b"\r\n")[1:]:
            name, _, value = line.decode("utf-8", "replace").partition(":")
            if name.strip().lower() in ("via", "v"):
                first = value.split(",")[0].strip()
                parts = first.split(";")
                sent_by = parts[0].split()[-1]
                host, _, port = sent_by.rpartition(":") if sent_by.count(":") == 1 else (sent_by, "", "")
                params = dict((p.split("=", 1) + [""])[:2] for p in parts[1:])
                host = params.get("received") or host
                port = params.get("rport") or port or "5060"
                return (host, int(port))
        return None

    def recv(self, timeout):
        """Next message (bytes) or None on timeout."""
        deadline = time.time() + timeout
        while True:
            if self.proto != "udp":
                m = self._cut()
                if m is not None:
                    return m
            left = deadline - time.time()
            if left <= 0:
                return None
            self.s.settimeout(left)
            try:
                if self.proto == "udp":
                    data, _ = self.s.recvfrom(65535)
                    return data
                data = self.s.recv(65535)
                if not data:
                    log("ERROR connection closed")
                    return None
                self.buf += data
            except (socket.timeout, ssl.SSLError) as e:
                if isinstance(e, ssl.SSLError):
                    log("ERROR", e)
                return None

    def _cut(self):
        while self.buf.startswith(b"\r\n"):
            self.buf = self.buf[2:]
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        length = 0
        for line in self.buf[:end].decode("utf-8", "replace").split("\r\n")[1:]:
            n, _, v = line.partition(":")
            if n.strip().lower() in ("content-length", "l"):
                length = int(v.strip())
        if len(self.buf) < end + 4 + length:
            return None
        m = self.buf[:end + 4 + length]
        self.buf = self.buf[end + 4 + length:]
        return m

class Msg:
    def __init__(self, raw):
        text = raw.decode("utf-8", "replace")
        head, _, self.body = text.partition("\r\n\r\n")
        lines = head.split("\r\n")
        self.first = lines[0]
        self.headers = []
        for l in lines[1:]:
            if l[:1] in (" ", "\t") and self.headers:
                self.headers[-1] = (self.headers[-1][0], self.headers[-1][1] + " " + l.strip())
            else:
                n, _, v = l.partition(":")
                self.headers.append((n.strip(), v.strip()))
    compact = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length"}
    def all(self, name):
        name = name.lower()
        return [v for n, v in self.headers if self.compact.get(n.lower(), n.lower()) == name]
    def get(self, name):
        v = self.all(name)
        return v[0] if v else None
    @property
    def is_request(self):
        return not self.first.startswith("SIP/2.0")
    @property
    def method(self):
        return self.first.split(" ")[0] if self.is_request else self.get("cseq").split()[1]
    @property
    def status(self):
        return int(self.first.split(" ")[1])

def tag():
    return uuid.uuid4().hex[:10]

def response(req, code, reason, to_tag=None, extra="", contact=None):
    lines = ["SIP/2.0 %d %s" % (code, reason)]
    for v in req.all("via"):
        lines.append("Via: " + v)
    for v in req.all("record-route"):
        lines.append("Record-Route: " + v)
    lines.append("From: " + req.get("from"))
    to = req.get("to")
    if to_tag and ";tag=" not in to:
        to += ";tag=" + to_tag
    lines.append("To: " + to)
    lines.append("Call-ID: " + req.get("call-id"))
    lines.append("CSeq: " + req.get("cseq"))
    if contact:
        lines.append("Contact: " + contact)
    if extra:
        lines.append(extra)
    lines.append("Content-Length: 0")
    return "\r\n".join(lines) + "\r\n\r\n"

def authorization(m, method, uri, user, password):
    """The Authorization/Proxy-Authorization line answering the challenges of
    response m, or None when none can be answered."""
    name = "Authorization" if m.status == 401 else "Proxy-Authorization"
    for value in m.all("www-authenticate" if m.status == 401 else "proxy-authenticate"):
        params = {}
        for mm in re.finditer(r'([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]+))', value):
            params[mm.group(1).lower()] = mm.group(2) if mm.group(2) is not None else mm.group(3)
        alg = params.get("algorithm", "MD5").upper()
        if alg not in ("MD5", "SHA-256"):
            continue
        H = lambda x: (hashlib.sha256 if alg == "SHA-256" else hashlib.md5)(x.encode()).hexdigest()
        realm, nonce = params.get("realm", ""), params.get("nonce", "")
        ha1 = H("%s:%s:%s" % (user, realm, password))
        ha2 = H("%s:%s" % (method, uri))
        if "auth" in [q.strip() for q in params.get("qop", "").split(",")]:
            cnonce = uuid.uuid4().hex[:12]
            resp = H("%s:%s:00000001:%s:auth:%s" % (ha1, nonce, cnonce, ha2))
            extra = ', qop=auth, nc=00000001, cnonce="%s"' % cnonce
        else:
            resp = H("%s:%s:%s" % (ha1, nonce, ha2))
            extra = ""
        return '%s: Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s", algorithm=%s%s' % (
            name, user, realm, nonce, uri, resp, alg, extra)
    return None

def via(c, branch):
    return "Via: SIP/2.0/%s 127.0.0.1:%d;branch=%s;rport" % (c.proto.upper(), c.local_port, branch)

def phone(a):
    c = Conn(a)
    contact = "<sip:%s@127.0.0.1:%d;transport=%s>" % (a.user, c.local_port, c.proto)
    call_id = uuid.uuid4().hex
    ftag = tag()
    def reg(cseq, auth):
        return ("REGISTER sip:%s SIP/2.0\r\n%s\r\nMax-Forwards: 70\r\nFrom: <sip:%s@%s>;tag=%s\r\nTo: <sip:%s@%s>\r\n"
                "Call-ID: %s\r\nCSeq: %d REGISTER\r\nContact: %s\r\n%sExpires: %d\r\nContent-Length: 0\r\n\r\n"
                % (a.domain, via(c, "z9hG4bK" + tag()), a.user, a.domain, ftag, a.user, a.domain, call_id, cseq, contact,
                   auth + "\r\n" if auth else "", a.expires))
    c.send(reg(1, None))
    answered = False
    while True:
        m = c.recv(5)
        if m is None:
            log("ERROR no answer to REGISTER")
            return 1
        m = Msg(m)
        if not m.is_request and m.status >= 200:
            if m.status in (401, 407) and a.password and not answered:
                line = authorization(m, "REGISTER", "sip:%s" % a.domain, a.user, a.password)
                if line:
                    answered = True
                    c.send(reg(2, line))
                    continue
            if m.status != 200:
                log("ERROR REGISTER answered", m.first)
                return 1
            log("REGISTERED", m.get("contact"))
            break
    my_tag = tag()
    deadline = time.time() + a.duration
    while time.time() < deadline:
        raw = c.recv(max(0.1, deadline - time.time()))
        if raw is None:
            continue
        m = Msg(raw)
        if not m.is_request:
            continue
        meth = m.method
        if meth == "INVITE":
            log("INVITE-RECEIVED", m.first, "via", len(m.all("via")), "rr", len(m.all("record-route")))
            if a.answer == "silent":
                continue
            c.send(response(m, 180, "Ringing", my_tag, contact=contact))
            if a.answer == "ring":
                pending_invite = m
                continue
            code = int(a.answer)
            c.send(response(m, code, "OK" if code == 200 else "Busy Here", my_tag, contact=contact))
        elif meth == "ACK":
            log("ACK-RECEIVED", m.first)
        elif meth == "BYE":
            log("BYE-RECEIVED", m.first)
            c.send(response(m, 200, "OK", my_tag))
        elif meth == "CANCEL":
            log("CANCEL-RECEIVED", m.first)
            c.send(response(m, 200, "OK", my_tag))
            c.send(response(pending_invite, 487, "Request Terminated", my_tag))
        else:
            c.send(response(m, 200, "OK", my_tag))
    return 0

def call(a):
    c = Conn(a)
    call_id = uuid.uuid4().hex
    ftag = tag()
    branch = "z9hG4bK" + tag()
    ruri = "%s:%s@%s" % (a.scheme, a.to, a.domain)
    sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    contact = "<sip:caller@127.0.0.1:%d;transport=%s>" % (c.local_port, c.proto)
    cseq = 1
    def invite(auth):
        return ("INVITE %s SIP/2.0\r\n%s\r\nMax-Forwards: 70\r\nFrom: <sip:caller@%s>;tag=%s\r\nTo: <%s>\r\n"
                "Call-ID: %s\r\nCSeq: %d INVITE\r\nContact: %s\r\n%sContent-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s"
                % (ruri, via(c, branch), a.domain, ftag, ruri, call_id, cseq, contact, auth + "\r\n" if auth else "", len(sdp), sdp))
    c.send(invite(None))
    answered = False
    final = None
    deadline = time.time() + a.timeout
    while time.time() < deadline:
        raw = c.recv(max(0.1, deadline - time.time()))
        if raw is None:
            continue
        m = Msg(raw)
        if m.is_request:
            continue
        log("RESPONSE", m.status, m.first.split(" ", 2)[2] if m.first.count(" ") >= 2 else "")
        if m.method == "INVITE" and m.status == 180 and a.cancel:
            if a.cancel_when:
                import os
                while not os.path.exists(a.cancel_when) and time.time() < deadline:
                    time.sleep(0.05)
                log("CANCELLING")
            c.send(("CANCEL %s SIP/2.0\r\n%s\r\nMax-Forwards: 70\r\nFrom: <sip:caller@%s>;tag=%s\r\nTo: <%s>\r\n"
                    "Call-ID: %s\r\nCSeq: %d CANCEL\r\nContent-Length: 0\r\n\r\n") % (ruri, via(c, branch), a.domain, ftag, ruri, call_id, cseq))
        if m.method == "INVITE" and m.status in (401, 407) and a.password and not answered:
            line = authorization(m, "INVITE", ruri, "caller", a.password)
            if line:
                answered = True
                # ACK the challenge (same branch), then a new INVITE with credentials.
                c.send(("ACK %s SIP/2.0\r\n%s\r\nMax-Forwards: 70\r\nFrom: <sip:caller@%s>;tag=%s\r\nTo: %s\r\n"
                        "Call-ID: %s\r\nCSeq: %d ACK\r\nContent-Length: 0\r\n\r\n") % (ruri, via(c, branch), a.domain, ftag, m.get("to"), call_id, cseq))
                cseq += 1
                branch = "z9hG4bK" + tag()
                c.send(invite(line))
                continue
        if m.method == "INVITE" and m.status >= 200:
            final = m
            break
    if final is None:
        log("ERROR no final response")
        return 1
    to = final.get("to")
    if final.status >= 300:
        # hop-by-hop ACK, same branch
        c.send(("ACK %s SIP/2.0\r\n%s\r\nMax-Forwards: 70\r\nFrom: <sip:caller@%s>;tag=%s\r\nTo: %s\r\n"
                "Call-ID: %s\r\nCSeq: %d ACK\r\nContent-Length: 0\r\n\r\n") % (ruri, via(c, branch), a.domain, ftag, to, call_id, cseq))
        return 0 if a.expect == final.status else 1
    routes = list(reversed(final.all("record-route")))
    target = final.get("contact").strip("<>").split(">")[0]
    route_lines = "".join("Route: %s\r\n" % r for r in routes)
    ack = ("ACK %s SIP/2.0\r\n%s\r\n%sMax-Forwards: 70\r\nFrom: <sip:caller@%s>;tag=%s\r\nTo: %s\r\n"
           "Call-ID: %s\r\nCSeq: %d ACK\r\nContent-Length: 0\r\n\r\n") % (target, via(c, "z9hG4bK" + tag()), route_lines, a.domain, ftag, to, call_id, cseq)
    c.send(ack)
    log("CALL-OK routes", len(routes))
    time.sleep(0.2)
    bye = ("BYE %s SIP/2.0\r\n%s\r\n%sMax-Forwards: 70\r\nFrom: <sip:caller@%s>;tag=%s\r\nTo: %s\r\n"
           "Call-ID: %s\r\nCSeq: %d BYE\r\nContent-Length: 0\r\n\r\n") % (target, via(c, "z9hG4bK" + tag()), route_lines, a.domain, ftag, to, call_id, cseq + 1)
    c.send(bye)
    deadline = time.time() + a.timeout
    while time.time() < deadline:
        raw = c.recv(max(0.1, deadline - time.time()))
        if raw is None:
            continue
        m = Msg(raw)
        if not m.is_request and m.method == "BYE":
            log("BYE-OK" if m.status == 200 else "ERROR BYE %d" % m.status)
            return 0 if m.status == 200 else 1
    log("ERROR no answer to BYE")
    return 1

def register(a):
    c = Conn(a)
    if a.one_line:
        contacts = "Contact: " + ", ".join("<sip:%s@127.0.%d.%d:%d>" % (a.user, i // 250, i % 250 + 1, 5000 + i) for i in range(a.contacts)) + "\r\n"
    else:
        contacts = "".join("Contact: <sip:%s@127.0.0.%d:%d>\r\n" % (a.user, i + 1, 5000 + i) for i in range(a.contacts))
    ftag, call_id = tag(), uuid.uuid4().hex
    def reg(cseq, auth):
        return ("REGISTER sip:%s SIP/2.0\r\n%s\r\nMax-Forwards: 70\r\nFrom: <sip:%s@%s>;tag=%s\r\nTo: <sip:%s@%s>\r\n"
                "Call-ID: %s\r\nCSeq: %d REGISTER\r\n%s%sExpires: %d\r\nContent-Length: 0\r\n\r\n"
                % (a.domain, via(c, "z9hG4bK" + tag()), a.user, a.domain, ftag, a.user, a.domain, call_id, cseq, contacts,
                   auth + "\r\n" if auth else "", a.expires))
    c.send(reg(1, None))
    m = c.recv(5)
    if m is None:
        log("ERROR no answer")
        return 1
    m = Msg(m)
    if m.status in (401, 407) and a.password:
        line = authorization(m, "REGISTER", "sip:%s" % a.domain, a.user, a.password)
        if line:
            c.send(reg(2, line))
            m = c.recv(5)
            if m is None:
                log("ERROR no answer")
                return 1
            m = Msg(m)
    log("RESPONSE", m.first)
    for v in m.all("contact"):
        log("CONTACT", v)
    return 0

def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["phone", "call", "register"])
    p.add_argument("--proto", default="udp")
    p.add_argument("--host", default="127.0.0.1", help="where the proxy listens")
    p.add_argument("--domain", default="localhost", help="the domain in URIs (the proxy's alias)")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ca"); p.add_argument("--cert"); p.add_argument("--key")
    p.add_argument("--user", default="alice")
    p.add_argument("--to", default="alice")
    p.add_argument("--answer", default="200")
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--timeout", type=float, default=10)
    p.add_argument("--expires", type=int, default=300)
    p.add_argument("--contacts", type=int, default=1)
    p.add_argument("--one-line", action="store_true", help="all contacts in one Contact header")
    p.add_argument("--cancel", action="store_true")
    p.add_argument("--cancel-when", help="with --cancel: wait for this file to exist before sending CANCEL")
    p.add_argument("--scheme", default="sip", help="sip or sips for the called URI")
    p.add_argument("--expect", type=int, default=200)
    p.add_argument("--password", default="test-password", help="answer 401/407 with this password (empty: never)")
    a = p.parse_args()
    return {"phone": phone, "call": call, "register": register}[a.mode](a)

if __name__ == "__main__":
    sys.exit(main())
