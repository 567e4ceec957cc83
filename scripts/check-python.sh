#!/bin/sh
# Checks, before `make install` creates .venv, that PYTHON can make a virtualenv: version >= 3.11
# and the venv module with its ensurepip (Debian and Ubuntu split that into python3.X-venv).
# On failure it prints the one command that fixes it and exits 1.
#
#   scripts/check-python.sh [PYTHON]      (default: python3)
set -u
PYTHON="${1:-python3}"

fail() {
    echo "make: $1" >&2
    [ -n "${2:-}" ] && printf '  run:  %s\nthen run make again.\n' "$2" >&2
    exit 1
}

# `sudo ` unless already root; apt-get only where the system has it (Debian, Ubuntu and derivatives).
sudo_prefix() { [ "$(id -u)" -eq 0 ] || printf 'sudo '; }
apt_command() {
    command -v apt-get >/dev/null 2>&1 && printf '%sapt-get install %s' "$(sudo_prefix)" "$1"
}

command -v "$PYTHON" >/dev/null 2>&1 \
    || fail "$PYTHON was not found; iWebLens needs Python >= 3.11 with venv." "$(apt_command python3-venv)"

version="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" \
    || fail "$PYTHON does not run."
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || fail "$PYTHON is Python $version; iWebLens needs >= 3.11 (then: make PYTHON=python3.11 ...)." \
        "$(apt_command "python3.11 python3.11-venv")"

# Debian and Ubuntu ship venv without ensurepip (and the pip wheel it installs) unless
# python3.X-venv is installed; `python -m venv` then fails half way, leaving a broken .venv.
"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null \
    || fail "Python $version has no ensurepip, so it cannot create the virtualenv." \
        "$(apt_command "python$version-venv")"
