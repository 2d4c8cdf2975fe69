#!/usr/bin/env python3
"""Sends N OPTIONS over UDP from one socket (IPv4 or IPv6 loopback) as fast as
it can, then prints one line per response: RESPONSE <code> <reason>.

Usage: udpflood.py --host 127.0.0.1|::1 --port P [--count N] [--wait 2]
"""
import argparse, socket, uuid

p = argparse.ArgumentParser()
p.add_argument("--host", default="127.0.0.1")
p.add_argument("--port", type=int, required=True)
p.add_argument("--count", type=int, default=10)
p.add_argument("--wait", type=float, default=2.0)
a = p.parse_args()
fam = socket.AF_INET6 if ":" in a.host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.bind((a.host, 0))
local = s.getsockname()[1]
via_host = "[%s]" % a.host if fam == socket.AF_INET6 else a.host
for i in range(a.count):
    msg = ("OPTIONS sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP %s:%d;branch=z9hG4bK-%s;rport\r\nMax-Forwards: 70\r\n"
           "From: <sip:probe@elsewhere.example>;tag=%s\r\nTo: <sip:localhost>\r\nCall-ID: %s\r\nCSeq: 1 OPTIONS\r\n"
           "Content-Length: 0\r\n\r\n" % (via_host, local, uuid.uuid4().hex[:12], uuid.uuid4().hex[:8], uuid.uuid4().hex))
    s.sendto(msg.encode(), (a.host, a.port))
s.settimeout(a.wait)
try:
    while True:
        data, _ = s.recvfrom(65535)
        first = data.split(b"\r\n", 1)[0].decode("utf-8", "replace")
        print("RESPONSE %s" % first.split(" ", 1)[1])
except socket.timeout:
    pass
