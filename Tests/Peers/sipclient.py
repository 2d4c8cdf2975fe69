#!/usr/bin/env python3
"""A small SIP client for SwiftSER's tests: sends messages over UDP, TCP or
TLS (Python's ssl module) and prints what comes back.

Usage: sipclient.py --proto tls --host 127.0.0.1 --port 5061 [--ca CA]
         [--cert C --key K] [--sni NAME] [--tls-version 1.2|1.3]
         [--file MSG ...] [--options] [--wait 3] [--expect N]
Output, one line each: HANDSHAKE ok <version> <cipher> | HANDSHAKE-FAILED <reason>
then for each response: RESPONSE <status line>, and for each request that
arrives: REQUEST <request line>. Exit 0 when the connection worked.
"""
import argparse, socket, ssl, sys, time, uuid

def options_message(proto, host, port, local_port):
    if ":" in host:
        host = "[%s]" % host
    branch = "z9hG4bK-" + uuid.uuid4().hex[:12]
    return ("OPTIONS sip:%s:%d;transport=%s SIP/2.0\r\n"
            "Via: SIP/2.0/%s 127.0.0.1:%d;branch=%s;rport\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:probe@localhost>;tag=%s\r\nTo: <sip:%s>\r\n"
            "Call-ID: %s@localhost\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            % (host, port, proto, proto.upper(), local_port, branch, uuid.uuid4().hex[:8], host, uuid.uuid4().hex)).encode()

def split_messages(data):
    """Cuts a byte stream into messages by Content-Length; returns (msgs, rest)."""
    msgs = []
    while True:
        while data.startswith(b"\r\n"):
            data = data[2:]
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return msgs, data
        head = data[:end].decode("utf-8", "replace")
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() in ("content-length", "l"):
                length = int(value.strip())
        total = end + 4 + length
        if len(data) < total:
            return msgs, data
        msgs.append(data[:total])
        data = data[total:]

def main():
    p = argparse.ArgumentParser()
    p.add_argument("--proto", default="udp")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ca")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--sni")
    p.add_argument("--tls-version")
    p.add_argument("--file", action="append", default=[])
    p.add_argument("--options", action="store_true")
    p.add_argument("--wait", type=float, default=3.0)
    p.add_argument("--expect", type=int, default=1, help="stop after this many responses")
    a = p.parse_args()

    family = socket.AF_INET6 if ":" in a.host else socket.AF_INET
    if a.proto == "udp":
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.bind((a.host, 0))
        s.settimeout(a.wait)
        local_port = s.getsockname()[1]
        send = lambda b: s.sendto(b, (a.host, a.port))
    else:
        raw = socket.create_connection((a.host, a.port), timeout=a.wait)
        local_port = raw.getsockname()[1]
        s = raw
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
            if a.tls_version == "1.2":
                ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            elif a.tls_version == "1.3":
                ctx.minimum_version = ssl.TLSVersion.TLSv1_3
            elif a.tls_version == "1.1":
                ctx.minimum_version = ssl.TLSVersion.TLSv1_1
                ctx.maximum_version = ssl.TLSVersion.TLSv1_1
                ctx.set_ciphers("ALL:@SECLEVEL=0")
            try:
                s = ctx.wrap_socket(raw, server_hostname=a.sni or None)
            except Exception as e:
                print("HANDSHAKE-FAILED", type(e).__name__, str(e).replace("\n", " "))
                return 2
            print("HANDSHAKE ok", s.version(), s.cipher()[0])
        send = s.sendall

    # {LOCAL_PORT} in a message file becomes this client's own port.
    messages = [open(f, "rb").read().replace(b"{LOCAL_PORT}", str(local_port).encode()) for f in a.file]
    if a.options:
        messages.append(options_message(a.proto, a.host, a.port, local_port))
    try:
        for m in messages:
            send(m)
    except Exception as e:
        print("SEND-FAILED", type(e).__name__, str(e).replace("\n", " "))
        return 3

    got = 0
    buf = b""
    deadline = time.time() + a.wait
    while got < a.expect and time.time() < deadline:
        try:
            s.settimeout(max(0.05, deadline - time.time()))
            if a.proto == "udp":
                data, _ = s.recvfrom(65535)
                chunks = [data]
            else:
                data = s.recv(65535)
                if not data:
                    print("CLOSED")
                    break
                msgs, buf = split_messages(buf + data)
                chunks = msgs
        except socket.timeout:
            break
        except Exception as e:
            print("RECV-FAILED", type(e).__name__, str(e).replace("\n", " "))
            break
        for c in chunks:
            first = c.split(b"\r\n", 1)[0].decode("utf-8", "replace")
            if first.startswith("SIP/2.0"):
                print("RESPONSE", first)
                got += 1
            else:
                print("REQUEST", first)
    sys.stdout.flush()
    return 0

if __name__ == "__main__":
    sys.exit(main())
