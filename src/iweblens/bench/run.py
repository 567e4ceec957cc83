"""``iweblens bench``: every performance claim of the service as a ratio measured in one run.

Absolute times drift on shared machines; ratios taken in the same run on the same machine hold.
Everything that is timed runs under the same CPU quota as a pod (a cgroup, as the experiment's
``local`` backend does):

- the *floor* (``floor``): decode + letterbox + forward + postprocess in-process, one network, no
  HTTP; its throughput ``F`` is what the CPU allows and what the service is judged against;
- the *service* (``served``): ``iweblens serve`` replicas behind HAProxy, loaded with the
  reference client's multipart requests at 1 and at C client threads, with 1 and with R
  replicas, and its RSS;
- the *naive baseline* (``served``, ``naive``): the usual implementation of this assignment.

Detections are compared too (outside the quota: that is correctness, not speed): float engines
must be identical to ``opencv`` on every image; the INT8 engine is calibrated on the first half
of the images by file name and judged by F1 on the second half (``agreement``). ``claims`` turns
the figures into ratios next to their goals; this module runs it all.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from iweblens.bench.agreement import (
    INT8_ENGINE,
    REFERENCE_ENGINE,
    agreement_lines,
    calibration_half,
    prepare_int8,
)
from iweblens.bench.claims import (
    EngineFigures,
    claims_table,
    engine_claims,
    engine_comparison,
    machine_lines,
    measurement_table,
    profile_table,
)
from iweblens.bench.floor import floor_under_quota
from iweblens.bench.served import measure_naive, measure_service
from iweblens.config import POD_CPUS, Settings

DEFAULT_ENGINES = ("opencv", "onnxruntime", "openvino", "openvino-int8")


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def available_engines(wanted: Sequence[str]) -> tuple[list[str], list[str]]:
    """The engines that can run here, and notes on those that cannot."""
    from iweblens.inference.engines import ENGINES

    engines, notes = [], []
    for name in wanted:
        if name not in ENGINES:
            notes.append(f"{name}: not a registered engine")
        elif name == INT8_ENGINE and not _importable("nncf"):
            notes.append(f"{name}: skipped, NNCF missing (pip install -e '.[int8]')")
        else:
            engines.append(name)
    return engines, notes


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def run_bench(
    images: Sequence[Path],
    engines: Sequence[str],
    clients: int,
    replicas: int,
    settings: Settings,
    api_key: str | None = None,
) -> list[str]:
    """Measure everything and return the report as Markdown lines."""
    engines, notes = available_engines(engines)
    if REFERENCE_ENGINE not in engines:
        raise ValueError("the opencv engine is the reference and must be benchmarked")
    if INT8_ENGINE in engines:
        log(f"quantizing on {len(calibration_half(images))} calibration images")
        prepare_int8(images, settings)
    figures = []
    for engine in engines:
        log(f"{engine}: floor under a {POD_CPUS}-CPU quota")
        fig = EngineFigures(engine, *floor_under_quota(engine, images))
        log(f"{engine}: service at 1 and {clients} clients, 1 and {replicas} replicas")
        fig.served = measure_service(engine, images, clients, replicas, api_key)
        figures.append(fig)
    log(f"naive baseline at 1 and {clients} clients")
    naive = measure_naive(images, clients, settings.model_dir)
    log("agreement with opencv's detections")
    agreement = agreement_lines(engines, images, settings)

    reference = figures[0]
    fastest = max(figures, key=lambda fig: fig.run(clients, 1).load.throughput)
    claims = []
    for fig in figures:
        claims += engine_claims(fig, clients, replicas, naive, fastest=fig is fastest)
        if fig is not reference:
            claims.append(engine_comparison(fig, reference))
    quota = f"{POD_CPUS} CPU (cgroup cpu.cfs_quota_us) per process under test"
    return [
        "# Benchmarks",
        "",
        "Produced by `make bench` (`iweblens bench`); each goal is a ratio of figures of this run.",
        "",
        *machine_lines(),
        f"- {len(images)} images, {quota}, {clients} client threads, {replicas} replicas max",
        f"- fastest engine (judged against the 6x naive goals): {fastest.engine}",
        *(f"- {note}" for note in notes),
        "",
        "## Ratios and goals",
        "",
        *claims_table(claims),
        "",
        "## Measurements",
        "",
        *measurement_table(figures, naive, clients, replicas),
        "",
        "## Where the floor's CPU goes (per image, one thread)",
        "",
        *profile_table(figures),
        "",
        "## Detections against the opencv engine",
        "",
        *agreement,
        "",
    ]
