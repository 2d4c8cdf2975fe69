#!/usr/bin/env python3
"""Fetches one path of SwiftSER's HTTP status listener and prints JSON.

  scrape.py --port P [--path /metrics] [--method GET] [--data BODY] [--raw BYTES]

Prints {"status": N, "body": TEXT} and, for /metrics, "samples": every
sample parsed by prometheus_client's own text parser, keyed
'name{label=value,...}' with the labels sorted, and "types": family name →
type. --data sends BODY (with Content-Type: application/json), as for
POST /rpc. --raw sends that many octets of header instead of a normal request
and prints {"closed": true} when the server closes without answering.
"""
import argparse, http.client, json, socket, sys

from prometheus_client.parser import text_string_to_metric_families

def key(name, labels):
    if not labels:
        return name
    return name + "{" + ",".join("%s=%s" % (k, labels[k]) for k in sorted(labels)) + "}"

def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/metrics")
    p.add_argument("--method", default="GET")
    p.add_argument("--data", default=None)
    p.add_argument("--raw", type=int, default=0)
    a = p.parse_args()
    if a.raw:
        s = socket.create_connection((a.host, a.port), timeout=10)
        head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * a.raw
        try:
            s.sendall(head)
            s.sendall(b"\r\n\r\n")
            data = s.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        print(json.dumps({"closed": data == b"", "answer": data[:40].decode("latin-1")}))
        return
    c = http.client.HTTPConnection(a.host, a.port, timeout=10)
    if a.data is not None:
        c.request(a.method, a.path, body=a.data.encode("utf-8"), headers={"Content-Type": "application/json"})
    else:
        c.request(a.method, a.path)
    r = c.getresponse()
    body = r.read().decode("utf-8")
    out = {"status": r.status, "body": body if a.path != "/metrics" else "",
           "content_type": r.getheader("Content-Type") or ""}
    if a.path == "/metrics" and r.status == 200:
        samples, types = {}, {}
        for fam in text_string_to_metric_families(body):
            types[fam.name] = fam.type
            for s in fam.samples:
                samples[key(s.name, s.labels)] = s.value
        out["samples"] = samples
        out["types"] = types
    print(json.dumps(out))

if __name__ == "__main__":
    main()
