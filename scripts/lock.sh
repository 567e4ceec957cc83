#!/usr/bin/env bash
# Regenerate the hash-pinned lock files from pyproject.toml (run after changing a dependency).
#   requirements.lock      the service's runtime dependencies only (the Dockerfile installs these)
#   requirements-int8.lock runtime + int8 extra: the INT8 image's quantization (build stage only)
#   requirements-openvino.lock  runtime + openvino extra: what the INT8 image serves with, at the
#                          versions of requirements-int8.lock (it quantized with them)
#   requirements-dev.lock  runtime + dev, engines, int8, study and bench extras (CI and `make install`)
# Resolved for the target the image and CI run on (CPython 3.11, Linux x86_64, glibc >= 2.28);
# every file of each pinned release is hashed, so `pip install --require-hashes` refuses any
# artefact that differs from what was locked.
set -euo pipefail
cd "$(dirname "$0")/.."
UV="${UV:-.venv/bin/uv}"
[ -x "$UV" ] || { .venv/bin/pip install --quiet 'uv>=0.4'; }
compile() {
    "$UV" pip compile pyproject.toml --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
        --generate-hashes --no-header --quiet --native-tls "$@"
}
compile -o requirements.lock
compile --extra int8 -o requirements-int8.lock
compile --extra openvino --constraint requirements-int8.lock -o requirements-openvino.lock
compile --extra dev --extra engines --extra int8 --extra study --extra bench -o requirements-dev.lock
