#!/usr/bin/env bash
# Supply-chain policy of deny.toml: licences, duplicate crates (bans) and sources, always; RustSec
# advisories only where the advisory database (a git repository on GitHub, not a package registry)
# can be fetched. CI's network reaches the package registries only, so there the advisories are
# skipped with one line that says so; a machine that reaches GitHub checks them.
#
#   bash .ci/deny.sh
#
# cargo-deny is built from crates.io once, into $CARGO_HOME/bin (~5 min on 2 cores), and reused.
# If it cannot be installed, cargo-audit (advisories only) stands in, with the same caveat.
set -euo pipefail
CI_NAME=deny
# shellcheck source=.ci/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$CI_REPO"

# Pinned, so a new cargo-deny release (new lints, config changes) cannot turn CI red by itself.
DENY_VERSION=${CI_DENY_VERSION:-0.20.2}
CARGO_BIN=${CARGO_HOME:-$HOME/.cargo}/bin
ADVISORY_DB=https://github.com/rustsec/advisory-db

# ci_cargo_install CRATE [VERSION]: `cargo install --locked` CRATE unless $CARGO_BIN has it (at
# VERSION, if given). Prints one line when it installs, the build log only when that fails.
ci_cargo_install() {
  local crate=$1 version=${2:-} t0=$SECONDS log
  if [ -x "$CARGO_BIN/$crate" ] &&
     { [ -z "$version" ] || "$CARGO_BIN/$crate" --version 2>/dev/null | grep -qwF "$version"; }; then
    return 0
  fi
  log=$(mktemp)
  if nice cargo install --locked --quiet "$crate" ${version:+--version "=$version"} >"$log" 2>&1; then
    echo "installed $crate ${version:-(latest)} in $((SECONDS - t0)) s"
    rm -f "$log"
  else
    tail -n 30 "$log" >&2
    rm -f "$log"
    ci_warn "could not install $crate ${version:-(latest)} (after $((SECONDS - t0)) s)"
    return 1
  fi
}

skip_advisories() { echo "advisories: SKIPPED, not checked: $*"; }

if ci_cargo_install cargo-deny "$DENY_VERSION"; then
  t0=$SECONDS
  # Warnings (the duplicate versions) are printed without their inclusion trees, to keep the log
  # short: `cargo deny check bans` shows who pulls each one in.
  cargo deny check --hide-inclusion-graph licenses bans sources
  echo "licenses bans sources: checked in $((SECONDS - t0)) s"

  t0=$SECONDS
  if out=$(timeout 180 cargo deny fetch db 2>&1); then
    cargo deny --offline check advisories
    echo "advisories: checked against the RustSec database fetched just now, in $((SECONDS - t0)) s"
  else
    why=$(printf '%s\n' "$out" | grep -m1 -E '^(fatal|error)' || printf '%s\n' "$out" | tail -n 1)
    skip_advisories "the RustSec advisory database ($ADVISORY_DB) cannot be fetched from this" \
      "machine (${why:-cargo deny fetch db failed}); licences, bans and sources were checked"
  fi
  exit 0
fi

# Fallback: cargo-audit checks the advisories only (the same database, the same network caveat).
echo "deny: NOT CHECKED: licences, bans and sources (cargo-deny $DENY_VERSION could not be installed)"
if ! ci_cargo_install cargo-audit; then
  skip_advisories "neither cargo-deny nor cargo-audit could be installed"
  exit 0
fi
if timeout 60 git ls-remote "$ADVISORY_DB" HEAD >/dev/null 2>&1; then
  cargo audit
else
  skip_advisories "the RustSec advisory database ($ADVISORY_DB) cannot be reached from this machine"
fi
