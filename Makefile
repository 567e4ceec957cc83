# The README's two commands: `make run` serves on port 5000, `make test` runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# `make run` is a developer's server: loopback only, so it is not exposed to the network by
# surprise (HOST=0.0.0.0 to serve the LAN). The image and the pods bind 0.0.0.0 (IWEBLENS_HOST).
HOST   ?= 127.0.0.1
PORT   ?= 5000

.PHONY: help run test quick check lint install clean

help:  ## list the targets with a line each
	@awk -F':.*## ' '/^[a-z][a-z0-9-]*:.*## / {printf "  make %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# Dependencies come from the hash-pinned locks (regenerate them with `make lock`), then the
# package, whose editable install compiles the C letterbox into src/ (again whenever its source
# changes). `make run` needs only the service's lock (~290 MB, as in the image); `make test` and
# the tool targets add the dev lock (tests, linters, engines, NNCF, the study: ~1.3 GB). The two
# locks pin the same versions of what they share. scripts/check-python.sh first: a Python without
# venv/ensurepip (Debian and Ubuntu without python3.X-venv) gets the one command that fixes it
# instead of a half-made .venv.
$(BIN)/iweblens: pyproject.toml requirements.lock setup.py src/iweblens/inference/_letterbox.c
	scripts/check-python.sh $(PYTHON)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.dev-installed: $(BIN)/iweblens requirements-dev.lock
	$(BIN)/pip install --quiet --require-hashes -r requirements-dev.lock
	touch $@

install: $(VENV)/.dev-installed  ## the service, the tools and the dev lock into .venv

run: $(BIN)/iweblens  ## serve on http://localhost:5000 (HOST=, PORT=)
	$(BIN)/iweblens serve --host $(HOST) --port $(PORT)

lint: install  ## ruff (lint and format) and mypy --strict
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

test: install lint  ## what CI runs: lint, system packages (root), the whole suite
	scripts/install-system-deps.sh
	scripts/install-kubectl.sh $(VENV)
	$(BIN)/iweblens fetch-model
	$(BIN)/pytest

# The inner loop: no pod (root), container, browser or other slow test (tests/conftest.py says
# which are which); a minute or two where `make test` takes a quarter of an hour.
QUICK_MARKS := not slow and not root and not docker and not browser

check: lint  ## lint and types only (what `make test` checks first)

quick: install  ## the fast tests only (no pod, container, browser or benchmark)
	scripts/install-kubectl.sh $(VENV)
	$(BIN)/iweblens fetch-model
	$(BIN)/pytest -q -m '$(QUICK_MARKS)'

# Removes the venv and what the project cached (model, Docker data-roots, debootstrap base, podman
# storage, test artifacts); says how much that freed. See scripts/clean.sh for the exact list.
clean:  ## remove .venv, test artifacts and ~/.cache/iweblens, saying how much
	scripts/clean.sh $(VENV)

# Container image and the kind cluster (README: "Deploy on Kubernetes (kind)").
DOCKER       ?= docker
KIND         ?= kind
KUBECTL      ?= kubectl
IMAGE        ?= iweblens:latest
ENGINE       ?= opencv
KIND_CLUSTER ?= iweblens
KUBE         := $(KUBECTL) --context kind-$(KIND_CLUSTER)
APP_LABEL    := app.kubernetes.io/name=iweblens

.PHONY: image kind-up kind-load k8s-apply k8s-autoscale k8s-scale k8s-logs kind-down

# ENGINE=openvino-int8 builds the INT8 image (README: "Inference engines").
image:  ## docker build the service image (ENGINE=openvino-int8 for INT8)
	$(DOCKER) build --build-arg ENGINE=$(ENGINE) --tag $(IMAGE) .

kind-up:
	$(KIND) get clusters 2>/dev/null | grep -qx '$(KIND_CLUSTER)' \
		|| $(KIND) create cluster --name $(KIND_CLUSTER) --config deploy/kind/cluster.yaml --wait 180s

kind-load:
	$(KIND) load docker-image $(IMAGE) --name $(KIND_CLUSTER)

k8s-apply:
	$(KUBE) apply -k deploy/k8s
	$(KUBE) rollout status deployment/iweblens --timeout=180s

k8s-autoscale:
	$(KUBE) apply -f deploy/k8s/hpa.yaml

k8s-scale:
	@test -n "$(N)" || { echo "usage: make k8s-scale N=<replicas>" >&2; exit 2; }
	$(KUBE) scale deployment/iweblens --replicas=$(N)
	$(KUBE) rollout status deployment/iweblens --timeout=180s
	$(KUBE) get pods -l $(APP_LABEL) -o wide

k8s-logs:
	$(KUBE) logs -l $(APP_LABEL) --prefix --tail=$(or $(TAIL),50) --max-log-requests=10

kind-down:
	$(KIND) delete cluster --name $(KIND_CLUSTER)

# Issue 5: every performance ratio next to its goal, all under a 0.5-CPU cgroup quota (root).
BENCH_IMAGES ?= ../shared/images/coco128

.PHONY: bench

bench: install  ## every speed goal under a 0.5-CPU quota (root), into docs/benchmarks.md
	$(BIN)/iweblens fetch-model
	$(BIN)/iweblens bench --images $(BENCH_IMAGES) --output docs/benchmarks.md

# Issue 7: reliability. `make soak` is the 10-minute soak (not in CI; the suite runs 60 s of it).
SOAK_IMAGES ?= $(firstword $(wildcard ../shared/images/coco128) tests/images)

.PHONY: soak lock

soak: install  ## 10 minutes of 32 clients on one imitated pod (root)
	$(BIN)/iweblens fetch-model
	$(BIN)/iweblens soak $(SOAK_IMAGES) --duration 600 --clients 32 --cpus 0.5

# Issue 12: one pod imitated by cgroups (the Deployment's CPU and memory limits, its probes) under
# each attack, judged by the issue's outcomes (root: cgroups). Figures go to STRESS_JSON; give an
# earlier run's JSON as STRESS_COMPARE to print the two side by side (docs/reliability.md).
STRESS_JSON    ?= docs/results/stress-after.json
STRESS_COMPARE ?= $(wildcard docs/results/stress-before.json)

.PHONY: stress

stress: install  ## every attack on a fresh imitated pod, judged (root)
	$(BIN)/iweblens fetch-model
	$(BIN)/iweblens stress $(SOAK_IMAGES) --label $(basename $(notdir $(STRESS_JSON))) \
		--json $(STRESS_JSON) $(addprefix --compare ,$(STRESS_COMPARE))

# Regenerate requirements.lock and requirements-dev.lock (hash-pinned) after editing dependencies.
lock: install  ## regenerate the hash-pinned locks
	scripts/lock.sh

# Issue 3: the pods x threads study (README: "The pods x threads study"). BACKEND=docker or
# kubernetes for the other backends; the report needs the identity fields, see the README.
STUDY_IMAGES ?= $(firstword $(wildcard ../shared/images/coco128) tests/images)
BACKEND      ?= local
STUDY_CSV    ?= docs/results/results-$(BACKEND).csv

.PHONY: study

study: install  ## the pods x threads study (BACKEND=local|docker|kubernetes)
	scripts/install-system-deps.sh
	$(BIN)/iweblens fetch-model
	$(BIN)/iweblens experiment --backend $(BACKEND) --images $(STUDY_IMAGES) --output $(STUDY_CSV)
	$(BIN)/iweblens plot $(STUDY_CSV) -o $(STUDY_CSV:.csv=.png)
