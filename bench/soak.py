#!/usr/bin/env python3
"""Soak driver for bench/soak.sh: mixed good and hostile traffic against a running
mtls-shield, with the proxy's RSS and open file descriptors sampled from /proc.

Good traffic: keep-alive and fresh-connection GETs and 64 KiB POSTs with the client
certificate (Python threads), plus `oha` at a fixed rate when it is available.
Hostile traffic: TLS handshakes without a certificate, plain HTTP on the TLS port, slowloris
headers (one byte per second over an accepted TLS connection), silent TCP connections,
connections stalling mid-ClientHello, and oversized request heads.

Standard library only. Prints one sample line every SAMPLE seconds and a verdict; exits 1
when the process died, a good request failed, or RSS / fds are not flat.
"""

import http.server
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request

def serve_upstream():
    """`soak.py upstream`: the app behind the proxy. GET -> "hello", POST -> body length."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def reply(self, body):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self.reply(b"hello")

        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            self.reply(b"%d" % len(self.rfile.read(n)))

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"upstream 127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if len(sys.argv) > 1 and sys.argv[1] == "upstream":
    serve_upstream()
    sys.exit(0)

ADDR = os.environ["SOAK_ADDR"]  # host:port of the proxy
ADMIN = os.environ["SOAK_ADMIN"]  # host:port of its admin listener
PID = int(os.environ["SOAK_PID"])
CERTS = os.environ["SOAK_CERTS"]
SECONDS = int(os.environ.get("SOAK_SECONDS", "600"))
SAMPLE = int(os.environ.get("SOAK_SAMPLE", "10"))
WARMUP = min(30, max(5, SECONDS // 10))
OHA = os.environ.get("OHA", "")
OHA_QPS = os.environ.get("OHA_QPS", "100")
RSS_SLACK_KIB = int(os.environ.get("SOAK_RSS_SLACK_KIB", str(8 * 1024)))
FD_SLACK = int(os.environ.get("SOAK_FD_SLACK", "4"))

host, port = ADDR.rsplit(":", 1)
port = int(port)
stop = threading.Event()
counts = {}
count_lock = threading.Lock()
failures = []


def count(key, n=1):
    with count_lock:
        counts[key] = counts.get(key, 0) + n


def fail(msg):
    with count_lock:
        if len(failures) < 20:
            failures.append(msg)
    count("good_failed")


def rss_kib():
    with open(f"/proc/{PID}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fds():
    return len(os.listdir(f"/proc/{PID}/fd"))


def alive():
    try:
        os.kill(PID, 0)
    except OSError:
        return False
    with open(f"/proc/{PID}/stat") as f:
        return f.read().split(") ", 1)[1][0] != "Z"


def metrics():
    with urllib.request.urlopen(f"http://{ADMIN}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        try:
            out[name] = float(value)
        except ValueError:
            pass
    return out


def ctx(with_cert=True):
    c = ssl.create_default_context(cafile=f"{CERTS}/ca.pem")
    if with_cert:
        c.load_cert_chain(f"{CERTS}/client.pem", f"{CERTS}/client.key")
    return c


GOOD = ctx(True)
ANON = ctx(False)


def tls(context=GOOD, timeout=10):
    raw = socket.create_connection((host, port), timeout=timeout)
    return context.wrap_socket(raw, server_hostname="localhost")


def read_response(f):
    """Reads one HTTP/1.1 response from a file object; returns (status, body)."""
    status_line = f.readline()
    if not status_line:
        raise ConnectionError("closed")
    status = int(status_line.split()[1])
    length = None
    chunked = False
    while True:
        line = f.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        k, _, v = line.decode("latin-1").partition(":")
        k = k.strip().lower()
        if k == "content-length":
            length = int(v.strip())
        elif k == "transfer-encoding" and "chunked" in v.lower():
            chunked = True
    body = b""
    if chunked:
        while True:
            size = int(f.readline().split(b";")[0].strip(), 16)
            if size == 0:
                f.readline()
                break
            body += f.read(size)
            f.readline()
    elif length is not None:
        body = f.read(length)
    return status, body


def loop(fn, pause=0.0):
    """Runs `fn` until the end, `pause` seconds apart (hostile loops are paced so that the
    mix stays a mix and the proxy's refusal log stays a reasonable size)."""
    def run():
        while not stop.is_set():
            if pause:
                time.sleep(pause)
            try:
                fn()
            except Exception as e:  # hostile workers expect failures; good ones record them
                count(f"{fn.__name__}_exc")
                if fn.__name__.startswith("good"):
                    fail(f"{fn.__name__}: {e!r}")
                    time.sleep(0.2)
    t = threading.Thread(target=run, name=fn.__name__, daemon=True)
    t.start()
    return t


# ---- good traffic ------------------------------------------------------------------------

def good_keepalive():
    s = tls()
    f = s.makefile("rb")
    try:
        for i in range(50):
            if stop.is_set():
                break
            if i % 5 == 4:
                body = os.urandom(64 * 1024)
                s.sendall(b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                status, resp = read_response(f)
                if status != 200 or resp != b"%d" % len(body):
                    fail(f"upload: {status} {resp[:80]!r}")
                    return
            else:
                s.sendall(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
                status, resp = read_response(f)
                if status != 200 or resp != b"hello":
                    fail(f"get: {status} {resp[:80]!r}")
                    return
            count("good_requests")
    finally:
        s.close()


def good_fresh():
    s = tls()
    try:
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        status, resp = read_response(s.makefile("rb"))
        if status != 200 or resp != b"hello":
            fail(f"fresh: {status} {resp[:80]!r}")
        else:
            count("good_requests")
    finally:
        s.close()


# ---- hostile traffic ---------------------------------------------------------------------

def hostile_no_cert():
    try:
        s = tls(ANON, timeout=5)
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        data = s.recv(100)
        if data:
            fail(f"no-cert client got bytes: {data[:60]!r}")
        s.close()
    except (ssl.SSLError, OSError):
        pass
    count("hostile_no_cert")


def hostile_plain_http():
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        data = s.recv(100)
        if data:
            fail(f"plain HTTP got bytes: {data[:60]!r}")
    except OSError:
        pass
    s.close()
    count("hostile_plain_http")


def hostile_slowloris():
    s = tls(timeout=30)
    s.sendall(b"GET /slow HTTP/1.1\r\nHost: localhost\r\n")
    try:
        for _ in range(60):
            if stop.is_set():
                break
            s.sendall(b"X")
            time.sleep(1)
    except OSError:
        count("hostile_slowloris_cut")
    s.close()


def hostile_idle():
    s = socket.create_connection((host, port), timeout=30)
    try:
        s.recv(1)  # returns when the proxy drops it at handshake_timeout
    except OSError:
        pass
    s.close()
    count("hostile_idle")


def hostile_mid_handshake():
    s = socket.create_connection((host, port), timeout=30)
    s.sendall(bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]))
    try:
        s.recv(1)
    except OSError:
        pass
    s.close()
    count("hostile_mid_handshake")


def hostile_big_head():
    s = tls(timeout=10)
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n")
        status, _ = read_response(s.makefile("rb"))
        count(f"hostile_big_head_{status}")
    except OSError:
        count("hostile_big_head_reset")
    s.close()


def main():
    print(f"soak: {SECONDS}s against {ADDR} (pid {PID}); warm-up {WARMUP}s; oha: {OHA or 'not used'}")
    idle_rss, idle_fds = rss_kib(), fds()
    threads = []
    for _ in range(4):
        threads.append(loop(good_keepalive))
    for _ in range(2):
        threads.append(loop(good_fresh))
    for fn in (hostile_no_cert, hostile_plain_http, hostile_big_head):
        threads.append(loop(fn, pause=0.01))
    for _ in range(4):
        threads.append(loop(hostile_mid_handshake))
    for _ in range(8):
        threads.append(loop(hostile_slowloris))
    for _ in range(16):
        threads.append(loop(hostile_idle))
    oha = None
    if OHA:
        oha = subprocess.Popen(
            [OHA, "-z", f"{SECONDS}s", "-c", "8", "-q", OHA_QPS, "--no-tui", "--output-format", "json",
             "--cacert", f"{CERTS}/ca.pem", "--cert", f"{CERTS}/client.pem", "--key", f"{CERTS}/client.key",
             f"https://localhost:{port}/hello"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )

    start = time.time()
    time.sleep(WARMUP)
    base_rss, base_fds = rss_kib(), fds()
    samples = []
    print(f"{'t':>6} {'rss KiB':>9} {'fds':>5} {'active':>6} {'good req':>9} {'hostile':>8}")
    while time.time() - start < SECONDS:
        time.sleep(min(SAMPLE, max(0.1, SECONDS - (time.time() - start))))
        if not alive():
            print("soak: FAILED: the proxy died")
            return 1
        m = metrics()
        hostile = sum(v for k, v in counts.items() if k.startswith("hostile"))
        row = {
            "t": round(time.time() - start),
            "rss_kib": rss_kib(),
            "fds": fds(),
            "active": int(m.get("mtls_shield_connections_active", -1)),
            "good": counts.get("good_requests", 0),
            "hostile": hostile,
        }
        samples.append(row)
        print(f"{row['t']:>6} {row['rss_kib']:>9} {row['fds']:>5} {row['active']:>6} {row['good']:>9} {row['hostile']:>8}")

    stop.set()
    oha_summary = None
    if oha:
        out, err = oha.communicate(timeout=60)
        try:
            j = json.loads(out)
            oha_summary = {
                "requests": sum(j.get("statusCodeDistribution", {}).values()),
                "status": j.get("statusCodeDistribution"),
                "errors": j.get("errorDistribution"),
                "rps": round(j["summary"].get("requestsPerSec", 0), 1),
            }
        except Exception as e:
            oha_summary = {"error": f"{e!r}: {err[-300:]!r}"}
    # Let every hostile connection hit its timeout and every pooled connection idle out.
    for t in threads:
        t.join(timeout=70)
    # Then wait for the proxy to drop to idle: no connection, no pooled upstream socket
    # (pool_idle_timeout is short in the soak config), or give up after 30 s.
    drain_deadline = time.time() + 30
    m = metrics()
    while time.time() < drain_deadline and (
        m.get("mtls_shield_connections_active", 0) > 0 or fds() > idle_fds + FD_SLACK
    ):
        time.sleep(0.5)
        m = metrics()
    end_rss, end_fds = rss_kib(), fds()
    peak_rss = max([base_rss, end_rss] + [s["rss_kib"] for s in samples])
    handshakes = {k: v for k, v in m.items() if k.startswith("mtls_shield_handshakes_total{")}
    requests = {k: v for k, v in m.items() if k.startswith("mtls_shield_requests_total{")}

    print()
    print(f"soak: traffic counts {json.dumps(dict(sorted(counts.items())))}")
    if oha_summary:
        print(f"soak: oha {json.dumps(oha_summary)}")
    print(f"soak: proxy handshakes {json.dumps(handshakes)}")
    print(f"soak: proxy requests {json.dumps(requests)}")
    print(f"soak: RSS idle before traffic {idle_rss} KiB; start {base_rss} KiB (after {WARMUP}s warm-up); end {end_rss} KiB (traffic stopped, drained); peak {peak_rss} KiB")
    print(f"soak: open fds idle before traffic {idle_fds}; start {base_fds} (under load); end {end_fds} (drained; connections active: {int(m.get('mtls_shield_connections_active', -1))})")

    problems = list(failures)
    if not alive():
        problems.append("the proxy died")
    if end_rss > base_rss + max(RSS_SLACK_KIB, base_rss // 5):
        problems.append(f"RSS grew from {base_rss} to {end_rss} KiB")
    # Idle before vs idle after: every connection and pooled upstream socket must be gone.
    # (The upstream pool may keep idle keep-alive sockets: pool_idle_timeout in the config.)
    if end_fds > idle_fds + FD_SLACK:
        problems.append(f"open fds grew from {idle_fds} (idle, before) to {end_fds} (idle, after)")
    if counts.get("good_requests", 0) == 0:
        problems.append("no good request succeeded")
    if oha_summary:
        # Requests still in flight when oha's -z deadline hits are reported as aborted.
        errors = {k: v for k, v in (oha_summary.get("errors") or {}).items() if "deadline" not in k}
        if "error" in oha_summary or errors or set((oha_summary.get("status") or {}).keys()) - {"200"}:
            problems.append(f"oha saw errors or non-200 answers: {oha_summary}")
    if problems:
        print("soak: FAILED")
        for p in problems:
            print("  - " + p)
        return 1
    print("soak: OK (process alive, good requests all answered, RSS and fds flat)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
