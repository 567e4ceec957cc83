#!/usr/bin/env bash
# `make clean`: removes what the project itself creates, and says how much that freed.
#
#   scripts/clean.sh [VENV]      (default: .venv)
#
# In the checkout: the virtualenv, test-artifacts/, the C letterbox compiled into src/ and build/,
# and the tools' caches (.pytest_cache, .ruff_cache, __pycache__, *.egg-info). In the per-user cache (${XDG_CACHE_HOME:-~/.cache}/iweblens):
# the model files (models/), the private Docker engines' data-roots and the debootstrap base image
# (docker/, or the folders docker-engine.sh made in IWEBLENS_DOCKER_CACHE), podman's storage
# (podman/) and kubectl/. Nothing else: a model folder named by IWEBLENS_MODEL_DIR is the user's and
# stays. Refuses while a Docker engine or podman container still uses the cache (stop it first).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${1:-.venv}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/iweblens"
DOCKER_CACHE="${IWEBLENS_DOCKER_CACHE:-$CACHE/docker}"

say() { echo "make clean: $*" >&2; }

targets=("$VENV" test-artifacts build .pytest_cache .ruff_cache)
while IFS= read -r -d '' found; do targets+=("$found"); done < <(find src tests \
    \( -name __pycache__ -o -name '*.egg-info' \) -type d -prune -print0 -o -path 'src/*.so' -print0)
targets+=("$CACHE/models" "$CACHE/podman" "$CACHE/kubectl" "$CACHE/docker")
if [ "$DOCKER_CACHE" != "$CACHE/docker" ]; then
    # A folder the user chose: only what scripts/docker-engine.sh put there.
    for made in "$DOCKER_CACHE"/data-* "$DOCKER_CACHE"/debian-bookworm-*.tar "$DOCKER_CACHE"/debootstrap.log; do
        targets+=("$made")
    done
fi
existing=()
for target in "${targets[@]}"; do
    [ -e "$target" ] || [ -L "$target" ] && existing+=("$target")
done
[ -n "${IWEBLENS_MODEL_DIR:-}" ] && say "leaving IWEBLENS_MODEL_DIR=$IWEBLENS_MODEL_DIR alone (not the project's cache)"
[ ${#existing[@]} -eq 0 ] && { say "nothing to remove"; exit 0; }

# A running engine keeps its data-root mounted and open: removing it underneath would break it.
for target in "${existing[@]}"; do
    [ -d "$target" ] && [ ! -L "$target" ] || continue
    real="$(realpath "$target")"
    # The path goes to awk through the environment: in its arguments awk would find itself.
    busy="$(ROOT="$real/" awk 'index($2 "/", ENVIRON["ROOT"]) == 1 { print $2; exit }' /proc/self/mounts)"
    users="$(ps -eo pid=,args= | ROOT="$real" awk 'index($0, ENVIRON["ROOT"]) { print; exit }')"
    if [ -n "$busy" ] || [ -n "$users" ]; then
        say "$target is in use (${busy:+mounted: $busy}${users:+process: $users}); stop it first"
        say "  (scripts/docker-engine.sh stop, with its IWEBLENS_DOCKER_NAME; podman kube down ...)"
        exit 1
    fi
done

# du counts each file once even where targets overlap; -x stays on the target's filesystem.
freed="$(du -scx "${existing[@]}" | tail -n 1 | cut -f 1)"
for target in "${existing[@]}"; do
    printf '  %8s  %s\n' "$(du -shx "$target" | cut -f 1)" "$target" >&2
    rm -rf -- "$target"
done
rmdir "$CACHE" 2>/dev/null || true
say "freed $(numfmt --to=iec --suffix=B $((freed * 1024)))"
