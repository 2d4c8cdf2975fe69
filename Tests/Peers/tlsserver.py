#!/usr/bin/env python3
"""A TLS SIP peer for outbound tests: listens with a certificate, accepts
one or more connections, answers every request with 200 OK and prints what
it saw. Usage: tlsserver.py --port P --cert C --key K [--ca CA --require-client-cert] [--duration S]
Prints READY, then per connection: CONNECTED <tls version> client-cert=<subject or none>,
and per request: REQUEST <request line>."""
import argparse, socket, ssl, sys, threading, time

def log(*a):
    print(*a)
    sys.stdout.flush()

def serve(conn):
    buf = b""
    try:
        while True:
            data = conn.recv(65535)
            if not data:
                return
            buf += data
            while b"\r\n\r\n" in buf:
                head, _, rest = buf.partition(b"\r\n\r\n")
                lines = head.decode("utf-8", "replace").split("\r\n")
                length = 0
                for l in lines[1:]:
                    n, _, v = l.partition(":")
                    if n.strip().lower() in ("content-length", "l"):
                        length = int(v.strip())
                if len(rest) < length:
                    break
                buf = rest[length:]
                log("REQUEST", lines[0])
                if lines[0].startswith("SIP/2.0") or lines[0].startswith("ACK"):
                    continue
                keep = [l for l in lines[1:] if l.split(":")[0].strip().lower() in ("via", "v", "from", "f", "to", "t", "call-id", "i", "cseq", "record-route")]
                resp = "SIP/2.0 200 OK\r\n" + "\r\n".join(keep) + "\r\nContent-Length: 0\r\n\r\n"
                conn.sendall(resp.encode())
    except Exception as e:
        log("ERROR", type(e).__name__, e)

def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--ca")
    p.add_argument("--require-client-cert", action="store_true")
    p.add_argument("--duration", type=float, default=15)
    a = p.parse_args()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.cert, a.key)
    if a.ca:
        ctx.load_verify_locations(a.ca)
    if a.require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
    names = {}
    def on_sni(sslobj, name, c):
        names[id(sslobj)] = name
    ctx.sni_callback = on_sni
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", a.port))
    srv.listen(8)
    srv.settimeout(0.2)
    log("READY")
    end = time.time() + a.duration
    while time.time() < end:
        try:
            raw, _ = srv.accept()
        except socket.timeout:
            continue
        try:
            conn = ctx.wrap_socket(raw, server_side=True)
        except Exception as e:
            log("HANDSHAKE-FAILED", type(e).__name__, str(e).replace("\n", " "))
            continue
        cert = conn.getpeercert()
        subject = "none"
        if cert:
            subject = ",".join("%s=%s" % kv for rdn in cert.get("subject", ()) for kv in rdn)
        log("CONNECTED", conn.version(), "client-cert=" + subject, "sni=" + str(names.get(id(conn))))
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
    return 0

if __name__ == "__main__":
    sys.exit(main())
