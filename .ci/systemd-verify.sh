#!/usr/bin/env bash
# Check deploy/systemd/mtls-shield.service offline, without a running systemd.
#
#   bash .ci/systemd-verify.sh
#
# 1. `systemd-analyze verify --root=TMP` on a throwaway root holding the unit, the stock units and the
#    programs its Exec*= lines name (the built mtls-shield if there is one, else a stub: verify only
#    needs them to be executable). Any complaint about the unit fails.
# 2. `systemd-analyze security --offline=yes`: overall exposure must stay at or below 2.0 ("OK").
# 3. `systemd-sysusers --root=TMP` creates the mtls-shield group from deploy/systemd/mtls-shield.sysusers.
# 4. The directives the issue asks for are present, and TimeoutStopSec exceeds the default
#    listener.shutdown_timeout (30s), so a graceful drain is not cut short by SIGKILL.
#
# Needs: Debian's systemd package (systemd-analyze, systemd-sysusers); installed with apt-get as root.
set -euo pipefail
CI_NAME=systemd-verify
# shellcheck source=.ci/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$CI_REPO"
UNIT=deploy/systemd/mtls-shield.service
SYSUSERS=deploy/systemd/mtls-shield.sysusers
NAME=$(basename "$UNIT")
ci_need systemd-analyze systemd
ci_need systemd-sysusers systemd

ROOT=$(mktemp -d "${TMPDIR:-/tmp}/mtls-shield-systemd.XXXXXX")
trap 'rm -rf "$ROOT"' EXIT
mkdir -p "$ROOT/etc/systemd/system" "$ROOT/usr/lib/systemd"
for d in /usr/lib/systemd/system /lib/systemd/system; do
  if [ -d "$d" ]; then cp -a "$d" "$ROOT/usr/lib/systemd/"; break; fi
done
cp "$UNIT" "$ROOT/etc/systemd/system/$NAME"

BIN=${MTLS_SHIELD_BIN:-target/release/mtls-shield}
mapfile -t EXES < <(sed -nE 's/^Exec[A-Za-z]*=[-@:+!]*([^ ]+).*/\1/p' "$UNIT" | sort -u)
for exe in "${EXES[@]}"; do
  mkdir -p "$ROOT$(dirname "$exe")"
  if [ "$(basename "$exe")" = mtls-shield ]; then
    if [ -x "$BIN" ]; then cp "$BIN" "$ROOT$exe"; else printf '#!/bin/sh\nexit 0\n' >"$ROOT$exe"; chmod 0755 "$ROOT$exe"; fi
  elif [ -x "$exe" ]; then
    cp "$exe" "$ROOT$exe"
  else
    ci_die "$UNIT runs $exe, which does not exist on this (Debian) system"
  fi
done

ci_step "systemd-analyze verify"
out=$(systemd-analyze verify --root="$ROOT" "$NAME" 2>&1) || { echo "$out"; ci_die "systemd-analyze verify failed"; }
if grep -F "$NAME" <<<"$out"; then ci_die "systemd-analyze verify complained about $NAME"; fi
echo "$NAME: no complaints"

ci_step "systemd-analyze security --offline"
systemd-analyze security --offline=yes --root="$ROOT" "$NAME" | tail -n 1
systemd-analyze security --offline=yes --threshold=20 --root="$ROOT" "$NAME" >/dev/null ||
  ci_die "exposure level above 2.0; see systemd-analyze security --offline=yes $UNIT"

ci_step "systemd-sysusers"
mkdir -p "$ROOT/etc/sysusers.d"
cp "$SYSUSERS" "$ROOT/etc/sysusers.d/mtls-shield.conf"   # where the install steps put it
systemd-sysusers --root="$ROOT" || ci_die "systemd-sysusers failed"
grep -q '^mtls-shield:' "$ROOT/etc/group" || ci_die "$SYSUSERS did not create group mtls-shield"
grep -q '^SupplementaryGroups=mtls-shield$' "$UNIT" || ci_die "the unit no longer uses the group from $SYSUSERS"
echo "group mtls-shield: created"

ci_step "required directives"
# shellcheck disable=SC2016  # $MAINPID is literal unit text
for d in 'DynamicUser=yes' 'ProtectSystem=strict' 'NoNewPrivileges=yes' 'ProtectHome=yes' 'PrivateTmp=yes' \
  'CapabilityBoundingSet=CAP_NET_BIND_SERVICE' 'AmbientCapabilities=CAP_NET_BIND_SERVICE' \
  'ExecReload=/bin/kill -HUP $MAINPID' 'Restart=on-failure' 'SystemCallFilter=@system-service' \
  'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX' \
  'ExecStart=/usr/local/bin/mtls-shield run --config /etc/mtls-shield/mtls-shield.toml'; do
  grep -qxF "$d" "$UNIT" || ci_die "$UNIT lacks: $d"
done
stop=$(sed -nE 's/^TimeoutStopSec=([0-9]+)s?$/\1/p' "$UNIT")
[ -n "$stop" ] && [ "$stop" -gt 30 ] || ci_die "TimeoutStopSec must be > 30s (listener.shutdown_timeout default)"
echo "all present; TimeoutStopSec=${stop}s > shutdown_timeout 30s"

echo
echo "systemd-verify: OK"
