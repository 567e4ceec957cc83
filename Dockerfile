# iWebLens: YOLOv3-tiny object detection as a web service (uvicorn front, a thread per request).
#
#   docker build -t iweblens:latest .
#   docker run --rm -p 5000:5000 --cpus 0.5 iweblens:latest
#
#   docker build --build-arg ENGINE=openvino-int8 -t iweblens:int8 .   # the INT8 image (README)
#
# The build stage installs the locked dependencies and the package (compiling its C letterbox with
# gcc), and fetches the model files, sha256-verified, so the image starts and serves with no network
# at all. The final stage copies only the virtualenv and the model: no compilers, no pip cache, no
# sources.

FROM python:3.11-slim AS build

# opencv (the default) or openvino-int8; the INT8 image serves OpenVINO's INT8 network, quantized
# in this stage from the repository's calibration photographs.
ARG ENGINE=opencv

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# Dependencies first, so editing the sources does not reinstall them: exactly the versions and
# file hashes of requirements.lock (generated from pyproject.toml by scripts/lock.sh).
COPY pyproject.toml README.md requirements.lock ./
RUN pip install --require-hashes --requirement requirements.lock

# The INT8 image serves with OpenVINO (and the ONNX graph it compiles) at the versions of
# requirements-int8.lock, which quantizes below.
COPY requirements-openvino.lock requirements-int8.lock ./
RUN case "$ENGINE" in \
        opencv) ;; \
        openvino-int8) pip install --require-hashes --requirement requirements-openvino.lock ;; \
        *) echo "ENGINE must be opencv or openvino-int8, not $ENGINE" >&2; exit 1 ;; \
    esac

# The exact C letterbox (setup.py) needs a C compiler, here only: the final stage copies the venv.
# Debian's own versions of the bookworm base; pinning them would break at its next point release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install --yes --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

# `pip check` fails the build when the lock has fallen behind pyproject.toml's dependencies; the
# import fails it when the C letterbox was not built (pip would only warn, and the image would
# letterbox with the slower NumPy fallback).
COPY setup.py ./
COPY src ./src
RUN pip install --no-deps . \
    && pip check \
    && python -c "import iweblens.inference._letterbox" \
    && pip uninstall --yes pip setuptools

# `fetch-model` refuses any file whose sha256 is not the pinned one, so a bad download fails the
# build instead of the first request. Both bundled models are baked in, each in its own folder,
# so IWEBLENS_MODELS can name either with no network and a read-only root filesystem.
ENV IWEBLENS_MODEL_DIR=/opt/iweblens/models
RUN iweblens fetch-model --model yolov3-tiny --model yolov4-tiny \
    && rm -f "$IWEBLENS_MODEL_DIR"/*/.lock

# NNCF (SciPy, scikit-learn) quantizes in a virtualenv of its own, which the final stage never
# copies: 5 committed photographs, deterministic for given versions (the sidecar next to the model
# records the weights' sha256, the photographs and the versions).
COPY tests/images/*.jpg ./calibration/
RUN if [ "$ENGINE" = openvino-int8 ]; then \
        python -m venv /opt/quantize \
        && /opt/quantize/bin/pip install --require-hashes --requirement requirements-int8.lock \
        && /opt/quantize/bin/pip install --no-deps . \
        && /opt/quantize/bin/iweblens quantize --images calibration --count 5 \
        && rm -f "$IWEBLENS_MODEL_DIR"/*/.lock; \
    fi


FROM python:3.11-slim

ARG ENGINE=opencv

LABEL org.opencontainers.image.title="iweblens" \
      org.opencontainers.image.description="YOLOv3-tiny object detection web service"

# A fixed numeric id, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
RUN groupadd --system --gid 10001 iweblens \
    && useradd --system --uid 10001 --gid iweblens --no-create-home --home-dir /tmp iweblens

COPY --from=build /opt/iweblens/models /opt/iweblens/models
COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    IWEBLENS_MODEL_DIR=/opt/iweblens/models \
    IWEBLENS_ENGINE=$ENGINE \
    IWEBLENS_HOST=0.0.0.0 \
    IWEBLENS_PORT=5000

USER 10001:10001
WORKDIR /tmp
EXPOSE 5000

# Python's own urllib, so the image needs no curl; follows IWEBLENS_PORT when it is overridden.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('IWEBLENS_PORT', '5000') + '/healthz', timeout=4)"]

ENTRYPOINT ["iweblens", "serve"]
