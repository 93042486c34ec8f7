#!/usr/bin/env bash
# Supply-chain policy of deny.toml: licences, duplicate crates (bans) and sources, and RustSec
# advisories, always. The advisory database is a git repository on GitHub, which CI's network
# (package registries only) cannot reach. So: the live database where it can be fetched; otherwise
# the dated snapshot in ../shared/rustsec/advisory-db.bundle, cloned and checked offline. Either
# way the log says which database was used, and its date. Any vulnerability, unmaintained or
# unsound notice, or yanked crate fails the run; an `ignore` in deny.toml needs its reason.
#
#   bash .ci/deny.sh
#   MTLS_SHIELD_ADVISORY_BUNDLE=/path/advisory-db.bundle bash .ci/deny.sh   # another snapshot
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

# advisory_bundle: print the path of the snapshot bundle, if there is one.
advisory_bundle() {
  local candidate
  # The workspace's shared folder sits beside the repository; a CI clone may be one level
  # deeper, or elsewhere on a machine laid out like this one.
  for candidate in "${MTLS_SHIELD_ADVISORY_BUNDLE:-}" \
                   "$CI_REPO/../shared/rustsec/advisory-db.bundle" \
                   "$CI_REPO/../../shared/rustsec/advisory-db.bundle" \
                   /work/shared/rustsec/advisory-db.bundle; do
    if [ -n "$candidate" ] && [ -f "$candidate" ]; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

# check_advisories_from_bundle BUNDLE: clone the snapshot where cargo-deny looks for the
# database of deny.toml's URL, and check offline. The folder name is cargo-deny's own (a hash of
# the URL), so it is read from cargo-deny's answer on an empty db-path rather than guessed.
check_advisories_from_bundle() {
  local bundle=$1 work config dir date commit
  work=$(mktemp -d)
  # deny.toml with a db-path of our own, so the user's ~/.cargo/advisory-dbs is never touched.
  config=$work/deny.toml
  sed "s#^\[advisories\]#[advisories]\ndb-path = \"$work/dbs\"#" deny.toml >"$config"
  dir=$(cargo deny --offline --config "$config" check advisories 2>&1 |
        grep -o "$work/dbs/advisory-db-[0-9a-f]*" | head -n 1) || true
  [ -n "$dir" ] || ci_die "cargo-deny did not say where it reads the advisory database from"
  git clone -q --branch main "$bundle" "$dir" 2>/dev/null ||
    git clone -q "$bundle" "$dir" || ci_die "cannot clone the advisory snapshot $bundle"
  date=$(git -C "$dir" show -s --format=%cs HEAD)
  commit=$(git -C "$dir" rev-parse --short=12 HEAD)
  echo "advisories: the live database cannot be fetched; using the snapshot of $date" \
       "(advisory-db $commit, from $bundle)"
  if cargo deny --offline --config "$config" check advisories; then
    echo "advisories: ok against the RustSec snapshot of $date ($(( ($(date +%s) - $(date -d "$date" +%s)) / 86400 )) days old)"
    rm -rf "$work"
  else
    rm -rf "$work"
    ci_die "advisories: cargo deny found an advisory in the RustSec snapshot of $date (above)"
  fi
}

if ci_cargo_install cargo-deny "$DENY_VERSION"; then
  t0=$SECONDS
  # Warnings (the duplicate versions) are printed without their inclusion trees, to keep the log
  # short: `cargo deny check bans` shows who pulls each one in.
  cargo deny check --hide-inclusion-graph licenses bans sources
  echo "licenses bans sources: checked in $((SECONDS - t0)) s"

  t0=$SECONDS
  if out=$(timeout 180 cargo deny fetch db 2>&1); then
    cargo deny --offline check advisories
    echo "advisories: ok against the RustSec database fetched just now ($ADVISORY_DB), in $((SECONDS - t0)) s"
  elif bundle=$(advisory_bundle); then
    check_advisories_from_bundle "$bundle"
  else
    why=$(printf '%s\n' "$out" | grep -m1 -E '^(fatal|error)' || printf '%s\n' "$out" | tail -n 1)
    ci_die "advisories: the RustSec database ($ADVISORY_DB) cannot be fetched" \
      "(${why:-cargo deny fetch db failed}) and no snapshot bundle was found" \
      "(set MTLS_SHIELD_ADVISORY_BUNDLE)"
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
elif bundle=$(advisory_bundle); then
  db=$(mktemp -d)/advisory-db
  git clone -q "$bundle" "$db" || ci_die "cannot clone the advisory snapshot $bundle"
  echo "advisories: using the snapshot of $(git -C "$db" show -s --format=%cs HEAD) (from $bundle)"
  cargo audit --no-fetch --db "$db"
else
  skip_advisories "the RustSec advisory database ($ADVISORY_DB) cannot be reached from this machine"
fi
