#!/usr/bin/env python3
"""An INVITE storm over TCP for the transaction-cap test (loopback only).

Usage: invitestorm.py --port P --count N [--source 127.0.0.1] [--wait 2]

Sends N INVITEs, each a new transaction (new Call-ID and branch), over one
TCP connection from --source (TCP: none is lost on the way, so the counts
are exact), while a thread reads the answers. After the answers have been
quiet for --wait seconds it prints one line per status seen,
STATUS <code> <count>, and RETRY-AFTER <count> for the 503s carrying a
Retry-After header."""
import argparse, socket, threading, time, uuid

p = argparse.ArgumentParser()
p.add_argument("--port", type=int, required=True)
p.add_argument("--count", type=int, required=True)
p.add_argument("--source", default="127.0.0.1")
p.add_argument("--wait", type=float, default=2.0)
a = p.parse_args()

s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind((a.source, 0))
s.connect(("127.0.0.1", a.port))
local = s.getsockname()[1]
statuses = {}
retry_after = 0
lock = threading.Lock()
last = [time.monotonic()]


def reader():
    global retry_after
    s.settimeout(0.2)
    buf = b""
    while True:
        try:
            data = s.recv(65536)
            if not data:
                return
            buf += data
        except socket.timeout:
            if time.monotonic() - last[0] > a.wait:
                return
            continue
        # Responses made by the proxy carry no body (Content-Length: 0).
        while b"\r\n\r\n" in buf:
            head, _, buf = buf.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            parts = lines[0].split(b" ")
            if len(parts) < 2 or parts[0] != b"SIP/2.0":
                continue
            code = int(parts[1])
            with lock:
                statuses[code] = statuses.get(code, 0) + 1
                if code == 503 and any(l.lower().startswith(b"retry-after:") for l in lines[1:]):
                    retry_after += 1
                last[0] = time.monotonic()


t = threading.Thread(target=reader)
t.start()
for i in range(a.count):
    call = uuid.uuid4().hex
    msg = ("INVITE sip:nobody@blackhole.invalid SIP/2.0\r\n"
           "Via: SIP/2.0/TCP %s:%d;branch=z9hG4bK%s;rport\r\nMax-Forwards: 70\r\n"
           "From: <sip:storm@%s>;tag=%s\r\nTo: <sip:nobody@blackhole.invalid>\r\nCall-ID: %s\r\n"
           "CSeq: 1 INVITE\r\nContact: <sip:storm@%s:%d;transport=tcp>\r\nContent-Length: 0\r\n\r\n"
           % (a.source, local, uuid.uuid4().hex, a.source, call[:8], call, a.source, local))
    s.sendall(msg.encode())
    with lock:
        last[0] = time.monotonic()
t.join()
for code in sorted(statuses):
    print("STATUS %d %d" % (code, statuses[code]))
print("RETRY-AFTER %d" % retry_after)
