#!/usr/bin/env python3
"""Helpers for bench/compare.sh: process accounting, the idle-connection holder,
oha output parsing and the report writer. Standard library only.

Subcommands:
  pids ROOT_PID                      the process and all its descendants
  cpu ROOT_PID                       utime+stime of that tree, in seconds
  cpu-user ROOT_PID                  utime alone (user space), in seconds
  rss ROOT_PID                       VmRSS of that tree, in KiB
  idle --port P --count N ...        open N mTLS connections (in --procs processes), hold them idle
  hs --port P --procs N --duration S  full-handshake load: one GET per connection, forced
                                     TLS version and cipher (TLS 1.2 + ECDHE-ECDSA-AES128-GCM-SHA256)
  syslog-sink --port P --out FILE    UDP syslog listener on 127.0.0.1 appending each datagram
  oha FILE                           summarise an oha JSON result as one JSON line
  report --raw RAW.jsonl --meta META.json --out-md MD --out-json JSON
"""
import argparse
import json
import os
import select
import socket
import ssl
import statistics
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- /proc accounting

def _children_map():
    kids = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read().decode("latin-1")
        except OSError:
            continue
        rest = data[data.rindex(")") + 2:].split()
        ppid = int(rest[1])
        kids.setdefault(ppid, []).append(int(name))
    return kids


def tree_pids(root):
    kids = _children_map()
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def _stat_fields(pid):
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read().decode("latin-1")
    # comm may contain spaces and parentheses: split after the last ')'.
    return data[data.rindex(")") + 2:].split()


def tree_cpu_seconds(root, user_only=False):
    """utime+stime (fields 14 and 15 of /proc/PID/stat) summed over the tree, or utime alone.

    A process's utime/stime already include all of its threads, dead or alive."""
    total = 0
    for pid in tree_pids(root):
        try:
            f = _stat_fields(pid)
        except OSError:
            continue
        # fields 14, 15 (1-based, after pid and comm)
        total += int(f[11]) + (0 if user_only else int(f[12]))
    return total / CLK_TCK


def tree_rss_kib(root):
    total = 0
    for pid in tree_pids(root):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


# ---------------------------------------------------------------- idle connections

def _client_ctx(a, version=None, cipher=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if version is None:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    else:
        ctx.minimum_version = ctx.maximum_version = version
    if cipher:
        ctx.set_ciphers(cipher)  # TLS 1.2 suites only; TLS 1.3 suites are not affected
    ctx.load_verify_locations(a.ca)
    ctx.load_cert_chain(a.cert, a.key)
    # No session reuse: each connection gets a new SSLSocket and no session is passed in.
    return ctx


def _idle_child(a, count, deadline, parent, go_fd, out_fd):
    """One holder process: open `count` connections, report, wait for 'go', report again."""
    ctx = _client_ctx(a)
    conns, failed, first_err = [], 0, None
    for i in range(count):
        if time.monotonic() > deadline:
            break
        if i % 256 == 0 and os.getppid() != parent:
            os._exit(1)  # the coordinator is gone: stop
        try:
            raw = socket.create_connection(("127.0.0.1", a.port), timeout=10)
            s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
            s.setblocking(False)
            conns.append(s)
        except Exception as e:  # noqa: BLE001 - report any failure kind
            failed += 1
            if first_err is None:
                first_err = repr(e)
    # In TLS 1.3 the client finishes before the server has read its certificate and
    # Finished; give the server time to process the last flights before counting.
    time.sleep(a.settle)
    alive = _count_alive(conns)
    os.write(out_fd, (json.dumps({"opened": len(conns), "failed": failed, "alive": alive,
                                  "first_error": first_err}) + "\n").encode())
    try:
        os.read(go_fd, 1)  # the coordinator says go, or exits (EOF)
    except OSError:
        pass
    alive_after = _count_alive(conns)
    for s in conns:
        try:
            s.close()
        except OSError:
            pass
    try:
        os.write(out_fd, (json.dumps({"alive_after": alive_after}) + "\n").encode())
    except OSError:
        pass
    os._exit(0)


def cmd_idle(a):
    """Open `count` mTLS connections to 127.0.0.1:port in `procs` processes (each within
    its own open-file limit), complete every handshake, hold them idle, print one
    '{"event": "ready", ...}' line with the totals (connections still open counted with a
    non-blocking read each), then wait until stdin says anything (or closes) or --hold-max
    seconds pass; then count again, close everything and print '{"event": "done", ...}'."""
    procs = a.procs
    if procs <= 0:
        procs = max(1, -(-a.count // a.per_proc))
    deadline = time.monotonic() + a.open_max
    parent = os.getpid()
    kids = []  # (pid, out_file, go_w)
    for i in range(procs):
        n = a.count // procs + (1 if i < a.count % procs else 0)
        out_r, out_w = os.pipe()
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(out_r)
            os.close(go_w)
            for _, f, w in kids:  # the siblings' ends, inherited: not ours
                f.close()
                os.close(w)
            _idle_child(a, n, deadline, parent, go_r, out_w)
        os.close(out_w)
        os.close(go_r)
        kids.append((pid, os.fdopen(out_r), go_w))
    tot = {"opened": 0, "failed": 0, "alive": 0, "first_error": None}
    for _, f, _ in kids:
        line = f.readline()
        if not line:
            tot["first_error"] = tot["first_error"] or "a holder process died"
            continue
        r = json.loads(line)
        for k in ("opened", "failed", "alive"):
            tot[k] += r[k]
        tot["first_error"] = tot["first_error"] or r["first_error"]
    print(json.dumps({"event": "ready", "procs": procs, **tot}), flush=True)
    select.select([sys.stdin], [], [], a.hold_max)
    for _, _, w in kids:
        try:
            os.write(w, b"g")
        except OSError:
            pass
    alive_after = 0
    for pid, f, w in kids:
        line = f.readline()
        if line:
            alive_after += json.loads(line).get("alive_after", 0)
        os.waitpid(pid, 0)
    print(json.dumps({"event": "done", "alive_after": alive_after}), flush=True)


def _count_alive(conns):
    alive = 0
    for s in conns:
        try:
            data = s.recv(1)  # non-blocking
            if data:
                alive += 1  # unexpected data, but the connection is open
        except ssl.SSLWantReadError:
            alive += 1
        except (BlockingIOError, InterruptedError):
            alive += 1
        except (OSError, ssl.SSLError):
            pass
    return alive


# ---------------------------------------------------------------- full-handshake client

def _read_response(s):
    """Read one HTTP/1.1 response; return its status code (body read and discarded)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(16384)
        if not d:
            raise ConnectionError("closed before the response head")
        buf += d
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = None
    for h in lines[1:]:
        k, _, v = h.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    got = len(body)
    while length is None or got < length:
        try:
            d = s.recv(65536)
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            d = b""
        if not d:
            if length is not None:
                raise ConnectionError("closed in the middle of the body")
            break
        got += len(d)
    return status


def _hs_child(a, ctx, want_version, want_cipher, t_end, out_fd):
    req = (f"GET {a.path} HTTP/1.1\r\nHost: 127.0.0.1:{a.port}\r\n"
           f"User-Agent: bench-hs/1\r\nConnection: close\r\n\r\n").encode()
    ok = non2xx = 0
    errs, negotiated, lat = {}, {}, []
    while time.monotonic() < t_end:
        t0 = time.perf_counter()
        s = None
        try:
            raw = socket.create_connection(("127.0.0.1", a.port), timeout=10)
            try:
                s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
                s.sendall(req)
                status = _read_response(s)
                ver, ciph = s.version(), s.cipher()[0]
            finally:
                (s or raw).close()
        except Exception as e:  # noqa: BLE001 - count any failure kind
            k = type(e).__name__
            errs[k] = errs.get(k, 0) + 1
            continue
        neg = f"{ver} {ciph}"
        negotiated[neg] = negotiated.get(neg, 0) + 1
        if ver != want_version or (want_cipher and ciph != want_cipher):
            errs["wrong_tls_parameters"] = errs.get("wrong_tls_parameters", 0) + 1
            continue
        if 200 <= status < 300:
            ok += 1
            lat.append(time.perf_counter() - t0)
        else:
            non2xx += 1
    os.write(out_fd, (json.dumps({"ok": ok, "non2xx": non2xx, "errs": errs,
                                  "negotiated": negotiated, "lat": lat}) + "\n").encode())
    os._exit(0)


def cmd_hs(a):
    """Full mTLS handshakes for --duration seconds from --procs processes: each connection
    is a new TCP connection and a full handshake (no session offered) at exactly the given
    TLS version (and TLS 1.2 cipher suite), with the client certificate, then one GET and
    Connection: close. Prints one JSON line shaped like the `oha` summary, plus the
    negotiated version/cipher counts. A connection that negotiated anything else is an error."""
    version = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[a.tls]
    want_version = {"1.2": "TLSv1.2", "1.3": "TLSv1.3"}[a.tls]
    ctx = _client_ctx(a, version, a.cipher)
    _fan_out(a.procs, a.duration,
             lambda n, t_end, w: _hs_child(a, ctx, want_version, a.cipher, t_end, w))


def _fan_out(procs, duration, child):
    """Runs `child(n, t_end, out_fd)` in `procs` forked processes until `duration` has passed,
    gathers what each wrote (one JSON line: ok, non2xx, errs, negotiated, lat) and prints one
    JSON line shaped like the `oha` summary."""
    t0 = time.monotonic()
    t_end = t0 + duration
    kids = []
    for n in range(procs):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            for _, f in kids:
                f.close()
            child(n, t_end, w)
        os.close(w)
        kids.append((pid, os.fdopen(r)))
    ok = non2xx = 0
    errs, negotiated, lat = {}, {}, []
    for pid, f in kids:
        line = f.readline()
        os.waitpid(pid, 0)
        if not line:
            errs["client_process_died"] = errs.get("client_process_died", 0) + 1
            continue
        d = json.loads(line)
        ok += d["ok"]
        non2xx += d["non2xx"]
        lat += d["lat"]
        for src, dst in ((d["errs"], errs), (d["negotiated"], negotiated)):
            for k, v in src.items():
                dst[k] = dst.get(k, 0) + v
    total = time.monotonic() - t0
    lat.sort()

    def pct(q):
        return None if not lat else lat[min(len(lat) - 1, int(q * len(lat)))] * 1000.0

    print(json.dumps({
        "responses_2xx": ok, "responses_non2xx": non2xx,
        "errors": sum(errs.values()), "error_kinds": errs,
        "status_codes": {}, "total_s": total, "rps": ok / total if total > 0 else None,
        "p50_ms": pct(0.50), "p99_ms": pct(0.99), "negotiated": negotiated,
    }))


# ---------------------------------------------------------------- keep-alive client with per-request headers

def _ka_child(a, ctx, sets, offset, t_end, out_fd):
    """One keep-alive connection (a new one after a failure), each request with the next
    header set: the way CloudFront interleaves many viewers on one origin connection."""
    base = (f"GET {a.path} HTTP/1.1\r\nHost: 127.0.0.1:{a.port}\r\n"
            "User-Agent: Amazon CloudFront\r\n"
            "Via: 1.1 0123456789abcdef0123456789abcdef.cloudfront.net (CloudFront)\r\n")
    reqs = [(base + "".join(h + "\r\n" for h in hs) + "\r\n").encode() for hs in sets]
    ok = non2xx = 0
    errs, lat = {}, []
    i = offset
    s = None
    while time.monotonic() < t_end:
        t0 = time.perf_counter()
        try:
            if s is None:
                raw = socket.create_connection(("127.0.0.1", a.port), timeout=10)
                s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
            s.sendall(reqs[i % len(reqs)])
            status = _read_response(s)
        except Exception as e:  # noqa: BLE001 - count any failure kind, then reconnect
            k = type(e).__name__
            errs[k] = errs.get(k, 0) + 1
            if s is not None:
                s.close()
            s = None
            continue
        i += 1
        if 200 <= status < 300:
            ok += 1
            lat.append(time.perf_counter() - t0)
        else:
            non2xx += 1
    if s is not None:
        s.close()
    os.write(out_fd, (json.dumps({"ok": ok, "non2xx": non2xx, "errs": errs, "negotiated": {},
                                  "lat": lat}) + "\n").encode())
    os._exit(0)


def cmd_ka(a):
    """Keep-alive HTTP/1.1 requests for --duration seconds from --procs processes, one
    connection each, every request carrying the next set of headers from --headers (one set
    per line, headers separated by tabs; none: no extra headers). Prints one JSON line shaped
    like the `oha` summary."""
    ctx = _client_ctx(a)
    sets = [[]]
    if a.headers:
        with open(a.headers) as f:
            sets = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    _fan_out(a.procs, a.duration,
             lambda n, t_end, w: _ka_child(a, ctx, sets, n * len(sets) // max(1, a.procs), t_end, w))


# ---------------------------------------------------------------- syslog sink

def cmd_syslog_sink(a):
    """A UDP syslog receiver for HAProxy's `log 127.0.0.1:PORT local0`: appends each
    datagram as one line to --out (buffered; flushed whenever 0.2 s pass without a
    datagram, and on SIGTERM). Binds 127.0.0.1 only."""
    import signal
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for opt in (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, 16 << 20)
            break
        except OSError:
            continue
    sock.bind(("127.0.0.1", a.port))
    out = open(a.out, "ab", buffering=1 << 20)

    def stop(*_):
        out.flush()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sock.settimeout(0.2)
    print(json.dumps({"event": "ready", "port": a.port}), flush=True)
    recv, write = sock.recv, out.write
    while True:
        try:
            d = recv(65535)
        except socket.timeout:
            out.flush()
            continue
        write(d if d.endswith(b"\n") else d + b"\n")


# ---------------------------------------------------------------- oha summary

def cmd_oha(a):
    with open(a.file) as f:
        d = json.load(f)
    s = d.get("summary", {})
    codes = d.get("statusCodeDistribution", {}) or {}
    errs = d.get("errorDistribution", {}) or {}
    pct = d.get("latencyPercentiles", {}) or {}
    ok = sum(int(v) for k, v in codes.items() if str(k).startswith("2"))
    non2xx = sum(int(v) for k, v in codes.items() if not str(k).startswith("2"))
    nerr = sum(int(v) for v in errs.values())
    out = {
        "responses_2xx": ok,
        "responses_non2xx": non2xx,
        "errors": nerr,
        "error_kinds": errs,
        "status_codes": codes,
        "total_s": s.get("total"),
        "rps": s.get("requestsPerSec"),
        "p50_ms": _ms(pct.get("p50")),
        "p99_ms": _ms(pct.get("p99")),
    }
    print(json.dumps(out))


def _ms(v):
    return None if v is None else float(v) * 1000.0


# ---------------------------------------------------------------- report

TARGETS = ["mtls-shield", "mtls-shield-base", "nginx", "haproxy"]

# key, label, unit, better ("lower"/"higher"), goal ratio vs nginx (or None: the goals against
# HAProxy are read off the table by hand, see bench/README.md), format
METRICS = [
    ("ka_rps", "Keep-alive HTTP/1.1 req/s, 32 conns, CloudFront headers, access log off", "req/s", "higher", None, "{:,.0f}"),
    ("ka_p50_ms", "Keep-alive p50 latency (log off)", "ms", "lower", None, "{:.3f}"),
    ("ka_p99_ms", "Keep-alive p99 latency (log off)", "ms", "lower", 1.0, "{:.3f}"),
    ("ka_cpu_us_per_req", "Proxy CPU per keep-alive request, access log off", "µs", "lower", None, "{:.1f}"),
    ("ka_log_rps", "Keep-alive req/s, access log on (same load)", "req/s", "higher", None, "{:,.0f}"),
    ("ka_log_p99_ms", "Keep-alive p99 latency, access log on", "ms", "lower", None, "{:.3f}"),
    ("ka_log_cpu_us_per_req", "Proxy CPU per keep-alive request, access log on", "µs", "lower", 0.8, "{:.1f}"),
    ("ka_log_cost_us_per_req", "Access log cost per request (log on − log off, same round)", "µs", "lower", None, "{:.1f}"),
    ("ka64k_rps", "Keep-alive req/s, 64 KiB response body", "req/s", "higher", None, "{:,.0f}"),
    ("ka64k_cpu_us_per_req", "Proxy CPU per keep-alive request, 64 KiB body", "µs", "lower", None, "{:.1f}"),
    ("hs_cps", "Full mTLS handshakes/s, TLS 1.3 (oha, 1 request each)", "conn/s", "higher", None, "{:,.0f}"),
    ("hs_cpu_us_per_hs", "Proxy CPU per full handshake, TLS 1.3", "µs", "lower", 0.5, "{:.0f}"),
    ("hs12_cps", "Full mTLS handshakes/s, TLS 1.2 ECDHE-ECDSA-AES128-GCM-SHA256 (Python client)", "conn/s", "higher", None, "{:,.0f}"),
    ("hs12_cpu_us_per_hs", "Proxy CPU per full handshake, TLS 1.2 ECDHE-ECDSA-AES128-GCM", "µs", "lower", 0.5, "{:.0f}"),
    ("kav_plain_cpu_us_per_req", "Proxy CPU per keep-alive request from an edge, no viewer headers ([viewer] on; Python client, 8 conns)", "µs", "lower", None, "{:.1f}"),
    ("kav_cpu_us_per_req", "Proxy CPU per keep-alive request with a viewer chain (100 viewers interleaved, memo warm)", "µs", "lower", None, "{:.1f}"),
    ("kav_ratio", "Viewer request CPU / plain request CPU, same process and round (goal ≤ 1.15)", "×", "lower", None, "{:.3f}"),
    ("kav_first_sight_us", "First sight of a viewer chain: one full verification (memo off, minus plain)", "µs", "lower", None, "{:.0f}"),
    ("h2_rps", "h2 req/s, 4 conns x 25 streams", "req/s", "higher", None, "{:,.0f}"),
    ("h2_cpu_us_per_req", "Proxy CPU per h2 request", "µs", "lower", None, "{:.1f}"),
    ("idle_rss_kib_per_conn", "RSS per idle mTLS connection", "KiB", "lower", 0.7, "{:.1f}"),
    ("rss_rest_kib", "Proxy RSS at rest (after start, before any request)", "KiB", "lower", None, "{:,.0f}"),
    ("dl_mb_s", "100 MiB download throughput", "MB/s", "higher", None, "{:,.0f}"),
    ("dl_cpu_s_per_gb", "Proxy CPU per GB downloaded", "CPU s/GB", "lower", None, "{:.3f}"),
]


# Context figures, shown in a second table: they tell who was the bottleneck.
AUX = [
    ("ka_proxy_busy_pct", "Proxy CPU busy during keep-alive phase (log off)", "%", "{:.0f}"),
    ("ka_log_proxy_busy_pct", "Proxy CPU busy during keep-alive phase, access log on", "%", "{:.0f}"),
    ("ka64k_proxy_busy_pct", "Proxy CPU busy during 64 KiB keep-alive phase", "%", "{:.0f}"),
    ("hs_proxy_busy_pct", "Proxy CPU busy during TLS 1.3 handshake phase", "%", "{:.0f}"),
    ("hs12_proxy_busy_pct", "Proxy CPU busy during TLS 1.2 handshake phase", "%", "{:.0f}"),
    ("h2_proxy_busy_pct", "Proxy CPU busy during h2 phase", "%", "{:.0f}"),
    ("kav_plain_proxy_busy_pct", "Proxy CPU busy during the plain edge phase", "%", "{:.0f}"),
    ("kav_proxy_busy_pct", "Proxy CPU busy during the viewer phase", "%", "{:.0f}"),
    ("kav_cold_cpu_us_per_req", "Proxy CPU per viewer request with the memo off (every request verified)", "µs", "{:.1f}"),
    ("kav_verifications", "Viewer chains verified in full from the start of the viewer instance (check: 100, one per chain)", "chains", "{:,.0f}"),
    ("dl_proxy_busy_pct", "Proxy CPU busy during download", "%", "{:.0f}"),
    ("ka_user_us_per_req", "Proxy user-space CPU per keep-alive request, log off (the rest is kernel)", "µs", "{:.1f}"),
    ("ka_log_user_us_per_req", "Proxy user-space CPU per keep-alive request, log on", "µs", "{:.1f}"),
    ("hs_user_us_per_hs", "Proxy user-space CPU per full TLS 1.3 handshake (the rest is kernel)", "µs", "{:.0f}"),
    ("hs12_user_us_per_hs", "Proxy user-space CPU per full TLS 1.2 handshake", "µs", "{:.0f}"),
    ("ka_client_busy_pct", "Load tool (oha) CPU busy during keep-alive phase", "%", "{:.0f}"),
    ("hs_client_busy_pct", "Load tool (oha) CPU busy during TLS 1.3 handshake phase", "%", "{:.0f}"),
    ("hs12_client_busy_pct", "Load tool (Python) CPU busy during TLS 1.2 handshake phase", "%", "{:.0f}"),
    ("ka_log_lines_per_req", "Access log lines written per logged request (check: ≈ 1)", "lines", "{:.2f}"),
    ("ka_log_bytes_per_req", "Access log bytes per logged request", "B", "{:.0f}"),
    ("ka64k_mb_s", "64 KiB keep-alive phase throughput (response bodies)", "MB/s", "{:,.0f}"),
    ("hs_p99_ms", "TLS 1.3 handshake phase p99 (connect+TLS+request)", "ms", "{:.1f}"),
    ("hs12_p99_ms", "TLS 1.2 handshake phase p99 (connect+TLS+request)", "ms", "{:.1f}"),
    ("h2_p99_ms", "h2 p99 latency", "ms", "{:.2f}"),
    ("idle_conns_alive", "Idle connections open when RSS was read", "conns", "{:,.0f}"),
    ("idle_rss_base_kib", "Proxy RSS before the idle connections (after warm-up)", "KiB", "{:,.0f}"),
    ("idle_rss_after_kib", "Proxy RSS with the idle connections open", "KiB", "{:,.0f}"),
]


def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _stats(vals):
    xs = [x for x in vals if x is not None]
    if not xs:
        return {"median": None, "min": None, "max": None, "n": 0, "samples": vals}
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs),
            "samples": vals}


def cmd_report(a):
    with open(a.meta) as f:
        meta = json.load(f)
    samples = {}  # target -> metric -> {round: value}
    notes, tls = [], []
    with open(a.raw) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            rec = json.loads(line)
            if rec.get("kind") == "note":
                notes.append(rec)
                continue
            if rec.get("kind") == "tls":
                tls.append(rec)
                continue
            t, m, v = rec["target"], rec["metric"], rec["value"]
            samples.setdefault(t, {}).setdefault(m, {})[int(rec["round"])] = v
    targets = [t for t in TARGETS if t in samples] + [t for t in samples if t not in TARGETS]
    rounds = meta.get("settings", {}).get("rounds")
    results = {}
    for t in targets:
        results[t] = {}
        for m, by_round in samples[t].items():
            vals = [by_round[r] for r in sorted(by_round)]
            results[t][m] = _stats(vals)
            results[t][m]["rounds"] = sorted(by_round)

    def st(t, m):
        return results.get(t, {}).get(m, {})

    def med(t, m):
        return st(t, m).get("median")

    def ratio(num, den, key):
        """Ratio of medians, and the range of the same-round ratios."""
        s, n = med(num, key), med(den, key)
        r = (s / n) if (s is not None and n not in (None, 0)) else None
        a_ = samples.get(num, {}).get(key, {})
        b_ = samples.get(den, {}).get(key, {})
        per = [a_[k] / b_[k] for k in a_ if k in b_ and a_[k] is not None and b_[k] not in (None, 0)]
        return {"median_ratio": r, "round_min": min(per) if per else None,
                "round_max": max(per) if per else None, "rounds": len(per)}

    comparisons = []
    if "mtls-shield" in results and "nginx" in results:
        comparisons.append(("mtls-shield", "nginx"))
    if "mtls-shield" in results and "mtls-shield-base" in results:
        comparisons.append(("mtls-shield", "mtls-shield-base"))
    ratios = {f"{n}/{d}": {k: ratio(n, d, k) for k, *_ in METRICS} for n, d in comparisons}
    verdicts = {}
    for key, label, unit, better, goal, fmt in METRICS:
        if goal is not None:
            r = ratios.get("mtls-shield/nginx", {}).get(key, {}).get("median_ratio")
            verdicts[key] = None if r is None else (r <= goal)

    doc = {
        "meta": meta,
        "metrics": [{"key": k, "label": l, "unit": u, "better": b, "goal_ratio_vs_nginx": g}
                    for k, l, u, b, g, _ in METRICS],
        "results": results,
        # kept under its old name: ratio of the medians
        "ratio_mtls_shield_to_nginx": {k: v["median_ratio"] for k, v in
                                       ratios.get("mtls-shield/nginx", {}).items()},
        "ratios": ratios,
        "goal_met": verdicts,
        "tls_checks": tls,
        "notes": notes,
    }
    with open(a.out_json, "w") as f:
        json.dump(doc, f, indent=2, sort_keys=False)
        f.write("\n")

    def cell(t, key, fmt):
        d = st(t, key)
        v = d.get("median")
        if v is None:
            return "—"
        c = fmt.format(v)
        if d.get("n", 0) > 1:
            c += f" ({fmt.format(d['min'])}–{fmt.format(d['max'])})"
        if 0 < d.get("n", 0) < len(d.get("samples", [])):
            c += f" [{d['n']} of {len(d['samples'])}]"
        return c

    def rcell(n, d, key):
        r = ratios.get(f"{n}/{d}", {}).get(key, {})
        if r.get("median_ratio") is None:
            return "—"
        c = f"{r['median_ratio']:.2f}×"
        if r.get("rounds", 0) > 1:
            c += f" ({r['round_min']:.2f}–{r['round_max']:.2f})"
        return c

    nr = max((st(t, m).get("n", 0) for t in results for m in results[t]), default=0)
    lines = []
    title = " vs ".join(["mtls-shield"] + (["mtls-shield-base"] if "mtls-shield-base" in results else [])
                        + ["nginx", "HAProxy"])
    lines.append(f"# {title} — mTLS reverse proxy benchmark")
    lines.append("")
    lines.append(f"- Date: {meta.get('date')}")
    lines.append(f"- Machine: {meta.get('cpu_model')}, {meta.get('cpus')} cores, "
                 f"kernel {meta.get('kernel')}, {meta.get('os')}, {meta.get('memory', '?')} RAM")
    v = meta.get("versions", {})
    lines.append("- Versions:")
    for k in v:
        lines.append(f"  - {k}: {v[k]}")
    st_ = meta.get("settings", {})
    lines.append("- Settings: " + ", ".join(f"{k}={st_[k]}" for k in st_))
    lines.append("- Each proxy: 1 worker pinned to CPU 1; load tool and upstream on CPU 0; "
                 "TLS 1.2+1.3, client certificate required, no session resumption, "
                 "upstream keep-alive. Targets interleaved A B C A B C, each started fresh per round.")
    lines.append(f"- Each cell: **median (min–max) over {rounds if rounds is not None else nr} "
                 "round(s)**; a bracket [k of n] says only k rounds gave a value. Ratios: "
                 "ratio of the medians (range of the same-round ratios).")
    lines.append("")
    hdr = ["metric", "unit"] + targets + [f"{n} / {d}" for n, d in comparisons] + ["goal"]
    lines.append("| " + " | ".join(hdr) + " |")
    lines.append("|---|---|" + "---:|" * (len(targets) + len(comparisons)) + "---|")
    for key, label, unit, better, goal, fmt in METRICS:
        if goal is None:
            gs = ""
        else:
            ok = verdicts.get(key)
            mark = "" if ok is None else (" ✅ met" if ok else " ❌ missed")
            gs = f"≤ {goal:g}× nginx{mark}"
        row = [label, unit] + [cell(t, key, fmt) for t in targets] + \
              [rcell(n, d, key) for n, d in comparisons] + [gs]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append("Lower is better for latency, CPU and RSS; higher for req/s, conn/s and MB/s. "
                 "Keep-alive phases send CloudFront-shaped requests (User-Agent, Via, X-Amz-Cf-Id, "
                 "X-Forwarded-For, Accept-Encoding, CloudFront-Viewer-* headers).")
    lines.append("")
    lines.append("| context | unit | " + " | ".join(targets) + " |")
    lines.append("|---|---|" + "---:|" * len(targets))
    for key, label, unit, fmt in AUX:
        if not any(st(t, key) for t in targets):
            continue
        lines.append(f"| {label} | {unit} | " + " | ".join(cell(t, key, fmt) for t in targets) + " |")
    lines.append("")
    lines.append("A proxy busy near 100% was the bottleneck of its phase; well below 100% means "
                 "the load tool (sharing CPU 0 with the upstream) was, and req/s then say "
                 "little about the proxy; CPU per request still does.")
    lines.append("CPU = utime+stime of all the proxy's processes from /proc/PID/stat "
                 "(10 ms ticks) over the phase, divided by completed requests or handshakes.")
    if tls:
        lines.append("")
        lines.append("## Negotiated TLS (openssl s_client, once per target)")
        lines.append("")
        lines.append("| target | check | protocol | cipher | as wanted |")
        lines.append("|---|---|---|---|---|")
        for rec in tls:
            lines.append(f"| {rec.get('target')} | {rec.get('check')} | {rec.get('protocol')} | "
                         f"{rec.get('cipher')} | {'yes' if rec.get('ok') else 'NO'} |")
    if notes:
        lines.append("")
        lines.append("## Notes from the run")
        lines.append("")
        for n in notes:
            lines.append(f"- {n.get('target', '')} round {n.get('round', '')}: {n.get('text')}")
    lines.append("")
    lines.append("## Samples per round")
    lines.append("")
    lines.append("| metric | target | samples |")
    lines.append("|---|---|---|")
    for key, label, unit, better, goal, fmt in METRICS:
        for t in targets:
            vals = st(t, key).get("samples")
            if vals:
                lines.append(f"| {key} | {t} | " +
                             ", ".join("—" if x is None else fmt.format(x) for x in vals) + " |")
    with open(a.out_md, "w") as f:
        f.write("\n".join(lines) + "\n")


# ---------------------------------------------------------------- main

def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("pids", "cpu", "cpu-user", "rss"):
        sp = sub.add_parser(name)
        sp.add_argument("pid", type=int)
    sp = sub.add_parser("idle")
    sp.add_argument("--port", type=int, required=True)
    sp.add_argument("--count", type=int, default=2000)
    sp.add_argument("--ca", required=True)
    sp.add_argument("--cert", required=True)
    sp.add_argument("--key", required=True)
    sp.add_argument("--settle", type=float, default=2.0)
    sp.add_argument("--open-max", type=float, default=120.0)
    sp.add_argument("--hold-max", type=float, default=60.0)
    sp.add_argument("--procs", type=int, default=0, help="holder processes (0: count / per-proc)")
    sp.add_argument("--per-proc", type=int, default=5000)
    sp = sub.add_parser("hs")
    sp.add_argument("--port", type=int, required=True)
    sp.add_argument("--path", default="/")
    sp.add_argument("--procs", type=int, default=8)
    sp.add_argument("--duration", type=float, default=10.0)
    sp.add_argument("--tls", choices=("1.2", "1.3"), default="1.2")
    sp.add_argument("--cipher", default="")
    sp.add_argument("--ca", required=True)
    sp.add_argument("--cert", required=True)
    sp.add_argument("--key", required=True)
    sp = sub.add_parser("ka")
    sp.add_argument("--port", type=int, required=True)
    sp.add_argument("--path", default="/")
    sp.add_argument("--procs", type=int, default=8)
    sp.add_argument("--duration", type=float, default=10.0)
    sp.add_argument("--headers", default="")
    sp.add_argument("--ca", required=True)
    sp.add_argument("--cert", required=True)
    sp.add_argument("--key", required=True)
    sp = sub.add_parser("syslog-sink")
    sp.add_argument("--port", type=int, required=True)
    sp.add_argument("--out", required=True)
    sp = sub.add_parser("oha")
    sp.add_argument("file")
    sp = sub.add_parser("report")
    sp.add_argument("--raw", required=True)
    sp.add_argument("--meta", required=True)
    sp.add_argument("--out-md", required=True)
    sp.add_argument("--out-json", required=True)
    a = p.parse_args()
    if a.cmd == "pids":
        print(" ".join(map(str, tree_pids(a.pid))))
    elif a.cmd == "cpu":
        print(f"{tree_cpu_seconds(a.pid):.2f}")
    elif a.cmd == "cpu-user":
        print(f"{tree_cpu_seconds(a.pid, user_only=True):.2f}")
    elif a.cmd == "rss":
        print(tree_rss_kib(a.pid))
    elif a.cmd == "idle":
        cmd_idle(a)
    elif a.cmd == "hs":
        cmd_hs(a)
    elif a.cmd == "ka":
        cmd_ka(a)
    elif a.cmd == "syslog-sink":
        cmd_syslog_sink(a)
    elif a.cmd == "oha":
        cmd_oha(a)
    elif a.cmd == "report":
        cmd_report(a)


if __name__ == "__main__":
    main()
