#!/usr/bin/env python3
"""Cross-check deploy/kubernetes against what mtls-shield relies on.

A schema validator proves that each manifest is a valid Kubernetes object; this proves that the
objects fit the proxy: the probes hit the admin listener named in the ConfigMap's config, every file
the config names is mounted (whole folder, no subPath, so rotations arrive), the grace period covers
preStop + shutdown_timeout, reload.watch_interval is set, the security context is locked down, and the
Service, PodDisruptionBudget and HorizontalPodAutoscaler point at the right pods.

usage: k8s_check.py [--bin MTLS_SHIELD] [--pki DIR] [MANIFEST_DIR]
  --bin/--pki: also run `mtls-shield check` on every config found, with its certificate paths
               pointed at the files of DIR (made by certs/openssl-recipe.sh DIR --with-crl).
Needs PyYAML; Python 3.11+ (tomllib).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib

import yaml

ERRORS = []
NOTES = []


def err(where, msg):
    ERRORS.append(f"{where}: {msg}")


def note(where, msg):
    NOTES.append(f"{where}: {msg}")


def duration_s(text, where):
    """humantime-style durations as the proxy's config takes them: 30s, 1m30s, 500ms, 2h."""
    if not isinstance(text, str) or not text.strip():
        err(where, f"duration {text!r} is not a string like \"30s\"")
        return 0.0
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    total, pos, s = 0.0, 0, text.replace(" ", "")
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ms|sec|min|s|m|h)", s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    if pos != len(s) or pos == 0:
        err(where, f"cannot parse duration {text!r}")
    return total


def host_port(addr, where):
    m = re.fullmatch(r"\[?([^\]]*?)\]?:(\d+)", addr or "")
    if not m:
        err(where, f"address {addr!r} is not host:port")
        return None, None
    return m.group(1), int(m.group(2))


def load_docs(root):
    docs = []  # (file, doc)
    for dirpath, _, files in os.walk(root):
        for f in sorted(files):
            if not f.endswith((".yaml", ".yml")):
                continue
            path = os.path.join(dirpath, f)
            try:
                with open(path) as fh:
                    for i, d in enumerate(yaml.safe_load_all(fh)):
                        if d is None:
                            continue
                        if not isinstance(d, dict):
                            err(path, f"document {i} is not a mapping")
                            continue
                        docs.append((os.path.relpath(path, root), d))
            except yaml.YAMLError as e:
                err(path, f"YAML does not parse: {e}")
    return docs


def dockerfile_config_path(repo):
    try:
        text = open(os.path.join(repo, "Dockerfile")).read()
    except OSError:
        return "/etc/mtls-shield/mtls-shield.toml"
    m = re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", text, re.M)
    if not m:
        return "/etc/mtls-shield/mtls-shield.toml"
    args = json.loads(m.group(1))
    return args[args.index("--config") + 1] if "--config" in args else None


def selector_matches(selector, labels):
    ml = (selector or {}).get("matchLabels", selector or {})
    return bool(ml) and all(labels.get(k) == v for k, v in ml.items())


def resolve_port(port, container):
    if isinstance(port, int):
        return port
    for p in container.get("ports", []) or []:
        if p.get("name") == port:
            return p.get("containerPort")
    return None


def prestop_seconds(container):
    ps = ((container.get("lifecycle") or {}).get("preStop")) or {}
    if "sleep" in ps:
        return int(ps["sleep"].get("seconds", 0))
    cmd = (ps.get("exec") or {}).get("command") or []
    if cmd and os.path.basename(cmd[0]) == "sleep" and len(cmd) > 1:
        return int(float(cmd[1]))
    return None


def mount_for(path, container, volumes, where, what):
    """The (mount, volume, relative file) that provides PATH inside CONTAINER."""
    best = None
    for vm in container.get("volumeMounts", []) or []:
        mp = vm["mountPath"].rstrip("/")
        if path.startswith(mp + "/") and (best is None or len(mp) > len(best["mountPath"].rstrip("/"))):
            best = vm
    if best is None:
        err(where, f"{what} {path} is not under any volumeMount of container {container['name']}")
        return None, None, None
    rel = path[len(best["mountPath"].rstrip("/")) + 1:]
    if best.get("subPath") or best.get("subPathExpr"):
        err(where, f"{what}: mount {best['mountPath']} uses subPath, so updates never reach the pod")
    if not best.get("readOnly"):
        err(where, f"{what}: mount {best['mountPath']} should be readOnly")
    vol = volumes.get(best["name"])
    if vol is None:
        err(where, f"volumeMount {best['name']} has no volume")
    return best, vol, rel


def key_for(vol, rel, where, what, objects):
    """Check that volume VOL provides file REL; returns (kind, name, key, optional)."""
    for kind, field, namefield in (("Secret", "secret", "secretName"), ("ConfigMap", "configMap", "name")):
        src = vol.get(field)
        if src is None:
            continue
        name = src.get(namefield)
        items = src.get("items")
        if items:
            match = [i for i in items if i.get("path") == rel]
            if not match:
                err(where, f"{what}: {kind} volume {vol['name']} maps no item to {rel!r} "
                           f"(items: {[i.get('path') for i in items]})")
                return kind, name, None, src.get("optional", False)
            key = match[0]["key"]
        else:
            key = rel
        obj = objects.get((kind, name))
        if obj is not None:
            data = {**(obj.get("data") or {}), **(obj.get("stringData") or {})}
            if key not in data:
                err(where, f"{what}: {kind} {name} has no key {key!r}")
        elif kind == "Secret" and not items and key not in ("tls.crt", "tls.key", "ca.crt"):
            note(where, f"{what}: Secret {name} is created outside the manifests; it needs key {key!r}")
        return kind, name, key, src.get("optional", False)
    if "projected" in vol:
        return "projected", vol["name"], rel, False
    err(where, f"{what}: volume {vol['name']} is neither a Secret nor a ConfigMap")
    return None, None, None, False


def check_deployment(fname, dep, objects, all_docs, repo, in_base, configs):
    name = dep["metadata"]["name"]
    where = f"{fname}: Deployment/{name}"
    spec = dep.get("spec", {})
    pod = spec.get("template", {}).get("spec", {})
    labels = spec.get("template", {}).get("metadata", {}).get("labels", {})
    if not selector_matches(spec.get("selector"), labels):
        err(where, "spec.selector does not match the pod template's labels")
    replicas = spec.get("replicas", 1)
    if replicas < 2:
        err(where, f"replicas is {replicas}; run 2 or more")
    containers = pod.get("containers", [])
    proxies = [c for c in containers if "mtls-shield" in c.get("image", "")]
    if len(proxies) != 1:
        err(where, f"expected one mtls-shield container, found {len(proxies)}")
        return
    c = proxies[0]
    cw = f"{where} container {c['name']}"
    volumes = {v["name"]: v for v in pod.get("volumes", []) or []}

    # --- the config file, from the ConfigMap mounted where the ENTRYPOINT (or args) reads it
    argv = (c.get("command") or []) + (c.get("args") or [])
    cfg_path = argv[argv.index("--config") + 1] if "--config" in argv else dockerfile_config_path(repo)
    mnt, vol, rel = mount_for(cfg_path, c, volumes, cw, "config")
    if vol is None:
        return
    kind, cm_name, key, _ = key_for(vol, rel, cw, "config", objects)
    if kind != "ConfigMap":
        err(cw, f"config {cfg_path} should come from a ConfigMap")
        return
    cm = objects.get(("ConfigMap", cm_name))
    if cm is None or key not in (cm.get("data") or {}):
        err(cw, f"ConfigMap {cm_name} with key {key} is not in the manifests")
        return
    try:
        cfg = tomllib.loads(cm["data"][key])
    except tomllib.TOMLDecodeError as e:
        err(cw, f"ConfigMap {cm_name} key {key} is not valid TOML: {e}")
        return
    cfgw = f"{cw} config (ConfigMap {cm_name})"
    configs.append((cfgw, cm["data"][key], cfg))
    cfg_dir = os.path.dirname(cfg_path)

    # --- reload without restart
    watch = (cfg.get("reload") or {}).get("watch_interval")
    if watch is None:
        err(cfgw, "reload.watch_interval is not set: a rotated Secret would not be picked up")
    else:
        duration_s(watch, cfgw)

    # --- listener and admin addresses vs ports and probes
    listener = cfg.get("listener") or {}
    _, lport = host_port(listener.get("address", "0.0.0.0:8443"), cfgw)
    admin = cfg.get("admin") or {}
    if "address" not in admin:
        err(cfgw, "[admin] address is not set: the probes have nothing to reach")
        return
    ahost, aport = host_port(admin["address"], cfgw)
    if ahost not in ("0.0.0.0", "::", ""):
        err(cfgw, f"admin address {admin['address']} is not reachable by the kubelet; use 0.0.0.0:{aport}")
    cports = {p.get("containerPort") for p in c.get("ports", []) or []}
    for what, port in (("listener", lport), ("admin", aport)):
        if port not in cports:
            err(cw, f"no containerPort {port} for the {what} address")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        pr = c.get(probe)
        if pr is None:
            if probe != "startupProbe":
                err(cw, f"{probe} is missing")
            continue
        hg = pr.get("httpGet")
        if not hg:
            err(cw, f"{probe} should be an httpGet on the admin listener")
            continue
        if hg.get("path") != path:
            err(cw, f"{probe} path is {hg.get('path')!r}, expected {path}")
        if resolve_port(hg.get("port"), c) != aport:
            err(cw, f"{probe} port {hg.get('port')!r} is not the admin port {aport}")
        if hg.get("scheme", "HTTP") != "HTTP":
            err(cw, f"{probe} must use HTTP (the admin listener is plain HTTP)")

    # --- graceful termination
    shutdown = duration_s(listener.get("shutdown_timeout", "30s"), cfgw)
    pre = prestop_seconds(c)
    if pre is None:
        err(cw, "no preStop sleep: the pod would stop before load balancers stop sending to it")
        pre = 0
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if not grace > pre + shutdown:
        err(where, f"terminationGracePeriodSeconds {grace} must exceed preStop {pre}s + shutdown_timeout {shutdown:g}s")
    for other in containers:
        if other is c:
            continue
        opre = prestop_seconds(other) or 0
        if opre < pre + shutdown:
            note(where, f"sidecar {other['name']} stops after {opre}s, before the proxy has drained ({pre}+{shutdown:g}s)")
        if not grace > opre:
            err(where, f"terminationGracePeriodSeconds {grace} must exceed sidecar {other['name']}'s preStop {opre}s")

    # --- hardening
    psc = pod.get("securityContext") or {}
    csc = c.get("securityContext") or {}
    if not csc.get("runAsNonRoot", psc.get("runAsNonRoot")):
        err(cw, "runAsNonRoot is not true")
    if not csc.get("readOnlyRootFilesystem"):
        err(cw, "readOnlyRootFilesystem is not true")
    if csc.get("allowPrivilegeEscalation", True):
        err(cw, "allowPrivilegeEscalation is not false")
    if "ALL" not in ((csc.get("capabilities") or {}).get("drop") or []):
        err(cw, "capabilities.drop does not contain ALL")
    res = c.get("resources") or {}
    for part in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if r not in (res.get(part) or {}):
                err(cw, f"resources.{part}.{r} is not set")

    # --- every file the config names is mounted from a Secret, whole folder
    files = [("listener.certificate", listener.get("certificate")),
             ("listener.private_key", listener.get("private_key")),
             ("client_auth.truststore", (cfg.get("client_auth") or {}).get("truststore"))]
    files += [(f"client_auth.crls[{i}]", p) for i, p in enumerate((cfg.get("client_auth") or {}).get("crls", []))]
    for what, p in files:
        if not p:
            err(cfgw, f"{what} is not set")
            continue
        full = os.path.normpath(p if os.path.isabs(p) else os.path.join(cfg_dir, p))
        mnt, vol, rel = mount_for(full, c, volumes, cw, what)
        if vol is None:
            continue
        kind, sname, key, optional = key_for(vol, rel, cw, what, objects)
        if what == "listener.private_key" and kind != "Secret":
            err(cw, f"{what} should come from a Secret, not a {kind}")
        if optional:
            err(cw, f"{what} comes from optional {kind} {sname}: if it is missing, start-up fails")
    for vm in c.get("volumeMounts", []) or []:
        if vm.get("subPath") or vm.get("subPathExpr"):
            err(cw, f"mount {vm['mountPath']} uses subPath: updates would never reach the pod")

    # --- upstream: a sidecar on loopback must exist
    up = (cfg.get("upstream") or {}).get("url", "")
    m = re.match(r"https?://(\[[^\]]+\]|[^/:]+)(?::(\d+))?", up)
    if not m:
        err(cfgw, f"upstream.url {up!r} does not parse")
    else:
        uhost = m.group(1).strip("[]")
        uport = int(m.group(2) or (443 if up.startswith("https") else 80))
        if uhost in ("127.0.0.1", "localhost", "::1"):
            sidecars = [o for o in containers if o is not c and
                        uport in {p.get("containerPort") for p in o.get("ports", []) or []}]
            if not sidecars:
                err(cw, f"upstream {up} is on loopback, but no other container declares containerPort {uport}")
        else:
            note(cfgw, f"upstream {up} is outside the pod")

    # --- Service, PDB, HPA
    services = [(f, d) for f, d in all_docs if d.get("kind") == "Service"
                and selector_matches(d.get("spec", {}).get("selector"), labels)]
    if not any(resolve_port(p.get("targetPort", p.get("port")), c) == lport
               for _, s in services for p in s["spec"].get("ports", [])):
        err(where, f"no Service sends traffic to the listener port {lport}")
    for f, s in services:
        for p in s["spec"].get("ports", []):
            tp = resolve_port(p.get("targetPort", p.get("port")), c)
            if tp is None:
                err(f"{f}: Service/{s['metadata']['name']}", f"targetPort {p.get('targetPort')!r} names no port of {c['name']}")
            if tp == aport and s["spec"].get("type") in ("LoadBalancer", "NodePort"):
                err(f"{f}: Service/{s['metadata']['name']}", "exposes the admin port outside the cluster")
    pdbs = [d for _, d in all_docs if d.get("kind") == "PodDisruptionBudget"
            and selector_matches(d.get("spec", {}).get("selector"), labels)]
    if not pdbs:
        err(where, "no PodDisruptionBudget selects its pods")
    for p in pdbs:
        ma = p["spec"].get("minAvailable")
        if isinstance(ma, int) and ma >= replicas:
            err(where, f"PodDisruptionBudget minAvailable {ma} >= replicas {replicas} blocks every node drain")
    hpas = [d for _, d in all_docs if d.get("kind") == "HorizontalPodAutoscaler"
            and d["spec"].get("scaleTargetRef", {}).get("kind") == "Deployment"
            and d["spec"]["scaleTargetRef"].get("name") == name]
    if in_base and not hpas:
        err(where, "no HorizontalPodAutoscaler targets it")
    for h in hpas:
        if h["spec"].get("minReplicas", 1) < 2:
            err(where, "HorizontalPodAutoscaler minReplicas is below 2")
        if not any(m.get("type") == "Resource" and m["resource"].get("name") == "cpu"
                   for m in h["spec"].get("metrics", [])):
            err(where, "HorizontalPodAutoscaler does not scale on CPU")


def run_check(binary, pki, configs):
    roles = {"certificate": "server.pem", "private_key": "server.key", "truststore": "truststore.pem"}
    for where, text, cfg in configs:
        new = text
        for section, k in (("listener", "certificate"), ("listener", "private_key"), ("client_auth", "truststore")):
            p = (cfg.get(section) or {}).get(k)
            if p:
                new = new.replace(f'"{p}"', json.dumps(os.path.join(pki, roles[k])))
        for p in (cfg.get("client_auth") or {}).get("crls", []):
            new = new.replace(f'"{p}"', json.dumps(os.path.join(pki, "crl.pem")))
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "mtls-shield.toml")
            with open(path, "w") as fh:
                fh.write(new)
            r = subprocess.run([binary, "check", "--config", path], capture_output=True, text=True)
            out = (r.stdout + r.stderr).strip().replace("\n", " | ")
            if r.returncode != 0:
                err(where, f"`mtls-shield check` exit {r.returncode}: {out}")
            else:
                print(f"ok   mtls-shield check: {where}: {out[:200]}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", nargs="?", default=None)
    ap.add_argument("--bin")
    ap.add_argument("--pki")
    a = ap.parse_args()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    root = a.dir or os.path.join(repo, "deploy", "kubernetes")
    docs = load_docs(root)
    objects = {}
    for f, d in docs:
        if d.get("kind") == "Kustomization":
            continue
        for field in ("apiVersion", "kind"):
            if field not in d:
                err(f, f"a document has no {field}")
        name = (d.get("metadata") or {}).get("name")
        if not name:
            err(f, f"a {d.get('kind')} has no metadata.name")
            continue
        if (d.get("kind"), name) in objects:
            err(f, f"{d['kind']}/{name} is defined twice")
        objects[(d.get("kind"), name)] = d

    # kustomization: lists every manifest beside it, and only existing ones
    base = set()
    kpath = os.path.join(root, "kustomization.yaml")
    if os.path.exists(kpath):
        k = yaml.safe_load(open(kpath))
        listed = k.get("resources", [])
        for r in listed:
            if not os.path.exists(os.path.join(root, r)):
                err("kustomization.yaml", f"resource {r} does not exist")
        here = {f for f in os.listdir(root) if f.endswith((".yaml", ".yml")) and f != "kustomization.yaml"}
        for f in sorted(here - set(listed)):
            err("kustomization.yaml", f"{f} is not listed in resources")
        base = set(listed)

    kinds = {d.get("kind") for _, d in docs}
    for needed in ("Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ConfigMap"):
        if needed not in kinds:
            err(root, f"no {needed} in the manifests")

    configs = []
    deps = [(f, d) for f, d in docs if d.get("kind") == "Deployment"]
    for f, d in deps:
        check_deployment(f, d, objects, docs, repo, f in base, configs)
    if not any("examples" in f and "127.0.0.1" in json.dumps(d) for f, d in docs):
        note(root, "no example with the upstream as a sidecar on 127.0.0.1")

    if a.bin:
        if not a.pki:
            sys.exit("--bin needs --pki")
        run_check(a.bin, a.pki, configs)

    for n in NOTES:
        print(f"note {n}")
    for e in ERRORS:
        print(f"FAIL {e}")
    print(f"k8s_check: {len(deps)} Deployment(s), {len(configs)} config(s), {len(docs)} document(s): "
          f"{'OK' if not ERRORS else str(len(ERRORS)) + ' problem(s)'}")
    sys.exit(1 if ERRORS else 0)


if __name__ == "__main__":
    main()
