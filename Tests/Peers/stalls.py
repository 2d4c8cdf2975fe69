#!/usr/bin/env python3
"""Misbehaving peers for timeout tests.
  stalls.py silent --port P           connect and send nothing; print CLOSED <seconds> when the server closes
  stalls.py noread --port P [--tls]   send many OPTIONS and never read; print CLOSED <seconds> when the server closes
"""
import argparse, socket, ssl, sys, time, uuid

def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tls", action="store_true")
    p.add_argument("--limit", type=float, default=20)
    p.add_argument("--count", type=int, default=0, help="noread: stop sending requests after this many")
    a = p.parse_args()
    s = socket.create_connection(("127.0.0.1", a.port))
    start = time.time()
    if a.mode == "silent":
        s.settimeout(a.limit)
        try:
            data = s.recv(1)
            print("CLOSED %.1f" % (time.time() - start) if not data else "DATA")
        except socket.timeout:
            print("STILL-OPEN")
        except ConnectionResetError:
            print("CLOSED %.1f" % (time.time() - start))
        return 0
    # noread: make the server's replies pile up.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    if a.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s = ctx.wrap_socket(s)
    s.settimeout(0.5)
    pad = "X-Pad: " + "x" * 900 + "\r\n"
    sent = 0
    while time.time() - start < a.limit:
        if a.count and sent >= a.count:
            # Stop sending requests, never read; a CRLF now and then shows when the server closed.
            time.sleep(0.3)
            try:
                s.sendall(b"\r\n")
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
                print("CLOSED %.1f after %d requests" % (time.time() - start, sent))
                return 0
            continue
        m = ("OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK%s\r\nMax-Forwards: 70\r\n"
             "From: <sip:a@b>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: %s\r\nCSeq: 1 OPTIONS\r\n%sContent-Length: 0\r\n\r\n"
             % (uuid.uuid4().hex, uuid.uuid4().hex, pad))
        try:
            s.sendall(m.encode())
            sent += 1
        except socket.timeout:
            continue
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            print("CLOSED %.1f after %d requests" % (time.time() - start, sent))
            return 0
    print("STILL-OPEN after %d requests" % sent)
    return 0

if __name__ == "__main__":
    sys.exit(main())
