#!/usr/bin/env python3
"""Turns the raw sipload JSON of scripts/bench-compare into the comparison
table (Markdown, on stdout) and an SVG chart of achieved rate and server CPU
against offered load.  Usage: bench-report.py OUTDIR DURATION CPUS KAMAILIO_VERSION"""
import json
import os, sys

out, duration, cpus, kversion = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].replace("version: ", "").strip()

def raw(server, name):
    try:
        with open(os.path.join(out, "raw-%s-%s.json" % (server, name))) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}

def res(server, name, key):
    return raw(server, name).get("result", {}).get(key)

def lossy(server, name):
    """True when a row lost more than 0.1 % of what it started (failures,
    timeouts): its rate and per-unit figures are not comparable."""
    r = raw(server, name).get("result", {})
    started = max(r.get("started", 0), 1)
    return (r.get("failures", 0) + r.get("timeouts", 0)) / started > 0.001

notes = []

def idle(server, key):
    return raw(server, "idle").get("idle", {}).get(key)

rows = []
def row(label, k, s, higher_better, target, fmt="%.0f", name=None):
    bad = {srv: name is not None and lossy(srv, name) for srv in ("kamailio", "swiftser")}
    if k is None or s is None or (higher_better and k == 0) or (not higher_better and s == 0) or any(bad.values()):
        ratio = None
    else:
        ratio = (s / k) if higher_better else (k / s)
    met = "" if ratio is None else ("yes" if ratio >= target else "no")
    def show(v, srv):
        if v is None:
            return "—"
        return (fmt % v) + (" †" if bad[srv] else "")
    if any(bad.values()) and name not in notes:
        notes.append(name)
    rows.append("| %s | %s | %s | %s | %.2f× | %s |" % (label, show(k, "kamailio"), show(s, "swiftser"), "—" if ratio is None else "%.2f×" % ratio, target, met))

for name, label, unit in [
    ("options-tls-1", "(a) OPTIONS over TLS, 1 connection", "msg/s"),
    ("options-tls-100", "(a) OPTIONS over TLS, 100 connections", "msg/s"),
    ("options-udp", "(b) OPTIONS over UDP", "msg/s"),
    ("call-tls-udp", "(c) calls TLS → UDP, record-routed, t_relay", "calls/s"),
    ("register-tls", "(d) REGISTER over TLS, save(\"location\")", "reg/s"),
    ("handshakes", "(e) full TLS handshakes (ECDSA P-256), one OPTIONS each", "handshakes/s"),
    ("find-max", "maximum OPTIONS rate over TLS ×100 with ≤ 0.1 % loss", "msg/s"),
]:
    row("%s — %s" % (label, unit), res("kamailio", name, "rate"), res("swiftser", name, "rate"), True, 1.5, name=None if name == "find-max" else name)
for name, label in [("options-tls-1", "OPTIONS TLS ×1"), ("options-tls-100", "OPTIONS TLS ×100"), ("options-udp", "OPTIONS UDP"),
                    ("call-tls-udp", "call TLS → UDP"), ("register-tls", "REGISTER TLS"), ("handshakes", "TLS handshake")]:
    row("server CPU µs per unit, %s (closed loop, own rate)" % label,
        res("kamailio", name, "server_cpu_us_per_unit"), res("swiftser", name, "server_cpu_us_per_unit"), False, 1.5, "%.1f", name=name)
same = res("swiftser", "same-rate", "offered")
row("server CPU µs per message, OPTIONS TLS ×100 at the same offered rate (%s/s)" % (int(same) if same else "?"),
    res("kamailio", "same-rate", "server_cpu_us_per_unit"), res("swiftser", "same-rate", "server_cpu_us_per_unit"), False, 1.5, "%.1f", name="same-rate")
hk, hs = res("kamailio", "half-max", "offered"), res("swiftser", "half-max", "offered")
row("server CPU µs per message, OPTIONS TLS ×100 at half of own maximum (Kamailio %s/s, SwiftSER %s/s)" % (int(hk or 0), int(hs or 0)),
    res("kamailio", "half-max", "server_cpu_us_per_unit"), res("swiftser", "half-max", "server_cpu_us_per_unit"), False, 1.5, "%.1f", name="half-max")
row("(f) server memory (PSS) per idle TLS connection, KiB", idle("kamailio", "kib_per_connection"), idle("swiftser", "kib_per_connection"), False, 3.0, "%.1f")
row("(f) seconds to open the idle connections", idle("kamailio", "seconds_to_open"), idle("swiftser", "seconds_to_open"), False, 1.0, "%.2f")
for q in ("p50", "p99"):
    row("(g) %s latency ms at half of own maximum, OPTIONS TLS ×100" % q,
        res("kamailio", "half-max", q + "_ms"), res("swiftser", "half-max", q + "_ms"), False, 1.0, "%.2f", name="half-max")
    row("(g) %s latency ms at the same offered rate" % q,
        res("kamailio", "same-rate", q + "_ms"), res("swiftser", "same-rate", q + "_ms"), False, 1.0, "%.2f", name="same-rate")

opened = idle("swiftser", "opened")
print("SwiftSER vs %s, %s CPUs, load generator (sipload, one thread) on the same machine;" % (kversion or "Kamailio", cpus))
print("%ss per row; closed-loop and fixed-rate rows: median of %s runs alternating the two servers; one worker each: SwiftSER children=1, Kamailio children=1 + tcp_children=1" % (duration, os.environ.get("REPEAT", "1")))
print("(one TLS worker: Kamailio 5.6 with OpenSSL 3 can crash when two processes handshake at once).")
print("Server pinned to CPU 0, sipload to CPU 1 (taskset)." if os.environ.get("PINNED") == "1" else "Server and sipload not pinned: both float over all CPUs.")
print("Key exchange: the same classic groups on both (X25519, P-256, P-384: OpenSSL 3.0's; SwiftSER's default also offers X25519MLKEM768, which Kamailio 5.6 lacks).")
print("Idle connections: %s. Ratio: higher is better for SwiftSER (our rate ÷ theirs; their CPU, memory, latency ÷ ours)." % (opened if opened is not None else "?"))
print()
print("| scenario | Kamailio | SwiftSER | ratio | target | met |")
print("| --- | ---: | ---: | ---: | ---: | :---: |")
for r in rows:
    print(r)
for name in notes:
    for srv in ("kamailio", "swiftser"):
        if lossy(srv, name):
            r = raw(srv, name).get("result", {})
            print()
            print("† %s, %s: %d of %d started units failed or timed out (achieved %.0f/s of %s offered); no ratio is given for its rows."
                  % (srv, name, r.get("failures", 0) + r.get("timeouts", 0), r.get("started", 0), r.get("rate", 0), r.get("offered") or "closed-loop"))

# The chart: achieved rate and server CPU against offered load (find-max steps).
def steps(server):
    return [(s["offered"], s["rate"], s["server_cpu_pct"]) for s in raw(server, "find-max").get("steps", []) if s.get("offered")]
series = {"kamailio": steps("kamailio"), "swiftser": steps("swiftser")}
colors = {"kamailio": "#d62728", "swiftser": "#1f77b4"}
allx = [p[0] for v in series.values() for p in v] or [1]
ally = [p[1] for v in series.values() for p in v] + allx
W, H, M = 460, 300, 50
def panel(x0, title, ymax, idx, ylabel):
    parts = ['<g transform="translate(%d,0)">' % x0,
             '<text x="%d" y="20" font-size="14" text-anchor="middle">%s</text>' % (W / 2, title),
             '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (M, H - M, W - 10, H - M),
             '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (M, 30, M, H - M),
             '<text x="%d" y="%d" font-size="11" text-anchor="middle">offered OPTIONS/s (TLS, 100 connections)</text>' % ((W + M) / 2, H - 12),
             '<text x="12" y="%d" font-size="11" transform="rotate(-90 12 %d)" text-anchor="middle">%s</text>' % (H / 2, H / 2, ylabel)]
    xmax = max(allx) * 1.05
    sx = lambda v: M + (W - 10 - M) * v / xmax
    sy = lambda v: H - M - (H - M - 30) * v / ymax
    for i in range(5):
        yv = ymax * i / 4
        parts.append('<text x="%d" y="%d" font-size="10" text-anchor="end">%.0f</text>' % (M - 4, sy(yv) + 3, yv))
        xv = xmax * i / 4
        parts.append('<text x="%d" y="%d" font-size="10" text-anchor="middle">%.0f</text>' % (sx(xv), H - M + 14, xv))
    for name, pts in series.items():
        if not pts:
            continue
        path = " ".join("%.1f,%.1f" % (sx(p[0]), sy(p[idx])) for p in pts)
        parts.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>' % (colors[name], path))
        for p in pts:
            parts.append('<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>' % (sx(p[0]), sy(p[idx]), colors[name]))
    parts.append("</g>")
    return "\n".join(parts)
svg = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif">' % (2 * W + 20, H + 30),
       '<rect width="100%" height="100%" fill="white"/>',
       panel(0, "achieved rate", max(ally) * 1.05, 1, "answered/s"),
       panel(W + 20, "server CPU", 105, 2, "CPU % (all server processes)"),
       '<text x="%d" y="%d" font-size="12" fill="%s">■ Kamailio</text>' % (M, H + 20, colors["kamailio"]),
       '<text x="%d" y="%d" font-size="12" fill="%s">■ SwiftSER</text>' % (M + 100, H + 20, colors["swiftser"]),
       "</svg>"]
with open(os.path.join(out, "bench-compare.svg"), "w") as f:
    f.write("\n".join(svg) + "\n")
