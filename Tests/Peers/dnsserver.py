#!/usr/bin/env python3
"""A tiny authoritative DNS server over UDP for SwiftSER's RFC 3263 tests.

Usage: dnsserver.py --port N --zone JSON
JSON maps names to record lists: {"_sip._udp.example.test": {"SRV": [[prio,
weight, port, "target"]]}, "uas.example.test": {"A": ["127.0.0.1"]},
"example.test": {"NAPTR": [[order, pref, "s", "SIP+D2T", "", "_sip._tcp.example.test"]]}}.
Unknown names get NXDOMAIN; known names without the asked type an empty
answer. Prints READY, then QUERY <name> <type> for each question.

--spoof: before each real answer, three forged ones whose records point
elsewhere (SRV port 6666 to evil.test, A 10.6.6.6): one with another ID,
one with the right ID for another question, one with the right ID and
question from another source port; prints SPOOFED 3 for each query.
--silent: never answers (prints QUERY only)."""
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

def answer(data, zone, log=True, qid=None, question_name=None):
    real_qid, flags, qd = struct.unpack("!HHH", data[:6])
    qid = real_qid if qid is None else qid
    name, i = read_name(data, 12)
    qtype, qclass = struct.unpack("!HH", data[i:i + 4])
    question = data[12:i + 4]
    if question_name is not None:
        question = encode_name(question_name) + data[i:i + 4]
    if log:
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
    p.add_argument("--spoof", action="store_true")
    p.add_argument("--silent", action="store_true")
    a = p.parse_args()
    zone = {k.lower(): v for k, v in json.loads(a.zone).items()}
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", a.port))
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    print("READY", flush=True)
    while True:
        data, peer = s.recvfrom(2048)
        try:
            if a.silent:
                name, _ = read_name(data, 12)
                print("QUERY %s" % name, flush=True)
                continue
            if a.spoof:
                name, _ = read_name(data, 12)
                evil = {name.lower(): {"SRV": [[1, 0, 6666, "evil.test"]], "A": ["10.6.6.6"],
                                       "NAPTR": [[1, 1, "s", "SIP+D2U", "", "_sip._udp.evil.test"]]}}
                qid = struct.unpack("!H", data[:2])[0]
                s.sendto(answer(data, evil, log=False, qid=qid ^ 0x5A5A), peer)
                s.sendto(answer(data, evil, log=False, question_name="x" + name), peer)
                other.sendto(answer(data, evil, log=False), peer)
                print("SPOOFED 3", flush=True)
            s.sendto(answer(data, zone), peer)
        except Exception as e:  # a bad query is ignored
            print("BAD-QUERY %s" % e, flush=True)

if __name__ == "__main__":
    main()
