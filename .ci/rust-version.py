#!/usr/bin/env python3
"""Fail when a dependency declares a `rust-version` newer than ours.

    python3 .ci/rust-version.py            # from the repo root; runs `cargo metadata`

Cargo.toml's `rust-version` promises the oldest Rust that builds mtls-shield. Cargo refuses to
build a package on a toolchain older than the package's own `rust-version`, so ours is stale as
soon as any package in Cargo.lock (every platform's, with dev- and build-dependencies) asks for a
newer one: raise ours, or hold that dependency back. Packages that declare none cannot be checked
here; `.ci/rust-version.sh` builds with the declared toolchain where it can be installed.
"""
import json
import subprocess
import sys


def version(text):
    parts = [int(p) for p in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def show(v):
    return ".".join(map(str, v[:2] if v[2] == 0 else v))


meta = json.loads(subprocess.run(["cargo", "metadata", "--format-version", "1"],
                                 check=True, capture_output=True, text=True).stdout)
ours_ids = set(meta["workspace_members"])
resolved = {n["id"] for n in meta["resolve"]["nodes"]}
ours = [p for p in meta["packages"] if p["id"] in ours_ids]
deps = [p for p in meta["packages"] if p["id"] in resolved and p["id"] not in ours_ids]

bad = False
for pkg in ours:
    if not pkg.get("rust_version"):
        print(f"rust-version: FAIL: {pkg['name']} declares no rust-version in Cargo.toml")
        bad = True
        continue
    mine = version(pkg["rust_version"])
    declared = sorted(((version(p["rust_version"]), p["name"], p["version"])
                       for p in deps if p.get("rust_version")),
                      key=lambda d: (tuple(-x for x in d[0]), d[1], d[2]))
    newer = [d for d in declared if d[0] > mine]
    undeclared = len(deps) - len(declared)
    if newer:
        bad = True
        print(f"rust-version: FAIL: {pkg['name']} declares rust-version {show(mine)}, "
              f"but {len(newer)} dependencies need newer:")
        for v, name, ver in newer:
            print(f"  {name} {ver} needs {show(v)}")
        print("  raise `rust-version` in Cargo.toml, or hold those dependencies back "
              "(cargo update -p NAME --precise OLDER)")
    else:
        top = declared[0] if declared else None
        newest = f"; the newest any dependency asks for is {show(top[0])} ({top[1]} {top[2]})" if top else ""
        print(f"rust-version: {pkg['name']} declares {show(mine)}{newest}; "
              f"{len(declared)} of {len(deps)} dependencies declare one, {undeclared} do not")
sys.exit(1 if bad else 0)
