#!/usr/bin/env bash
# Keep Cargo.toml's `rust-version` true, in two ways:
#  1. always: no dependency in Cargo.lock declares a newer rust-version (.ci/rust-version.py);
#  2. where the toolchain can be installed: `cargo +<rust-version> check --all-targets`, which also
#     catches our own code using a newer language feature, and dependencies that declare none.
# rustup downloads toolchains from the Rust project's own server, not a package registry; where
# that is not reachable, step 2 prints one line saying it was skipped, and why. (Our own use of
# newer std APIs is also caught by clippy's `incompatible_msrv` lint, which reads rust-version.)
#
#   bash .ci/rust-version.sh
set -euo pipefail
CI_NAME=rust-version
# shellcheck source=.ci/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$CI_REPO"

python3 .ci/rust-version.py

msrv=$(cargo metadata --no-deps --format-version 1 |
       python3 -c 'import json,sys; print(json.load(sys.stdin)["packages"][0]["rust_version"])')
command -v rustup >/dev/null 2>&1 || { echo "cargo +$msrv check: SKIPPED, not checked: no rustup"; exit 0; }

t0=$SECONDS
if ! rustup run "$msrv" rustc --version >/dev/null 2>&1; then
  log=$(mktemp)
  if timeout 300 rustup toolchain install "$msrv" --profile minimal --no-self-update >"$log" 2>&1; then
    echo "installed Rust $msrv (minimal profile) in $((SECONDS - t0)) s"
    rm -f "$log"
  else
    why=$(grep -m1 -iE 'error|could not|failed' "$log" || tail -n 1 "$log")
    rm -f "$log"
    echo "cargo +$msrv check: SKIPPED, not checked: rustup cannot install Rust $msrv here (${why:-timed out})"
    exit 0
  fi
fi

t0=$SECONDS
cargo "+$msrv" check --all-targets --quiet
echo "cargo +$msrv check --all-targets: ok in $((SECONDS - t0)) s"
