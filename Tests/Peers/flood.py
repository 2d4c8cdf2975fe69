#!/usr/bin/env python3
"""Attacking peers for the hardening tests (loopback only).

  flood.py hold --port P --count N [--source IP] [--tls] [--probe-source IP2] [--probe-tls] [--stay S]
      Opens N TCP connections from IP (default 127.0.0.1) and sends nothing
      (on a TLS listener: handshakes that never start; with --tls each
      completes its handshake first). After a second
      prints HELD <k>, the number the server kept open. With --probe-source,
      then connects from IP2, sends OPTIONS (over TLS with --probe-tls) and
      prints PROBE <status code> or PROBE-FAILED <reason>. Prints HELD again
      after the probe, then (after --stay seconds) closes everything.
  flood.py pings --port P [--tls] [--limit S]
      Streams CRLFCRLF keep-alives and never reads; prints
      CLOSED <octets sent> when the server closes, or STILL-OPEN.
  flood.py partial --port P [--limit S] [--crlf]
      Sends a request whose Content-Length promises a body that never
      comes (with --crlf: one CRLF keep-alive); prints CLOSED when the
      server closes, or STILL-OPEN.
"""
import argparse, socket, ssl, sys, time, uuid


def options(proto):
    return ("OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/%s 127.0.0.1:9;branch=z9hG4bK%s;rport\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: %s\r\n"
            "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n" % (proto, uuid.uuid4().hex, uuid.uuid4().hex)).encode()


def connect(port, source):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((source, 0))
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    return s


def tls_wrap(s):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx.wrap_socket(s)


def still_open(s):
    if isinstance(s, ssl.SSLSocket):
        # No MSG_PEEK on a TLS socket: a non-blocking read tells.
        s.setblocking(False)
        try:
            return len(s.recv(1)) > 0
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return True
        except (OSError, ssl.SSLError):
            return False
        finally:
            s.setblocking(True)
    s.setblocking(False)
    try:
        return len(s.recv(1, socket.MSG_PEEK)) > 0
    except (BlockingIOError, InterruptedError):
        return True
    except OSError:
        return False
    finally:
        s.setblocking(True)


def probe(port, source, tls):
    try:
        s = connect(port, source)
        if tls:
            s = tls_wrap(s)
        s.sendall(options("TLS" if tls else "TCP"))
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                return "PROBE-FAILED closed"
            data += chunk
        return "PROBE " + data.split(b" ", 2)[1].decode()
    except (OSError, ssl.SSLError) as e:
        return "PROBE-FAILED %s" % type(e).__name__


def hold(a):
    held = []
    for _ in range(a.count):
        try:
            s = connect(a.port, a.source)
            held.append(tls_wrap(s) if a.tls else s)
        except (OSError, ssl.SSLError):
            pass
    time.sleep(1)
    print("HELD %d" % sum(1 for s in held if still_open(s)), flush=True)
    if a.probe_source:
        print(probe(a.port, a.probe_source, a.probe_tls), flush=True)
        print("HELD %d" % sum(1 for s in held if still_open(s)), flush=True)
    time.sleep(a.stay)
    for s in held:
        s.close()


def pings(a):
    s = connect(a.port, "127.0.0.1")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    if a.tls:
        s = tls_wrap(s)
    s.settimeout(0.5)
    burst = b"\r\n\r\n" * 4096
    sent = 0
    start = time.time()
    while time.time() - start < a.limit:
        try:
            s.sendall(burst)
            sent += len(burst)
        except socket.timeout:
            continue
        except (OSError, ssl.SSLError):
            print("CLOSED %d" % sent)
            return
    print("STILL-OPEN %d" % sent)


def partial(a):
    s = connect(a.port, "127.0.0.1")
    if a.crlf:
        s.sendall(b"\r\n")
    else:
        m = options("TCP").replace(b"Content-Length: 0", b"Content-Length: 100")
        s.sendall(m + b"only part of the body")
    s.settimeout(a.limit)
    try:
        data = s.recv(4096)
        print("CLOSED" if not data else "DATA %r" % data[:40])
    except socket.timeout:
        print("STILL-OPEN")
    except OSError:
        print("CLOSED")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["hold", "pings", "partial"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--source", default="127.0.0.1")
    p.add_argument("--probe-source")
    p.add_argument("--probe-tls", action="store_true")
    p.add_argument("--tls", action="store_true")
    p.add_argument("--crlf", action="store_true", help="partial: send one CRLF keep-alive instead")
    p.add_argument("--limit", type=float, default=20)
    p.add_argument("--stay", type=float, default=0, help="hold: seconds to keep the connections before closing them")
    a = p.parse_args()
    {"hold": hold, "pings": pings, "partial": partial}[a.mode](a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
