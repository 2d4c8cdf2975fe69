#!/usr/bin/env python3
"""Turns the raw sipload JSON of scripts/bench-compare into the comparison
table (Markdown, on stdout) and an SVG chart of server CPU per message
against offered rate for Kamailio, SwiftSER and the floor.
Usage: bench-report.py OUTDIR DURATION CPUS KAMAILIO_VERSION
(environment: REPEAT, LOADS, PINNED, QUICK, KAMALLOC from bench-compare)."""
import json
import os, sys

out, duration, cpus, kversion = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].replace("version: ", "").strip()
loads = [int(x) for x in os.environ.get("LOADS", "25 50 75").split()]
SERVERS = ("kamailio", "swiftser", "floor")

def raw(server, name):
    try:
        with open(os.path.join(out, "raw-%s-%s.json" % (server, name))) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}

def res(server, name, key):
    return raw(server, name).get("result", {}).get(key)

def idle(server, key, name="idle"):
    return raw(server, name).get("idle", {}).get(key)

def lossy(server, name):
    """True when a row lost more than 0.1 % of what it started (failures,
    timeouts) or fell under 90 % of its offered rate: its figures are not
    comparable."""
    r = raw(server, name).get("result", {})
    if not r:
        return False
    started = max(r.get("started", 0), 1)
    behind = r.get("offered") and r.get("rate", 0) < 0.9 * r["offered"]
    return bool(behind) or (r.get("failures", 0) + r.get("timeouts", 0)) / started > 0.001

notes = []
rows = []

def ratio(s, other):
    if s is None or other is None or other == 0:
        return None
    return s / other

def row(label, values, lower_better, fmt="%.0f", name=None, k_max=None, f_max=None):
    """values: {server: figure or None}. Ratios are SwiftSER ÷ Kamailio and
    SwiftSER ÷ floor. k_max / f_max: the target as the highest ratio allowed
    (for figures where higher is better: the lowest)."""
    bad = {srv: name is not None and lossy(srv, name) for srv in SERVERS}
    if any(bad.values()) and name not in notes:
        notes.append(name)
    s = values.get("swiftser")
    rk = None if bad["swiftser"] or bad["kamailio"] else ratio(s, values.get("kamailio"))
    rf = None if bad["swiftser"] or bad["floor"] else ratio(s, values.get("floor"))
    targets, met = [], []
    for r, limit, who in ((rk, k_max, "K"), (rf, f_max, "floor")):
        if limit is None:
            continue
        targets.append("%s %.2f× %s" % ("≤" if lower_better else "≥", limit, who))
        if r is not None:
            met.append(r <= limit if lower_better else r >= limit)
    def show(srv):
        v = values.get(srv)
        if v is None:
            return "—"
        return (fmt % v) + (" †" if bad[srv] else "")
    rows.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
        label, show("kamailio"), show("swiftser"), show("floor"),
        "—" if rk is None else "%.2f×" % rk, "—" if rf is None else "%.2f×" % rf,
        "lower" if lower_better else "higher", ", ".join(targets),
        "" if not met else ("yes" if all(met) else "no")))

def each(name, key):
    return {srv: res(srv, name, key) for srv in SERVERS}

CLOSED = [
    ("options-tls-1", "(a) OPTIONS over TLS, 1 connection, 8 in flight", "msg/s"),
    ("options-tls-100", "(a) OPTIONS over TLS, 100 connections, 1 in flight each", "msg/s"),
    ("options-udp", "(b) OPTIONS over UDP, 8 in flight", "msg/s"),
    ("call-tls-udp", "(c) calls TLS → UDP, record-routed, t_relay", "calls/s"),
    ("register-tls", "(d) REGISTER over TLS, save(\"location\")", "reg/s"),
    ("register-auth-tls", "(d) REGISTER over TLS with digest authentication (SQLite subscriber), 401 then 200", "reg/s"),
    ("handshakes", "(e) full TLS handshakes (ECDSA P-256), one OPTIONS each", "handshakes/s"),
]
FIXED = [
    ("options-tls-100", "OPTIONS TLS ×100", "message", True),
    ("options-udp", "OPTIONS UDP", "message", True),
    ("call-tls-udp", "calls TLS → UDP", "call", False),
    ("register-tls", "REGISTER TLS", "REGISTER", False),
    ("register-auth-tls", "REGISTER TLS with digest (SQLite subscriber)", "authenticated REGISTER", False),
]

for name, label, unit in CLOSED:
    row("%s — %s (closed loop)" % (label, unit), each(name, "rate"), False, name=name)
for name, label, unit in CLOSED:
    row("server CPU µs per unit, %s (closed loop, own rate)" % label.split(") ", 1)[1], each(name, "server_cpu_us_per_unit"), True, "%.1f", name=name)
for name, label, _, _ in FIXED:
    row("maximum rate, %s, ≤ 0.1 %% loss — per s" % label, each("max-" + name, "rate"), False)
for name, label, unit, options in FIXED:
    kmax = res("kamailio", "max-" + name, "rate")
    for pct in loads:
        n = "fixed-%s-%d" % (name, pct)
        offered = res("kamailio", n, "offered") or res("swiftser", n, "offered")
        at = "%s at %d %% of Kamailio's maximum (%s/s)" % (label, pct, "%.0f" % offered if offered else "?")
        row("server CPU µs per %s, %s" % (unit, at), each(n, "server_cpu_us_per_unit"), True, "%.1f", name=n,
            k_max=2 / 3, f_max=1.3 if options else None)
        row("p50 ms, %s" % at, each(n, "p50_ms"), True, "%.2f", name=n)
        row("p99 ms, %s" % at, each(n, "p99_ms"), True, "%.2f", name=n, k_max=1.0)
    if kmax is None:
        row("%s: no maximum measured for Kamailio, no fixed-rate rows" % label, {}, True)
row("(f) server memory (PSS) per idle TLS connection, KiB (floor: SSL_MODE_RELEASE_BUFFERS)",
    {srv: idle(srv, "kib_per_connection") for srv in SERVERS}, True, "%.1f", f_max=1.0)
row("(f) the floor without SSL_MODE_RELEASE_BUFFERS, KiB per idle TLS connection",
    {"floor": idle("floor", "kib_per_connection", "idle-keep-buffers")}, True, "%.1f")
row("(f) seconds to open the idle connections", {srv: idle(srv, "seconds_to_open") for srv in SERVERS}, True, "%.2f")

opened = idle("swiftser", "opened")
if os.environ.get("QUICK") == "1":
    print("**Smoke run (`--quick`): short rows, one repeat — not figures to publish.**")
    print()
print("SwiftSER vs %s (started with `%s`: the TLSF allocator for shared and private memory) vs the floor" % (kversion or "Kamailio", os.environ.get("KAMALLOC", "-x tlsf")))
print("(Benchmarks/floor: one epoll loop in C with OpenSSL 3, `cc -O2`; it answers OPTIONS only), %s CPUs, load generator (sipload, one thread) on the same machine." % cpus)
print("%ss per row; closed-loop and fixed-rate rows: median of %s runs, the servers taking turns; one worker each: SwiftSER children=1, Kamailio children=1 + tcp_children=1" % (duration, os.environ.get("REPEAT", "1")))
print("(one TLS worker: Kamailio 5.6 with OpenSSL 3 can crash when two processes handshake at once).")
print("Server pinned to CPU 0, sipload to CPU 1 (taskset)." if os.environ.get("PINNED") == "1" else "Server and sipload not pinned: both float over all CPUs.")
print("The same ECDSA P-256 certificate and key-exchange groups on all three (X25519, P-256, P-384: OpenSSL 3.0's classic groups; SwiftSER's default would add X25519MLKEM768).")
print("Fixed-rate rows: open loop at %s %% of Kamailio's own maximum for that scenario, the same offered rate for every server." % ", ".join(str(p) for p in loads))
print("Idle connections: %s. Ratios are SwiftSER ÷ Kamailio and SwiftSER ÷ floor; the \"better\" column says which way is better for SwiftSER; targets from issue 17." % (opened if opened is not None else "?"))
print()
print("| row | Kamailio | SwiftSER | floor | SwiftSER ÷ Kamailio | SwiftSER ÷ floor | better | target | met |")
print("| --- | ---: | ---: | ---: | ---: | ---: | :---: | --- | :---: |")
for r in rows:
    print(r)
for name in notes:
    for srv in SERVERS:
        if lossy(srv, name):
            r = raw(srv, name).get("result", {})
            print()
            print("† %s, %s: %d of %d started units failed or timed out, achieved %.0f/s of %s offered; no ratio is given for it."
                  % (srv, name, r.get("failures", 0) + r.get("timeouts", 0), r.get("started", 0), r.get("rate", 0), r.get("offered") or "closed-loop"))

# The chart: CPU per message against offered rate, one panel per fixed-rate scenario.
colors = {"kamailio": "#d62728", "swiftser": "#1f77b4", "floor": "#2ca02c"}
W, H, M = 420, 280, 55
def panel(x0, y0, title, series):
    parts = ['<g transform="translate(%d,%d)">' % (x0, y0),
             '<text x="%d" y="18" font-size="14" text-anchor="middle">%s</text>' % (W / 2, title),
             '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (M, H - M, W - 10, H - M),
             '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (M, 30, M, H - M),
             '<text x="%d" y="%d" font-size="11" text-anchor="middle">offered per second</text>' % ((W + M) / 2, H - 18),
             '<text x="14" y="%d" font-size="11" transform="rotate(-90 14 %d)" text-anchor="middle">server CPU µs per unit</text>' % (H / 2, H / 2)]
    pts_all = [p for v in series.values() for p in v]
    if not pts_all:
        parts.append('<text x="%d" y="%d" font-size="12" text-anchor="middle">no data</text>' % (W / 2, H / 2))
        parts.append("</g>")
        return "\n".join(parts)
    xmax = max(p[0] for p in pts_all) * 1.1 or 1
    ymax = max(p[1] for p in pts_all) * 1.15 or 1
    sx = lambda v: M + (W - 10 - M) * v / xmax
    sy = lambda v: H - M - (H - M - 30) * v / ymax
    for i in range(5):
        yv, xv = ymax * i / 4, xmax * i / 4
        parts.append('<text x="%d" y="%d" font-size="10" text-anchor="end">%.1f</text>' % (M - 4, sy(yv) + 3, yv))
        parts.append('<text x="%d" y="%d" font-size="10" text-anchor="middle">%.0f</text>' % (sx(xv), H - M + 14, xv))
    for srv, pts in series.items():
        if not pts:
            continue
        parts.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>' % (colors[srv], " ".join("%.1f,%.1f" % (sx(x), sy(y)) for x, y in pts)))
        for x, y in pts:
            parts.append('<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>' % (sx(x), sy(y), colors[srv]))
    parts.append("</g>")
    return "\n".join(parts)

panels = []
for i, (name, label, unit, _) in enumerate(FIXED):
    series = {}
    for srv in SERVERS:
        pts = []
        for pct in loads:
            r = raw(srv, "fixed-%s-%d" % (name, pct)).get("result", {})
            if r.get("offered") and r.get("server_cpu_us_per_unit"):
                pts.append((r["offered"], r["server_cpu_us_per_unit"]))
        series[srv] = sorted(pts)
    panels.append(panel((i % 2) * (W + 20), 10 + (i // 2) * (H + 10), "%s — CPU per %s" % (label, unit), series))
legend_y = (len(FIXED) + 1) // 2 * (H + 10) + 25
svg = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif">' % (2 * W + 20, legend_y + 15),
       '<rect width="100%" height="100%" fill="white"/>'] + panels + [
       '<text x="%d" y="%d" font-size="12" fill="%s">■ Kamailio</text>' % (M, legend_y, colors["kamailio"]),
       '<text x="%d" y="%d" font-size="12" fill="%s">■ SwiftSER</text>' % (M + 100, legend_y, colors["swiftser"]),
       '<text x="%d" y="%d" font-size="12" fill="%s">■ floor (minimal C server)</text>' % (M + 200, legend_y, colors["floor"]),
       "</svg>"]
with open(os.path.join(out, "bench-compare.svg"), "w") as f:
    f.write("\n".join(svg) + "\n")
