#!/usr/bin/env python3
"""A tiny authoritative DNS server over UDP for SwiftSER's RFC 3263 tests.

Usage: dnsserver.py --port N --zone JSON
JSON maps names to record lists: {"_sip._udp.example.test": {"SRV": [[prio,
weight, port, "target"]]}, "uas.example.test": {"A": ["127.0.0.1"]},
"example.test": {"NAPTR": [[order, pref, "s", "SIP+D2T", "", "_sip._tcp.example.test"]]}}.
Unknown names get NXDOMAIN; known names without the asked type an empty
answer. Prints READY, then QUERY <name> <type> for each question."""
import argparse, json, socket, struct, sys

TYPES = {1: "A", 28: "AAAA", 33: "SRV", 35: "NAPTR"}

def encode_name(name):
    out = b""
    for label in name.strip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"

def read_name(data, i):
    labels = []
    while data[i] != 0:
        n = data[i]
        labels.append(data[i + 1:i + 1 + n].decode())
        i += 1 + n
    return ".".join(labels), i + 1

def answer(data, zone):
    qid, flags, qd = struct.unpack("!HHH", data[:6])
    name, i = read_name(data, 12)
    qtype, qclass = struct.unpack("!HH", data[i:i + 4])
    question = data[12:i + 4]
    print("QUERY %s %s" % (name, TYPES.get(qtype, qtype)), flush=True)
    entry = zone.get(name.lower())
    records = []
    if entry is not None:
        for rdata_spec in entry.get(TYPES.get(qtype, ""), []):
            if qtype == 1:
                rdata = socket.inet_pton(socket.AF_INET, rdata_spec)
            elif qtype == 28:
                rdata = socket.inet_pton(socket.AF_INET6, rdata_spec)
            elif qtype == 35:
                order, pref, flags, services, regexp, replacement = rdata_spec
                rdata = struct.pack("!HH", order, pref)
                for text in (flags, services, regexp):
                    rdata += bytes([len(text)]) + text.encode()
                rdata += encode_name(replacement)
            else:
                prio, weight, port, target = rdata_spec
                rdata = struct.pack("!HHH", prio, weight, port) + encode_name(target)
            # Name as a compression pointer to the question.
            records.append(struct.pack("!HHHIH", 0xC00C, qtype, 1, 60, len(rdata)) + rdata)
    rcode = 3 if entry is None else 0
    header = struct.pack("!HHHHHH", qid, 0x8180 | rcode, 1, len(records), 0, 0)
    return header + question + b"".join(records)

def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--zone", required=True)
    a = p.parse_args()
    zone = {k.lower(): v for k, v in json.loads(a.zone).items()}
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", a.port))
    print("READY", flush=True)
    while True:
        data, peer = s.recvfrom(2048)
        try:
            s.sendto(answer(data, zone), peer)
        except Exception as e:  # a bad query is ignored
            print("BAD-QUERY %s" % e, flush=True)

if __name__ == "__main__":
    main()
