#!/usr/bin/env python3
"""One call between two real baresip softphones through a SIP proxy.

  baresip_call.py --host 127.0.0.1 --udp-port U --tls-port T --ca CA.pem
                  [--caller-password P] [--callee-password P] [--time-limit 45]

The callee (sip:CALLEE@DOMAIN) registers over TLS with the outbound proxy
sip:HOST:T;transport=tls and answers calls by itself; the caller
(sip:CALLER@DOMAIN) registers over UDP with the outbound proxy
sip:HOST:U;transport=udp and dials the callee's address of record. Both send a
sine tone (module ausine, no sound card) as G.711 RTP. After --media-seconds
of audio the caller hangs up (BYE); the callee must see the call close.

Each phone is a baresip process (Debian package baresip-core, 1.0) with its
own temporary config folder, driven over its ctrl_tcp socket (netstring
JSON: commands in, responses and events out). Every port is on 127.0.0.1 and
picked here. The proxy's TLS certificate is checked against --ca with Python's
ssl module first (baresip 1.0 loads sip_cafile but accepts any certificate).

Prints one JSON line, e.g.
  {"ok": true, "failed_step": null, "registered": true, "established": true,
   "rtp_caller_to_callee": 150, "rtp_callee_to_caller": 150,
   "closed_by_bye": true, ...}
("caller_final_status": the SIP status that ended a call that failed to
connect, "caller_sip"/"callee_sip": each phone's SIP messages in order,
"seconds": when each step ended) and exits 0 only when every step passed (1: a step failed, 2: bad usage or
baresip missing). On failure the phones' logs (with SIP traces) go to stderr.
The baresip processes are stopped on every exit (and die with this script:
PR_SET_PDEATHSIG, plus baresip's own -t time limit).
"""
import argparse, ctypes, json, os, random, re, shutil, signal, socket, ssl, subprocess, sys, tempfile, time

MODULE_PATH = "/usr/lib/baresip/modules"


def log(*a):
    print(*a, file=sys.stderr)
    sys.stderr.flush()


class StepFailed(Exception):
    def __init__(self, step, error):
        super().__init__(f"{step}: {error}")
        self.step = step
        self.error = error


class Deadline:
    def __init__(self, seconds):
        self.end = time.monotonic() + seconds

    def left(self, cap=None):
        rest = max(0.0, self.end - time.monotonic())
        return rest if cap is None else min(rest, cap)


# --- ports -------------------------------------------------------------------

def _bindable(port, kinds=(socket.SOCK_DGRAM, socket.SOCK_STREAM)):
    for kind in kinds:
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        finally:
            s.close()
    return True


def _below_ephemeral():
    """The first port the kernel hands out for bind(0) and connect(); ports
    chosen below it cannot be taken by another test's ephemeral socket
    between our check and baresip's bind."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return max(2048, int(f.read().split()[0]))
    except (OSError, ValueError, IndexError):
        return 32768


class Ports:
    """Hands out free loopback ports below the ephemeral range, never the same one twice."""

    def __init__(self):
        self.taken = set()
        self.low = 10000 if _below_ephemeral() > 12000 else 1025
        self.high = _below_ephemeral()

    def _ok(self, port, kinds=(socket.SOCK_DGRAM, socket.SOCK_STREAM)):
        return 1024 < port < 65535 and port not in self.taken and _bindable(port, kinds)

    def one(self):
        return self.run(1)

    def run(self, count, kinds=(socket.SOCK_DGRAM, socket.SOCK_STREAM), even=False):
        """`count` consecutive free ports (UDP and TCP)."""
        for _ in range(400):
            base = random.randrange(self.low, self.high - count)
            if even:
                base &= ~1
            ports = range(base, base + count)
            if all(self._ok(p, kinds) for p in ports):
                self.taken.update(ports)
                return base
        raise StepFailed("ports", f"no {count} consecutive free ports on 127.0.0.1")


# --- baresip control (ctrl_tcp: netstrings of JSON) ----------------------------

class PhoneExited(Exception):
    """baresip exited before its control port accepted (a port clash, usually)."""


class Ctrl:
    def __init__(self, name, port, deadline, proc=None):
        self.name = name
        self.events = []
        self.buf = b""
        self.token = 0
        last = None
        while True:
            try:
                self.s = socket.create_connection(("127.0.0.1", port), timeout=1)
                break
            except OSError as e:
                last = e
                if proc is not None and proc.poll() is not None:
                    raise PhoneExited(f"{name}: baresip exited with status {proc.returncode} before ctrl_tcp accepted")
                if deadline.left() <= 0:
                    raise StepFailed("start", f"{name}: ctrl_tcp on port {port} did not accept a connection ({last})")
                time.sleep(0.1)

    def _read_message(self, timeout):
        end = time.monotonic() + timeout
        while True:
            m = re.match(rb"(\d{1,7}):", self.buf)
            if m:
                n = int(m.group(1))
                start = m.end()
                if len(self.buf) >= start + n + 1:
                    body = self.buf[start:start + n]
                    if self.buf[start + n:start + n + 1] != b",":
                        raise StepFailed("control", f"{self.name}: bad netstring from ctrl_tcp")
                    self.buf = self.buf[start + n + 1:]
                    try:
                        return json.loads(body.decode("utf-8", "replace"))
                    except ValueError:
                        raise StepFailed("control", f"{self.name}: bad JSON from ctrl_tcp: {body[:200]!r}")
            elif len(self.buf) > 8 and not re.match(rb"\d+$", self.buf[:8]):
                raise StepFailed("control", f"{self.name}: bad netstring from ctrl_tcp: {self.buf[:40]!r}")
            left = end - time.monotonic()
            if left <= 0:
                return None
            self.s.settimeout(left)
            try:
                data = self.s.recv(65536)
            except socket.timeout:
                return None
            except OSError as e:
                raise StepFailed("control", f"{self.name}: ctrl_tcp connection failed ({e})")
            if not data:
                raise StepFailed("control", f"{self.name}: baresip closed its ctrl_tcp connection (did it exit?)")
            self.buf += data

    def pump(self, timeout):
        """Reads messages for up to `timeout` seconds; returns the first response."""
        m = self._read_message(timeout)
        if m is None:
            return None
        if m.get("event"):
            self.events.append(m)
            return None
        return m

    def command(self, command, params=None, timeout=5):
        self.token += 1
        token = f"t{self.token}"
        msg = {"command": command, "token": token}
        if params is not None:
            msg["params"] = params
        body = json.dumps(msg).encode()
        self.s.sendall(str(len(body)).encode() + b":" + body + b",")
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            m = self.pump(end - time.monotonic())
            if m is not None and m.get("token") == token:
                return m
        raise StepFailed("control", f"{self.name}: no response to {command}")

    def find(self, types, after=0):
        for i, e in enumerate(self.events):
            if i >= after and e.get("type") in types:
                return i, e
        return None

    def wait_event(self, types, deadline, cap, after=0):
        """The first event (index, event) at or after index `after` whose type is in `types`, or None."""
        end = time.monotonic() + deadline.left(cap)
        while True:
            hit = self.find(types, after)
            if hit:
                return hit
            left = end - time.monotonic()
            if left <= 0:
                return None
            self.pump(min(left, 0.5))


# --- baresip processes -----------------------------------------------------------

def _die_with_parent():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Phone:
    def __init__(self, name, root, ports, args):
        self.name = name
        self.dir = os.path.join(root, name)
        os.makedirs(self.dir)
        self.sip_port = ports.run(2)          # baresip listens for TLS on sip_listen + 1
        self.ctrl_port = ports.one()
        rtp = ports.run(8, kinds=(socket.SOCK_DGRAM,), even=True)
        config = f"""# written by baresip_call.py
poll_method\tepoll
sip_listen\t127.0.0.1:{self.sip_port}
sip_cafile\t{args.ca}
call_local_timeout\t{int(args.time_limit) + 5}
call_max_calls\t2
audio_source\tausine,{440 if name == 'caller' else 660}
ausrc_srate\t48000
ausrc_channels\t2
rtp_ports\t{rtp}-{rtp + 7}
rtcp_mux\tno
rtp_stats\tyes
jitter_buffer_delay\t5-10
net_interface\t127.0.0.1
module_path\t{MODULE_PATH}
module\tg711.so
module\tausine.so
module_app\tmenu.so
statmode_default\toff
module_app\tctrl_tcp.so
ctrl_tcp_listen\t127.0.0.1:{self.ctrl_port}
"""
        with open(os.path.join(self.dir, "config"), "w") as f:
            f.write(config)
        # Accounts are added over ctrl_tcp (uanew) once connected, so the
        # registration's events are seen.
        with open(os.path.join(self.dir, "accounts"), "w") as f:
            f.write("# accounts are created with the uanew command\n")
        with open(os.path.join(self.dir, "contacts"), "w") as f:
            f.write("# none\n")
        self.log_path = os.path.join(self.dir, "baresip.log")
        self.log_file = open(self.log_path, "wb")
        argv = [args.baresip, "-4", "-s", "-f", self.dir, "-t", str(int(args.time_limit) + 10)]
        stdbuf = shutil.which("stdbuf")
        if stdbuf:
            argv = [stdbuf, "-oL", "-eL"] + argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log_file, stderr=subprocess.STDOUT,
                                     cwd=self.dir, preexec_fn=_die_with_parent)
        self.ctrl = None

    def connect(self, deadline):
        self.ctrl = Ctrl(self.name, self.ctrl_port, deadline, self.proc)

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, grace=4.0):
        if self.proc.poll() is None:
            self.proc.terminate()          # baresip unregisters, then exits
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.log_file.close()

    def rtp_stats(self):
        """(sent, received) audio RTP packets from rtp_stats, printed when the stream ends."""
        m = re.search(r"^audio\s+Transmit:\s+Receive:\s*\n\s*packets:\s+(\d+)\s+(\d+)", self.log_text(), re.M)
        return (int(m.group(1)), int(m.group(2))) if m else None

    def sip_messages(self):
        """The SIP messages of the trace (-s): (protocol, source, destination, text)."""
        # libre prints each message after a line "PROTO SRC -> DST".
        text = self.log_text()
        heads = list(TRACE_HEAD.finditer(text))
        msgs = []
        for i, h in enumerate(heads):
            end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
            msgs.append((h.group(1), h.group(2), h.group(3), text[h.end():end]))
        return msgs

    def received(self, proxy):
        """Start lines and CSeq of the messages this phone received from the proxy."""
        out = []
        for proto, src, dst, body in self.sip_messages():
            if src in proxy:
                cseq = re.search(r"^CSeq:\s*\d+\s+(\S+)", body, re.M | re.I)
                out.append((body.split("\r\n", 1)[0].split("\n", 1)[0].strip(), cseq.group(1) if cseq else ""))
        return out

    def flow(self, proxy, limit=40):
        """A short record of the SIP exchange: '> ' sent to the proxy, '< ' received."""
        lines = []
        for proto, src, dst, body in self.sip_messages():
            first = body.split("\n", 1)[0].strip()
            cseq = re.search(r"^CSeq:\s*(\d+\s+\S+)", body, re.M | re.I)
            arrow = "<" if src in proxy else ">"
            lines.append(f"{arrow} {proto} {first[:90]}" + (f" ({cseq.group(1)})" if cseq and first.startswith("SIP/") else ""))
        return lines[-limit:]


TRACE_HEAD = re.compile(r"^(UDP|TCP|TLS) (\S+) -> (\S+)\r?\n", re.M)


def stop_all(phones):
    """SIGTERM to every phone at once (each unregisters), SIGKILL after 4 s."""
    for phone in phones:
        if phone.proc.poll() is None:
            phone.proc.terminate()
    end = time.monotonic() + 4
    for phone in phones:
        phone.stop(grace=max(0.1, end - time.monotonic()))


def start_phone(name, root, ports, args, deadline, phones, attempts=3):
    """Starts a phone and connects to its control port. A phone that exits
    first (another process bound one of its ports after we checked it) is
    started again on fresh ports, up to `attempts` times."""
    for attempt in range(1, attempts + 1):
        phone = Phone(name, os.path.join(root, f"try{attempt}"), ports, args)
        phones.append(phone)
        try:
            phone.connect(deadline)
            return phone
        except PhoneExited as e:
            phone.stop(grace=0.1)
            phones.remove(phone)
            if attempt == attempts:
                raise StepFailed("start", f"{e}; its log: {phone.log_text()[-400:]}")
    raise StepFailed("start", f"{name}: not started")


def account(user, domain, transport, outbound, password, extra):
    line = f"<sip:{user}@{domain};transport={transport}>;outbound=\"{outbound}\";regint=600;{extra}"
    if password is not None:
        line += f";auth_user={user};auth_pass={password}"
    return line


def check_tls(host, port, ca, deadline):
    ctx = ssl.create_default_context(cafile=ca)
    try:
        with socket.create_connection((host, port), timeout=deadline.left(5)) as raw:
            with ctx.wrap_socket(raw, server_hostname=host) as s:
                return s.version() is not None
    except ssl.SSLCertVerificationError as e:
        raise StepFailed("tls", f"the proxy's certificate on {host}:{port} does not verify against {ca}: {e.verify_message}")
    except (OSError, ssl.SSLError) as e:
        raise StepFailed("tls", f"TLS to {host}:{port} failed: {e}")


def registered(phone, deadline, result_key, out):
    hit = phone.ctrl.wait_event({"REGISTER_OK", "REGISTER_FAIL"}, deadline, 10)
    if hit is None:
        raise StepFailed("register", f"{phone.name}: no REGISTER_OK within 10 s")
    if hit[1]["type"] == "REGISTER_FAIL":
        out[result_key] = False
        raise StepFailed("register", f"{phone.name}: registration failed: {hit[1].get('param', '')}")
    out[result_key] = True


def run(args, out, phones):
    deadline = Deadline(args.time_limit)
    start = time.monotonic()

    def mark(step):
        out.setdefault("seconds", {})[step] = round(time.monotonic() - start, 2)
    out["tls_verified"] = check_tls(args.host, args.tls_port, args.ca, deadline)

    root = tempfile.mkdtemp(prefix="baresip-call-")
    out["dir"] = root
    ports = Ports()
    for p in (args.udp_port, args.tls_port):
        ports.taken.add(p)
    callee = start_phone("callee", root, ports, args, deadline, phones)
    caller = start_phone("caller", root, ports, args, deadline, phones)
    mark("started")

    tls_outbound = f"sip:{args.host}:{args.tls_port};transport=tls"
    udp_outbound = f"sip:{args.host}:{args.udp_port};transport=udp"
    r = callee.ctrl.command("uanew", account(args.callee, args.domain, "tls", tls_outbound, args.callee_password, "answermode=auto"))
    if not r.get("ok"):
        raise StepFailed("register", f"callee: uanew failed: {r.get('data')}")
    registered(callee, deadline, "callee_registered", out)
    r = caller.ctrl.command("uanew", account(args.caller, args.domain, "udp", udp_outbound, args.caller_password, "answermode=manual"))
    if not r.get("ok"):
        raise StepFailed("register", f"caller: uanew failed: {r.get('data')}")
    registered(caller, deadline, "caller_registered", out)
    out["registered"] = True
    mark("registered")

    # The call.
    target = f"sip:{args.callee}@{args.domain}"
    r = caller.ctrl.command("dial", target)
    if not r.get("ok"):
        raise StepFailed("dial", f"caller: dial {target} failed: {r.get('data')}")
    hit = caller.ctrl.wait_event({"CALL_ESTABLISHED", "CALL_CLOSED"}, deadline, 15)
    mark("answered")
    if hit is None:
        raise StepFailed("establish", f"caller: the call to {target} was neither answered nor closed within 15 s")
    if hit[1]["type"] == "CALL_CLOSED":
        out["caller_close_reason"] = hit[1].get("param", "")
        status = re.match(r"([1-6]\d\d) ", out["caller_close_reason"])
        out["caller_final_status"] = int(status.group(1)) if status else None
        raise StepFailed("establish", f"caller: the call to {target} failed: {hit[1].get('param', '')}")
    callee_hit = callee.ctrl.wait_event({"CALL_ESTABLISHED", "CALL_CLOSED"}, deadline, 5)
    if callee_hit is None or callee_hit[1]["type"] != "CALL_ESTABLISHED":
        raise StepFailed("establish", "callee: the call is established at the caller but not at the callee")
    out["established"] = True
    mark("established")

    # Media: each side must receive RTP (baresip's CALL_RTPESTAB on the first packet).
    for phone, key in ((caller, "caller_rtp_received"), (callee, "callee_rtp_received")):
        got = phone.ctrl.wait_event({"CALL_RTPESTAB"}, deadline, 8)
        out[key] = got is not None
    if not (out["caller_rtp_received"] and out["callee_rtp_received"]):
        raise StepFailed("rtp", f"no RTP received (caller: {out['caller_rtp_received']}, callee: {out['callee_rtp_received']})")
    end = time.monotonic() + min(args.media_seconds, deadline.left())
    while time.monotonic() < end:
        for phone in (caller, callee):
            phone.ctrl.pump(0.1)

    # Hang up from the caller: a BYE through the proxy.
    callee_mark = len(callee.ctrl.events)
    caller_mark = len(caller.ctrl.events)
    mark("media")
    r = caller.ctrl.command("hangup")
    if not r.get("ok"):
        raise StepFailed("hangup", f"caller: hangup failed: {r.get('data')}")
    out["caller_closed"] = caller.ctrl.wait_event({"CALL_CLOSED"}, deadline, 5, after=caller_mark) is not None
    closed = callee.ctrl.wait_event({"CALL_CLOSED"}, deadline, 10, after=callee_mark)
    out["callee_closed"] = closed is not None
    if closed is not None:
        out["callee_close_reason"] = closed[1].get("param", "")
    # Let a retransmitted BYE or its 200 settle, then stop the phones so
    # they print their RTP statistics.
    mark("closed")
    time.sleep(min(0.5, deadline.left()))
    stop_all(phones)
    mark("stopped")
    proxy = {f"{args.host}:{args.udp_port}", f"{args.host}:{args.tls_port}"}
    out["callee_bye_received"] = sum(1 for line, cseq in callee.received(proxy) if line.startswith("BYE "))
    out["caller_bye_answered"] = any(line.startswith("SIP/2.0 200") and cseq == "BYE" for line, cseq in caller.received(proxy))
    out["closed_by_bye"] = bool(out["callee_closed"] and out["callee_bye_received"] > 0 and out["caller_bye_answered"])
    cs, cl = caller.rtp_stats() or (0, 0), callee.rtp_stats() or (0, 0)
    out["caller_rtp"] = {"sent": cs[0], "received": cs[1]}
    out["callee_rtp"] = {"sent": cl[0], "received": cl[1]}
    out["rtp_caller_to_callee"] = cl[1]
    out["rtp_callee_to_caller"] = cs[1]
    if not out["closed_by_bye"]:
        raise StepFailed("bye", "the callee did not see the call closed by a BYE"
                         f" (callee closed: {out['callee_closed']}, BYEs received: {out['callee_bye_received']},"
                         f" 200 for the BYE at the caller: {out['caller_bye_answered']})")
    if out["rtp_caller_to_callee"] <= 0 or out["rtp_callee_to_caller"] <= 0:
        raise StepFailed("rtp", f"RTP packets caller->callee {out['rtp_caller_to_callee']}, callee->caller {out['rtp_callee_to_caller']}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1", help="the proxy's IPv4 address")
    ap.add_argument("--udp-port", type=int, required=True, help="the proxy's UDP port (the caller's outbound proxy)")
    ap.add_argument("--tls-port", type=int, required=True, help="the proxy's TLS port (the callee's outbound proxy)")
    ap.add_argument("--ca", required=True, help="CA file that verifies the proxy's certificate (sip_cafile)")
    ap.add_argument("--domain", default="localhost", help="domain of both addresses of record")
    ap.add_argument("--caller", default="alice", help="caller's user name")
    ap.add_argument("--callee", default="bob", help="callee's user name")
    ap.add_argument("--caller-password", help="caller's digest password (account auth_pass)")
    ap.add_argument("--callee-password", help="callee's digest password (account auth_pass)")
    ap.add_argument("--media-seconds", type=float, default=2.0, help="how long the call lasts before the BYE")
    ap.add_argument("--time-limit", type=float, default=45.0, help="limit for the whole run, seconds")
    ap.add_argument("--baresip", default=shutil.which("baresip") or "baresip", help="the baresip program")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (configs and logs)")
    args = ap.parse_args()

    out = {"ok": False, "failed_step": None, "error": None, "tls_verified": False,
           "registered": False, "callee_registered": False, "caller_registered": False,
           "established": False, "caller_rtp_received": False, "callee_rtp_received": False,
           "rtp_caller_to_callee": 0, "rtp_callee_to_caller": 0,
           "closed_by_bye": False, "caller_final_status": None}
    for a, v in (("--ca", args.ca),):
        if not os.path.isfile(v):
            out.update(failed_step="usage", error=f"{a} {v}: no such file")
            print(json.dumps(out)); return 2
    for pw in (args.caller_password, args.callee_password):
        if pw is not None and (pw == "" or any(c in pw for c in ';,"<> \t\r\n')):
            out.update(failed_step="usage", error="a password must be non-empty, without ; , \" < > or white space")
            print(json.dumps(out)); return 2
    if not (os.path.isfile(args.baresip) and os.access(args.baresip, os.X_OK)):
        out.update(failed_step="baresip-missing",
                   error="baresip is not installed (Debian: apt-get install baresip-core; scripts/install-test-deps does it)")
        print(json.dumps(out)); return 2
    for mod in ("menu", "ctrl_tcp", "g711", "ausine"):
        if not os.path.isfile(f"{MODULE_PATH}/{mod}.so"):
            out.update(failed_step="baresip-missing", error=f"baresip module {MODULE_PATH}/{mod}.so is missing")
            print(json.dumps(out)); return 2

    phones = []

    def on_signal(signum, frame):
        raise SystemExit(128 + signum)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)

    status = 1
    try:
        run(args, out, phones)
        out["ok"] = True
        status = 0
    except StepFailed as e:
        out["failed_step"], out["error"] = e.step, e.error
    except SystemExit:
        out["failed_step"], out["error"] = "interrupted", "stopped by a signal"
        raise
    except Exception as e:  # report, never hang
        out["failed_step"], out["error"] = "internal", f"{type(e).__name__}: {e}"
    finally:
        try:
            stop_all(phones)
        except Exception:
            for phone in phones:
                if phone.proc.poll() is None:
                    phone.proc.kill()
        proxy = {f"{args.host}:{args.udp_port}", f"{args.host}:{args.tls_port}"}
        for phone in phones:
            out[f"{phone.name}_sip"] = phone.flow(proxy)
        if status != 0:
            for phone in phones:
                log(f"----- {phone.name} (baresip, {phone.dir}) -----")
                log(phone.log_text()[-30000:])
        if out.get("dir") and not args.keep:
            shutil.rmtree(out.pop("dir"), ignore_errors=True)
        print(json.dumps(out))
        sys.stdout.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
