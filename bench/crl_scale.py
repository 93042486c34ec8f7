#!/usr/bin/env python3
"""How the cost of revocation grows with the CRL: mtls-shield and nginx, same machine, same run.

Run through bench/crl_scale.sh (it builds the shield and installs nginx and openssl). For each
CRL size (revoked entries on one CA, like a device fleet's), it measures, for both proxies:

- RSS above the no-CRL baseline, at start and after RELOADS reloads (SIGHUP / nginx -s reload),
  as a multiple of the CRL's DER size;
- start-up time (exec to accepting) and reload time (signal to the new state serving);
- for mtls-shield only: server CPU per full handshake (the chain memo off) of a client of the
  big-CRL CA over that of a client of a CA whose CRL has 10 entries, as min / median / max over
  interleaved rounds, and the longest handshake seen by a client that keeps connecting while
  the shield reloads the big CRL (the accept loop must not stall while a CRL is parsed).

Everything binds 127.0.0.1; every phase is bounded in time and count.
"""
import json
import os
import random
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

SIZES = [int(s) for s in os.environ.get("SIZES", "10,100000,1000000").split(",")]
RELOADS = int(os.environ.get("RELOADS", "10"))
ROUNDS = int(os.environ.get("ROUNDS", "5"))
HS_SECONDS = float(os.environ.get("HS_SECONDS", "4"))
SHIELD = os.environ["MTLS_SHIELD_BIN"]
OUT = os.environ.get("OUT", "bench/results/crl-scale.md")
PORT_SHIELD = int(os.environ.get("PORT_SHIELD", "19443"))
PORT_NGINX = int(os.environ.get("PORT_NGINX", "19444"))
PORT_ADMIN = int(os.environ.get("PORT_ADMIN", "19445"))


def run(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---- PKI made with the openssl CLI, the way a CA's own tooling makes it -------------------

CA_CNF = """[ca]
default_ca = d
[d]
dir = {dir}
database = {dir}/index.txt
crlnumber = {dir}/crlnumber
certificate = {dir}/ca.pem
private_key = {dir}/ca.key
default_md = sha256
default_crl_days = 7
crl_extensions = ext
[ext]
authorityKeyIdentifier = keyid:always
"""


def make_ca(d, name):
    os.makedirs(d, exist_ok=True)
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.pem", "-days", "3650",
        "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    with open(f"{d}/ca.cnf", "w") as f:
        f.write(CA_CNF.format(dir=d))


def issue(ca, out, cn, ext):
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{out}.key", "-out", f"{out}.csr", "-subj", f"/CN={cn}")
    with open(f"{out}.ext", "w") as f:
        f.write(ext)
    run("openssl", "x509", "-req", "-in", f"{out}.csr", "-CA", f"{ca}/ca.pem", "-CAkey",
        f"{ca}/ca.key", "-out", f"{out}.pem", "-days", "365", "-extfile", f"{out}.ext",
        "-set_serial", "0x" + "%032x" % (random.getrandbits(127) | (1 << 127)))


def make_crl(ca, entries, out):
    """A CRL of `entries` revoked 16-byte serials (top bit set, as AWS Private CA's)."""
    rnd = random.Random(entries)
    with open(f"{ca}/index.txt", "w") as f:
        for n in range(entries):
            serial = "%032X" % (rnd.getrandbits(127) | (1 << 127))
            f.write(f"R\t301231235959Z\t261201000000Z\t{serial}\tunknown\t/CN=device-{n}\n")
    with open(f"{ca}/crlnumber", "w") as f:
        f.write("01\n")
    run("openssl", "ca", "-config", f"{ca}/ca.cnf", "-gencrl", "-out", out)
    der = out.replace(".pem", ".der")
    run("openssl", "crl", "-in", out, "-outform", "DER", "-out", der)
    return os.path.getsize(der)


# ---- processes ---------------------------------------------------------------------------

def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_port(port, deadline=120):
    end = time.time() + deadline
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.005)
    raise RuntimeError(f"port {port} never opened")


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


class Shield:
    def __init__(self, d, crls, memo=True):
        self.d = d
        self.conf = f"{d}/shield.toml"
        with open(self.conf, "w") as f:
            f.write(f"""[listener]
address = "127.0.0.1:{PORT_SHIELD}"
certificate = "{d}/server.pem"
private_key = "{d}/server.key"
[client_auth]
truststore = "{d}/truststore.pem"
crls = {json.dumps(crls)}
verified_chain_cache = {4096 if memo else 0}
[upstream]
url = "http://127.0.0.1:9"
[admin]
address = "127.0.0.1:{PORT_ADMIN}"
[log]
level = "info"
access_log = false
""")
        self.log = open(f"{d}/shield.log", "w")
        t0 = time.time()
        self.p = subprocess.Popen([SHIELD, "run", "--config", self.conf], stdout=self.log,
                                  stderr=subprocess.STDOUT)
        wait_port(PORT_SHIELD)
        self.startup = time.time() - t0

    def pids(self):
        return [self.p.pid]

    def reloads(self):
        # The metric, not the log: the log writer gathers lines for up to 100 ms.
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT_ADMIN}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith('mtls_shield_reloads_total{result="success"}'):
                    return float(line.split()[-1])
        return 0.0

    def reload(self):
        before = self.reloads()
        t0 = time.time()
        self.p.send_signal(signal.SIGHUP)
        while self.reloads() == before:
            if time.time() - t0 > 120:
                raise RuntimeError("reload never completed")
            time.sleep(0.002)
        return time.time() - t0

    def stop(self):
        self.p.terminate()
        self.p.wait(30)


class Nginx:
    def __init__(self, d, crl_file):
        self.d = d
        os.makedirs(f"{d}/ngx", exist_ok=True)
        crl = f"ssl_crl {crl_file};" if crl_file else ""
        with open(f"{d}/ngx/nginx.conf", "w") as f:
            f.write(f"""worker_processes 1;
pid {d}/ngx/nginx.pid;
error_log {d}/ngx/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {d}/ngx; proxy_temp_path {d}/ngx; fastcgi_temp_path {d}/ngx;
  uwsgi_temp_path {d}/ngx; scgi_temp_path {d}/ngx;
  server {{
    listen 127.0.0.1:{PORT_NGINX} ssl;
    ssl_certificate {d}/server.pem; ssl_certificate_key {d}/server.key;
    ssl_client_certificate {d}/truststore.pem; ssl_verify_client on; ssl_verify_depth 3;
    {crl}
    location / {{ return 200 "ok"; }}
  }}
}}
""")
        t0 = time.time()
        subprocess.run(["nginx", "-p", f"{d}/ngx", "-c", f"{d}/ngx/nginx.conf", "-e",
                        f"{d}/ngx/error.log"], check=True)
        wait_port(PORT_NGINX)
        self.startup = time.time() - t0
        with open(f"{d}/ngx/nginx.pid") as f:
            self.master = int(f.read())

    def pids(self):
        return [self.master] + children(self.master)

    def reload(self):
        old = set(children(self.master))
        t0 = time.time()
        os.kill(self.master, signal.SIGHUP)
        while True:
            now = set(children(self.master))
            if now and not (now & old):
                return time.time() - t0
            if time.time() - t0 > 120:
                raise RuntimeError("nginx reload never completed")
            time.sleep(0.002)

    def stop(self):
        os.kill(self.master, signal.SIGQUIT)
        end = time.time() + 30
        while os.path.exists(f"/proc/{self.master}") and time.time() < end:
            time.sleep(0.05)


def settle_rss(proc, seconds=1.0):
    time.sleep(seconds)  # a measurement pause, not a wait for a condition
    return rss_kib(proc.pids())


# ---- handshakes ----------------------------------------------------------------------------

def tls_context(d, client):
    ctx = ssl.create_default_context(cafile=f"{d}/server-ca/ca.pem")
    ctx.load_cert_chain(f"{d}/{client}.pem", f"{d}/{client}.key")
    ctx.check_hostname = False
    return ctx


def handshakes(ctx, port, seconds):
    """Full handshakes (no resumption) for `seconds`; returns (count, longest in s)."""
    n, longest = 0, 0.0
    end = time.time() + seconds
    while time.time() < end:
        t0 = time.time()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            # Without it a delayed ACK adds ~40 ms to some handshakes, hiding a real stall.
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with ctx.wrap_socket(s, server_hostname="localhost") as t:
                t.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                t.recv(1)
        longest = max(longest, time.time() - t0)
        n += 1
    return n, longest


def ratio_stats(xs):
    return {"min": min(xs), "median": statistics.median(xs), "max": max(xs)}


def main():
    random.seed(7)
    results = {"sizes": [], "machine": os.uname().nodename, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    with tempfile.TemporaryDirectory() as d:
        log("making the PKI")
        make_ca(f"{d}/server-ca", "Bench Server CA")
        issue(f"{d}/server-ca", f"{d}/server", "localhost",
              "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
        make_ca(f"{d}/fleet", "Fleet CA")
        make_ca(f"{d}/small", "Small CA")
        issue(f"{d}/fleet", f"{d}/fleet-client", "fleet-device",
              "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\n")
        issue(f"{d}/small", f"{d}/small-client", "small-device",
              "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\n")
        with open(f"{d}/truststore.pem", "w") as f:
            f.write(open(f"{d}/fleet/ca.pem").read() + open(f"{d}/small/ca.pem").read())
        make_crl(f"{d}/small", 10, f"{d}/small.crl.pem")

        base_shield = Shield(d, [])
        base_shield_rss = settle_rss(base_shield)
        base_shield.stop()
        base_nginx = Nginx(d, None)
        base_nginx_rss = settle_rss(base_nginx)
        base_nginx.stop()
        log(f"baselines: shield {base_shield_rss} KiB, nginx {base_nginx_rss} KiB")

        for size in SIZES:
            log(f"CRL of {size} entries")
            der = make_crl(f"{d}/fleet", size, f"{d}/fleet.crl.pem")
            # nginx wants every CA's CRL once ssl_crl is set: one file with both.
            with open(f"{d}/both.crl.pem", "w") as f:
                f.write(open(f"{d}/fleet.crl.pem").read() + open(f"{d}/small.crl.pem").read())
            row = {"entries": size, "der_bytes": der}
            crls = [f"{d}/fleet.crl.pem", f"{d}/small.crl.pem"]
            for name, make in (("mtls-shield", lambda: Shield(d, crls)),
                               ("nginx", lambda: Nginx(d, f"{d}/both.crl.pem"))):
                p = make()
                base = base_shield_rss if name == "mtls-shield" else base_nginx_rss
                at_start = settle_rss(p) - base
                times = [p.reload() for _ in range(RELOADS)]
                after = settle_rss(p) - base
                row[name] = {
                    "startup_s": p.startup,
                    "reload_s": ratio_stats(times),
                    "rss_above_base_kib_start": at_start,
                    "rss_above_base_kib_after_reloads": after,
                    "rss_over_der_start": at_start * 1024 / der,
                    "rss_over_der_after_reloads": after * 1024 / der,
                }
                p.stop()
                log(f"  {name}: {row[name]}")
            # Handshake CPU with the memo off, interleaved rounds, and the longest handshake
            # while the big CRL is reloaded.
            s = Shield(d, crls, memo=False)
            fleet, small = tls_context(d, "fleet-client"), tls_context(d, "small-client")
            handshakes(small, PORT_SHIELD, 0.5)
            ratios = []
            for _ in range(ROUNDS):
                per = {}
                for which, ctx in (("fleet", fleet), ("small", small)):
                    c0 = cpu_seconds(s.p.pid)
                    n, _ = handshakes(ctx, PORT_SHIELD, HS_SECONDS)
                    per[which] = (cpu_seconds(s.p.pid) - c0) / n
                ratios.append(per["fleet"] / per["small"])
            _, quiet_longest = handshakes(small, PORT_SHIELD, HS_SECONDS)
            import threading
            stop = threading.Event()
            longest = [0.0]

            def keep_connecting():
                while not stop.is_set():
                    _, l = handshakes(small, PORT_SHIELD, 0.2)
                    longest[0] = max(longest[0], l)
            t = threading.Thread(target=keep_connecting)
            t.start()
            for _ in range(3):
                s.reload()
            stop.set()
            t.join()
            s.stop()
            row["mtls-shield"]["handshake_cpu_ratio"] = ratio_stats(ratios)
            row["mtls-shield"]["longest_handshake_quiet_s"] = quiet_longest
            row["mtls-shield"]["longest_handshake_during_reloads_s"] = longest[0]
            log(f"  handshake CPU ratio {ratio_stats(ratios)}; longest {quiet_longest:.4f} s quiet, {longest[0]:.4f} s during reloads")
            results["sizes"].append(row)
    write(results)


def write(results):
    lines = [f"# CRL scale: mtls-shield and nginx, {results['date']}, host {results['machine']}",
             "",
             f"RSS is above each proxy's own no-CRL baseline, as a multiple of the CRL's DER size; "
             f"'after' is after {RELOADS} reloads. Reload time is min/median/max over those "
             f"reloads. nginx is master plus one worker, access logs off for both. The handshake "
             f"ratio is the server CPU per full handshake (chain memo off) of a client of the "
             f"big-CRL CA over one whose CA has a 10-entry CRL, min/median/max over {ROUNDS} "
             f"interleaved rounds.",
             "",
             "| entries | DER | proxy | start-up | reload (min/med/max) | RSS/DER start | RSS/DER after reloads |",
             "|---|---|---|---|---|---|---|"]
    for r in results["sizes"]:
        for name in ("mtls-shield", "nginx"):
            x = r[name]
            rl = x["reload_s"]
            # A multiple of a DER of a few hundred bytes is noise: show MiB only.
            ratio = (lambda k: f"{x[k]:.2f}× ") if r["der_bytes"] >= 65536 else (lambda k: "")
            lines.append(f"| {r['entries']:,} | {r['der_bytes'] / 1e6:.1f} MB | {name} | "
                         f"{x['startup_s']:.2f} s | {rl['min']:.2f}/{rl['median']:.2f}/{rl['max']:.2f} s | "
                         f"{ratio('rss_over_der_start')}({x['rss_above_base_kib_start'] / 1024:.0f} MiB) | "
                         f"{ratio('rss_over_der_after_reloads')}({x['rss_above_base_kib_after_reloads'] / 1024:.0f} MiB) |")
    lines += ["", "| entries | handshake CPU ratio (min/median/max) | longest handshake, quiet | longest handshake during 3 reloads |",
              "|---|---|---|---|"]
    for r in results["sizes"]:
        x = r["mtls-shield"]
        h = x["handshake_cpu_ratio"]
        lines.append(f"| {r['entries']:,} | {h['min']:.2f}/{h['median']:.2f}/{h['max']:.2f} | "
                     f"{x['longest_handshake_quiet_s'] * 1000:.1f} ms | {x['longest_handshake_during_reloads_s'] * 1000:.1f} ms |")
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(OUT.replace(".md", ".json"), "w") as f:
        json.dump(results, f, indent=1)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
