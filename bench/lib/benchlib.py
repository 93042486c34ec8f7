#!/usr/bin/env python3
"""Helpers for bench/compare.sh: process accounting, the idle-connection holder,
oha output parsing and the report writer. Standard library only.

Subcommands:
  pids ROOT_PID                      the process and all its descendants
  cpu ROOT_PID                       utime+stime of that tree, in seconds
  cpu-user ROOT_PID                  utime alone (user space), in seconds
  rss ROOT_PID                       VmRSS of that tree, in KiB
  idle --port P --count N ...        open N mTLS connections, hold them idle
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

def cmd_idle(a):
    """Open `count` mTLS connections to 127.0.0.1:port, complete every handshake, hold
    them idle, print 'READY opened=N' on stdout, then wait until stdin says anything
    (or closes) or --hold-max seconds pass; then report how many are still open."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(a.ca)
    ctx.load_cert_chain(a.cert, a.key)
    # No session reuse from our side either: a fresh context per connection is not
    # needed because the servers under test issue no tickets and keep no cache.
    conns, failed, first_err = [], 0, None
    deadline = time.monotonic() + a.open_max
    for _ in range(a.count):
        if time.monotonic() > deadline:
            break
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
    # Finished; give the server time to process the last flights before measuring.
    time.sleep(a.settle)
    alive = _count_alive(conns)
    print(json.dumps({"event": "ready", "opened": len(conns), "failed": failed,
                      "alive": alive, "first_error": first_err}), flush=True)
    r, _, _ = select.select([sys.stdin], [], [], a.hold_max)
    alive_after = _count_alive(conns)
    for s in conns:
        try:
            s.close()
        except OSError:
            pass
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

TARGETS = ["mtls-shield", "nginx", "haproxy"]

# key, label, unit, better ("lower"/"higher"), goal ratio vs nginx (or None), format
METRICS = [
    ("ka_rps", "Keep-alive HTTP/1.1 req/s, 32 conns", "req/s", "higher", None, "{:,.0f}"),
    ("ka_p50_ms", "Keep-alive p50 latency", "ms", "lower", None, "{:.3f}"),
    ("ka_p99_ms", "Keep-alive p99 latency", "ms", "lower", 1.0, "{:.3f}"),
    ("ka_cpu_us_per_req", "Proxy CPU per keep-alive request", "µs", "lower", 0.8, "{:.1f}"),
    ("hs_cps", "Full mTLS handshakes/s (1 request each)", "conn/s", "higher", None, "{:,.0f}"),
    ("hs_cpu_us_per_hs", "Proxy CPU per full handshake", "µs", "lower", 0.5, "{:.0f}"),
    ("h2_rps", "h2 req/s, 4 conns x 25 streams", "req/s", "higher", None, "{:,.0f}"),
    ("h2_cpu_us_per_req", "Proxy CPU per h2 request", "µs", "lower", None, "{:.1f}"),
    ("idle_rss_kib_per_conn", "RSS per idle mTLS connection", "KiB", "lower", 1.0, "{:.1f}"),
    ("dl_mb_s", "100 MiB download throughput", "MB/s", "higher", None, "{:,.0f}"),
    ("dl_cpu_s_per_gb", "Proxy CPU per GB downloaded", "CPU s/GB", "lower", None, "{:.3f}"),
]


# Context figures, shown in a second table: they tell who was the bottleneck.
AUX = [
    ("ka_proxy_busy_pct", "Proxy CPU busy during keep-alive phase", "%", "{:.0f}"),
    ("hs_proxy_busy_pct", "Proxy CPU busy during handshake phase", "%", "{:.0f}"),
    ("h2_proxy_busy_pct", "Proxy CPU busy during h2 phase", "%", "{:.0f}"),
    ("dl_proxy_busy_pct", "Proxy CPU busy during download", "%", "{:.0f}"),
    ("ka_user_us_per_req", "Proxy user-space CPU per keep-alive request (the rest is kernel)", "µs", "{:.1f}"),
    ("hs_user_us_per_hs", "Proxy user-space CPU per full handshake (the rest is kernel)", "µs", "{:.0f}"),
    ("ka_client_busy_pct", "Load tool (oha) CPU busy during keep-alive phase", "%", "{:.0f}"),
    ("hs_client_busy_pct", "Load tool (oha) CPU busy during handshake phase", "%", "{:.0f}"),
    ("hs_p99_ms", "Handshake phase p99 (connect+TLS+request)", "ms", "{:.1f}"),
    ("h2_p99_ms", "h2 p99 latency", "ms", "{:.2f}"),
    ("idle_rss_base_kib", "Proxy RSS before the idle connections", "KiB", "{:,.0f}"),
]


def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def cmd_report(a):
    with open(a.meta) as f:
        meta = json.load(f)
    samples = {}  # target -> metric -> [values]
    notes = []
    with open(a.raw) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            rec = json.loads(line)
            if rec.get("kind") == "note":
                notes.append(rec)
                continue
            t, m, v = rec["target"], rec["metric"], rec["value"]
            samples.setdefault(t, {}).setdefault(m, []).append(v)
    targets = [t for t in TARGETS if t in samples] + [t for t in samples if t not in TARGETS]
    results = {}
    for t in targets:
        results[t] = {}
        for m, vals in samples[t].items():
            results[t][m] = {"median": _median(vals), "samples": vals}

    def med(t, m):
        return results.get(t, {}).get(m, {}).get("median")

    ratios, verdicts = {}, {}
    for key, label, unit, better, goal, fmt in METRICS:
        s, n = med("mtls-shield", key), med("nginx", key)
        r = (s / n) if (s is not None and n not in (None, 0)) else None
        ratios[key] = r
        if goal is not None:
            verdicts[key] = None if r is None else (r <= goal)

    doc = {
        "meta": meta,
        "metrics": [{"key": k, "label": l, "unit": u, "better": b, "goal_ratio_vs_nginx": g}
                    for k, l, u, b, g, _ in METRICS],
        "results": results,
        "ratio_mtls_shield_to_nginx": ratios,
        "goal_met": verdicts,
        "notes": notes,
    }
    with open(a.out_json, "w") as f:
        json.dump(doc, f, indent=2, sort_keys=False)
        f.write("\n")

    def cell(t, key, fmt):
        v = med(t, key)
        return "—" if v is None else fmt.format(v)

    lines = []
    lines.append("# mtls-shield vs nginx vs HAProxy — mTLS reverse proxy benchmark")
    lines.append("")
    lines.append(f"- Date: {meta.get('date')}")
    lines.append(f"- Machine: {meta.get('cpu_model')}, {meta.get('cpus')} CPUs, "
                 f"kernel {meta.get('kernel')}, {meta.get('os')}")
    v = meta.get("versions", {})
    lines.append("- Versions: " + ", ".join(f"{k} {v[k]}" for k in v))
    st = meta.get("settings", {})
    lines.append("- Settings: " + ", ".join(f"{k}={st[k]}" for k in st))
    lines.append("- Each proxy: 1 worker pinned to CPU 1; load tool and upstream on CPU 0; "
                 "TLS 1.2+1.3, client certificate required, no session resumption, "
                 "upstream keep-alive. Values are medians over rounds.")
    lines.append("")
    lines.append("| metric | unit | mtls-shield | nginx | haproxy | mtls-shield / nginx | goal |")
    lines.append("|---|---|---:|---:|---:|---:|---|")
    for key, label, unit, better, goal, fmt in METRICS:
        r = ratios.get(key)
        rs = "—" if r is None else f"{r:.2f}×"
        if goal is None:
            gs = ""
        else:
            ok = verdicts.get(key)
            mark = "" if ok is None else (" ✅ met" if ok else " ❌ missed")
            gs = f"≤ {goal:g}×{mark}"
        lines.append(f"| {label} | {unit} | {cell('mtls-shield', key, fmt)} | "
                     f"{cell('nginx', key, fmt)} | {cell('haproxy', key, fmt)} | {rs} | {gs} |")
    lines.append("")
    lines.append("Lower is better for latency, CPU and RSS; higher for req/s, conn/s and MB/s.")
    lines.append("")
    lines.append("| context | unit | mtls-shield | nginx | haproxy |")
    lines.append("|---|---|---:|---:|---:|")
    for key, label, unit, fmt in AUX:
        lines.append(f"| {label} | {unit} | {cell('mtls-shield', key, fmt)} | "
                     f"{cell('nginx', key, fmt)} | {cell('haproxy', key, fmt)} |")
    lines.append("")
    lines.append("A proxy busy near 100% was the bottleneck of its phase; well below 100% means "
                 "the load tool (sharing CPU 0 with the upstream) was, and req/s then say "
                 "little about the proxy; CPU per request still does.")
    lines.append("CPU = utime+stime of all the proxy's processes from /proc/PID/stat "
                 "(10 ms ticks) over the run, divided by completed requests or handshakes.")
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
            vals = results.get(t, {}).get(key, {}).get("samples")
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
    elif a.cmd == "oha":
        cmd_oha(a)
    elif a.cmd == "report":
        cmd_report(a)


if __name__ == "__main__":
    main()
