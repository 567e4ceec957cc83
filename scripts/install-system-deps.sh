#!/usr/bin/env bash
# Debian packages the full test suite needs (browser, Docker engine, load balancer, ...).
# Installs only what is missing; without root or apt it says so and leaves the dependent tests
# to skip with a reason.
set -euo pipefail
PACKAGES=(
    haproxy  # the load balancer in front of the study's local and docker replicas
    chromium chromium-driver  # the headless browser the try-it page is tested in
    docker.io debootstrap  # the container tests' private engine and stand-in base image
    docker-compose  # compose.yaml is run with Debian's Compose (v1)
    podman catatonit  # `podman kube play` runs deploy/k8s/deployment.yaml; catatonit is its pause binary
    libavif-bin libjpeg-turbo-progs  # avifenc and cjpeg: the cost model's 10/12-bit 4:4:4 AVIF and arithmetic JPEG
)
# Ubuntu ships Chromium only as a snap (its apt package merely installs the snap): not from apt there.
if grep -qx 'ID=ubuntu' /etc/os-release 2>/dev/null; then
    PACKAGES=("${PACKAGES[@]/chromium*/}")
    command -v chromium >/dev/null \
        || echo "install-system-deps: on Ubuntu install Chromium yourself: sudo snap install chromium" >&2
fi
missing=()
for package in "${PACKAGES[@]}"; do
    [ -n "$package" ] || continue
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "install-system-deps: cannot install ${missing[*]} (needs root and apt-get)" >&2
    exit 0
fi
echo "install-system-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
