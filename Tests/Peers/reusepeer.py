#!/usr/bin/env python3
"""A TLS SIP peer for the RFC 5923 reuse test: one local address
127.0.0.1:PORT that both listens for TLS (with --cert, e.g. a certificate
for b.example.com) and has connected out to the proxy's TLS listener (with
the client certificate --client-cert, e.g. for a.example.com). Both
sockets set SO_REUSEADDR and SO_REUSEPORT so they can share the port.

Usage: reusepeer.py --port P --proxy-port Q --cert C --key K
         --client-cert C2 --client-key K2 --ca CA [--duration S]
It sends OPTIONS over its connection to the proxy and waits for the answer,
then prints READY. Afterwards, one line per event:
  ACCEPTED L<n> sni=<name>            a connection the proxy opened to us
  REQUEST <conn> <request line>       conn: C (ours to the proxy) or L<n>
  HELD <conn> <request line>          a request for user "held", not answered yet
  CLOSED <conn>
Every request is answered 200 OK on the connection it came on; one whose
Request-URI user is "held" only after the peer gets SIGUSR1. A connection
the proxy ends is closed at once."""
import argparse, signal, socket, ssl, sys, threading, time, uuid

out_lock = threading.Lock()
release = threading.Event()

def log(*a):
    with out_lock:
        print(*a)
        sys.stdout.flush()

def split(buf):
    """One complete message off the front of buf: (head lines, rest) or None."""
    while buf.startswith(b"\r\n"):
        buf = buf[2:]
    if b"\r\n\r\n" not in buf:
        return None, buf
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("utf-8", "replace").split("\r\n")
    length = 0
    for l in lines[1:]:
        n, _, v = l.partition(":")
        if n.strip().lower() in ("content-length", "l"):
            length = int(v.strip())
    if len(rest) < length:
        return None, buf
    return lines, rest[length:]

def ok(lines):
    keep = [l for l in lines[1:] if l.split(":")[0].strip().lower() in ("via", "v", "from", "f", "to", "t", "call-id", "i", "cseq", "record-route")]
    return ("SIP/2.0 200 OK\r\n" + "\r\n".join(keep) + "\r\nContent-Length: 0\r\n\r\n").encode()

def serve(conn, label, buf=b""):
    held = []
    # One thread reads and writes the connection: reads time out now and
    # then so held answers go out once released.
    conn.settimeout(0.05)
    try:
        while True:
            if held and release.is_set():
                for r in held:
                    conn.sendall(r)
                held = []
            lines, buf = split(buf)
            if lines is None:
                try:
                    data = conn.recv(65535)
                except (socket.timeout, ssl.SSLWantReadError):
                    continue
                if not data:
                    break
                buf += data
                continue
            if lines[0].startswith("SIP/2.0"):
                log("RESPONSE", label, lines[0])
                continue
            if lines[0].split(" ")[1].startswith("sip:held@"):
                log("HELD", label, lines[0])
                held.append(ok(lines))
                continue
            log("REQUEST", label, lines[0])
            if lines[0].startswith("ACK"):
                continue
            conn.sendall(ok(lines))
    except Exception as e:
        log("ERROR", label, type(e).__name__, str(e).replace("\n", " "))
    log("CLOSED", label)
    conn.close()

def shared_socket(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", port))
    return s

def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--proxy-port", type=int, required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--client-cert", required=True)
    p.add_argument("--client-key", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--duration", type=float, default=30)
    a = p.parse_args()
    signal.signal(signal.SIGUSR1, lambda *_: release.set())
    # A parent may have left SIGUSR1 blocked (the mask is inherited).
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})

    # The listener first, then the outgoing connection from the same port.
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(a.cert, a.key)
    names = {}
    server_ctx.sni_callback = lambda sslobj, name, c: names.__setitem__(id(sslobj), name)
    srv = shared_socket(a.port)
    srv.listen(8)
    srv.settimeout(0.2)

    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.load_verify_locations(a.ca)
    client_ctx.load_cert_chain(a.client_cert, a.client_key)
    raw = shared_socket(a.port)
    raw.settimeout(10)
    raw.connect(("127.0.0.1", a.proxy_port))
    conn = client_ctx.wrap_socket(raw)
    branch = "z9hG4bK-" + uuid.uuid4().hex[:12]
    conn.sendall(("OPTIONS sip:127.0.0.1:%d;transport=tls SIP/2.0\r\n"
                  "Via: SIP/2.0/TLS 127.0.0.1:%d;branch=%s\r\n"
                  "Max-Forwards: 70\r\nFrom: <sip:peer@a.example.com>;tag=%s\r\nTo: <sip:127.0.0.1>\r\n"
                  "Call-ID: %s@a.example.com\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
                  % (a.proxy_port, a.port, branch, uuid.uuid4().hex[:8], uuid.uuid4().hex)).encode())
    buf = b""
    while True:
        lines, buf = split(buf)
        if lines is not None:
            break
        data = conn.recv(65535)
        if not data:
            log("ERROR C closed before the OPTIONS answer")
            return 1
        buf += data
    log("RESPONSE", "C", lines[0])
    threading.Thread(target=serve, args=(conn, "C", buf), daemon=True).start()
    log("READY", a.port)

    end = time.time() + a.duration
    n = 0
    while time.time() < end:
        try:
            s, _ = srv.accept()
        except socket.timeout:
            continue
        n += 1
        label = "L%d" % n
        try:
            s.settimeout(10)
            c = server_ctx.wrap_socket(s, server_side=True)
        except Exception as e:
            log("HANDSHAKE-FAILED", label, type(e).__name__, str(e).replace("\n", " "))
            continue
        log("ACCEPTED", label, "sni=" + str(names.get(id(c))))
        threading.Thread(target=serve, args=(c, label), daemon=True).start()
    return 0

if __name__ == "__main__":
    sys.exit(main())
