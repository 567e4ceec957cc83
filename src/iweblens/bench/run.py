"""``iweblens bench``: every performance claim of the service as a ratio measured in one run.

Absolute times drift on shared machines (wall-clock figures moved 10-15 % between minutes on an
idle-looking machine), so the bench

- counts CPU time per image as well as wall time: the floor's process CPU clock, the served
  replicas' cgroup CPU count; the CPU-time ratios decide, the wall-clock ones are reported beside;
- alternates what it compares: each round measures every engine's floor and service, in
  A B C D order, then D C B A, and so on, and each ratio is taken per round;
- reports the median over rounds with the lowest and highest value, the CPU's ISA extensions
  and the load average.

What is measured, under the same CPU quota as a pod (``iweblens.bench.floor``,
``iweblens.bench.served``): the *floor* (decode + letterbox + forward + NMS in-process), the
*service* (replicas behind HAProxy at 1 and C client threads, 1 and R replicas), the reference
engine's floor and service on 12 MP copies of one photograph in four (``write_large``), and the
*naive baseline* (``iweblens.bench.naive``, once); outside the quota, the C letterbox against the
NumPy one (``iweblens.bench.letterbox``). Detections are compared outside the quota: float
engines must be identical to ``opencv`` on every image; the INT8 engine is calibrated on the first
half of the images by file name and judged by F1 on the second half. Every other bundled model is
measured against the default one on the same engines in the same rounds (``iweblens.bench.models``:
floor and served CPU per image), and every bundled model's memory per network
(``iweblens.bench.memory``) at each input size of ``memory_sizes``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from iweblens.bench.agreement import (
    INT8_ENGINE,
    REFERENCE_ENGINE,
    calibration_half,
    engine_agreement,
    prepare_int8,
)
from iweblens.bench.claims import Spread, at_least, claims_table, isa_line, machine_lines
from iweblens.bench.floor import floor_under_quota
from iweblens.bench.goals import (
    INT8_F1,
    LARGE_MEGAPIXELS,
    EngineFigures,
    engine_claims,
    int8_served_claim,
    large_photo_claim,
    letterbox_claim,
)
from iweblens.bench.memory import SIZES, MemoryFigures, measure_memory, memory_table
from iweblens.bench.memory import prepare as prepare_models
from iweblens.bench.models import ModelFigures, measure_model, models_table
from iweblens.bench.served import EngineService, measure_naive
from iweblens.bench.tables import floor_table, served_row, served_table
from iweblens.config import POD_CPUS, Settings
from iweblens.inference.resources import isa_flags
from iweblens.models.repository import DEFAULT_MODEL
from iweblens.models.store import PINNED

DEFAULT_ENGINES = ("opencv", "onnxruntime", "openvino", "openvino-int8")


DEFAULT_ROUNDS = 3


QUICK_ROUNDS = 2  # the fewest that still alternates (A B, then B A)


LARGE_EVERY = 4  # one photograph in four is also served at 12 MP (32 of the 128)


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


def write_large(images: Sequence[Path], folder: Path) -> list[Path]:
    """One photograph in ``LARGE_EVERY`` upscaled to ``LARGE_MEGAPIXELS`` with camera-like noise
    (``decoding.upscale``), saved as JPEG in ``folder``."""
    from iweblens.bench.decoding import write_upscaled

    chosen = images[::LARGE_EVERY]
    return [write_upscaled(path, LARGE_MEGAPIXELS, i, folder)[0] for i, path in enumerate(chosen)]


@dataclass
class Rounds:
    """Everything ``measure_rounds`` measured: per engine, the reference engine on the large
    photographs (floor and served, one of each per round), the other models per engine, the load
    at each round's start."""

    figures: list[EngineFigures]
    large: EngineFigures
    loads: list[tuple[float, float, float]]
    models: list[ModelFigures]


def measure_rounds(
    engines: Sequence[str],
    images: Sequence[Path],
    large: Sequence[Path],
    clients: int,
    replicas: int,
    rounds: int,
    api_key: str | None = None,
    models: Sequence[str] = (),
    model_engines: Sequence[str] = (),
) -> Rounds:
    """Every engine's floor and service once per round, alternating A B C, C B A, ...

    Each round starts each engine's replicas afresh and stops them after its runs, so only one
    engine is loaded at a time. The reference engine's round also measures the ``large``
    photographs (floor, then served at ``clients`` threads). On each of ``model_engines``, each
    of the other bundled ``models`` is measured in the same round (``bench.models``), the models
    alternating as the engines do. ``api_key`` is sent by the load client.
    """
    figures = {engine: EngineFigures(engine) for engine in engines}
    others = {
        (model, engine): ModelFigures(model, engine) for engine in model_engines for model in models
    }
    large_figures = EngineFigures(REFERENCE_ENGINE)

    def default_model(engine: str) -> None:
        figures[engine].floors.append(floor_under_quota(engine, images))
        # A fresh replica each round, as the floor is a fresh process: how fast OpenCV's
        # forward runs was set per process (54 or 65 ms on 4 KiB pages), so one replica kept for
        # every round would carry one draw into all of them.
        with EngineService(engine, api_key, model=DEFAULT_MODEL) as service:
            figures[engine].rounds.append(service.round(images, clients, replicas))
            if engine == REFERENCE_ENGINE and large:
                log(f"{engine}: {LARGE_MEGAPIXELS:g} MP photos")
                large_figures.floors.append(floor_under_quota(engine, large))
                large_figures.rounds.append([service.run(large, clients)])

    loads = []
    for index in range(rounds):
        loads.append(os.getloadavg())
        order = engines if index % 2 == 0 else list(reversed(engines))
        for engine in order:
            turn = [DEFAULT_MODEL, *(model for model in models if (model, engine) in others)]
            for model in turn if index % 2 == 0 else reversed(turn):
                log(f"round {index + 1}/{rounds}, {engine}, {model}: floor, then served")
                if model == DEFAULT_MODEL:
                    default_model(engine)
                else:
                    measure_model(others[model, engine], images, api_key)
    return Rounds(
        [figures[engine] for engine in engines], large_figures, loads, list(others.values())
    )


def run_bench(
    images: Sequence[Path],
    engines: Sequence[str],
    clients: int,
    replicas: int,
    rounds: int,
    settings: Settings,
    api_key: str | None = None,
    model_engines: Sequence[str] | None = None,
    memory_sizes: Sequence[int] = SIZES,
) -> list[str]:
    """Measure everything and return the report as Markdown lines.

    ``api_key`` is the key the load client sends to the replicas (which take their keys from the
    environment, as ``iweblens serve`` does). The other bundled models are measured on
    ``model_engines`` (None: every engine benchmarked), and every bundled model's memory per
    network on the same engines at each of ``memory_sizes``, once per round.
    """
    engines, notes = available_engines(engines)
    if REFERENCE_ENGINE not in engines:
        raise ValueError("the opencv engine is the reference and must be benchmarked")
    engines = [REFERENCE_ENGINE, *(engine for engine in engines if engine != REFERENCE_ENGINE)]
    if INT8_ENGINE in engines:
        log(f"quantizing on {len(calibration_half(images))} calibration images")
        prepare_int8(images, settings)
    models = list(PINNED)
    others = [model for model in models if model != DEFAULT_MODEL]
    model_engines = [e for e in engines if model_engines is None or e in model_engines]
    log(f"converting the models for {', '.join(model_engines)}")
    sizes = sorted({settings.input_size, *memory_sizes})
    prepare_models(models, model_engines, sizes, images, settings)
    with tempfile.TemporaryDirectory(prefix="iweblens-bench-") as folder:
        log(f"writing {LARGE_MEGAPIXELS:g} MP copies of one photograph in {LARGE_EVERY}")
        large = write_large(images, Path(folder))
        measured = measure_rounds(
            engines, images, large, clients, replicas, rounds, api_key, others, model_engines
        )
    figures, loads = measured.figures, measured.loads
    log(f"memory per network at {', '.join(map(str, memory_sizes))}, {rounds} repeats")
    memory = MemoryFigures.group(
        measure_memory(models, model_engines, memory_sizes, rounds, settings)
    )
    log("letterbox implementations, alternated")
    letterbox = letterbox_claim(images, settings.input_size, rounds)
    log(f"naive baseline at 1 and {clients} clients")
    naive = measure_naive(images, clients, settings.model_dir)
    log("agreement with opencv's detections")
    agreement_text, int8_tally = engine_agreement(engines, images, settings)

    reference = figures[0]
    fastest = max(
        figures,
        key=lambda fig: Spread.of([r.load.throughput for r in fig.served(clients, 1)]).median,
    )
    claims = []
    for fig in figures:
        claims += engine_claims(fig, clients, replicas, naive, fastest=fig is fastest)
    int8 = next((fig for fig in figures if fig.engine == INT8_ENGINE), None)
    if int8 is not None and int8_tally is not None:
        claims.append(int8_served_claim(int8, reference, clients))
        claims.append(
            at_least(
                f"F1 vs opencv, judged half [{INT8_ENGINE}]",
                [int8_tally.f1],
                INT8_F1,
                note="one value; its noise is under Detections",
            )
        )
    claims += [large_photo_claim(reference, measured.large, clients), letterbox]
    letterboxes = sorted({sample.letterbox for fig in figures for sample in fig.floors})
    isa = isa_line(isa_flags())
    quota = f"{POD_CPUS} CPU (cgroup cpu.cfs_quota_us) per process under test"
    return [
        "# Benchmarks",
        "",
        "Produced by `make bench` (`iweblens bench`); each goal is a ratio of figures of this run,",
        f"taken per round ({rounds} rounds, engines alternating) and shown as the median with the",
        "lowest and highest round. CPU-time figures decide; wall-clock figures are beside them.",
        "",
        *machine_lines(loads),
        f"- {len(images)} images, {quota}, {clients} client threads, {replicas} replicas max",
        f"- letterbox that ran in the floor (and the service): {', '.join(letterboxes)}",
        f"- fastest engine (judged against the 6x naive goals): {fastest.engine}",
        *(f"- {note}" for note in notes),
        "",
        "## Ratios and goals",
        "",
        f"CPU ISA: {isa}.",
        "",
        *claims_table(claims),
        "",
        "## The floor: in-process, one network, per image",
        "",
        f"CPU ISA: {isa}. Median (min-max) over rounds.",
        "",
        *floor_table(figures),
        "",
        "## Served: replicas behind HAProxy, the reference client's requests",
        "",
        f"CPU ISA: {isa}. Median (min-max) over rounds; the naive baseline is measured once.",
        "",
        *served_table(figures, naive, clients, replicas),
        served_row(
            f"{REFERENCE_ENGINE} @{clients}x1, {len(large)} photos at {LARGE_MEGAPIXELS:g} MP",
            [runs[0] for runs in measured.large.rounds],
        ),
        "",
        f"The floor of the same {LARGE_MEGAPIXELS:g} MP photos, {REFERENCE_ENGINE}:",
        "",
        *floor_table([measured.large]),
        "",
        "## Models: each bundled model against the default",
        "",
        f"CPU ISA: {isa}.",
        "",
        "CPU ms per image, each model on its own (a floor of its own, one replica loading it",
        "alone); median (min-max) over rounds, ratios to the default model taken per round.",
        "",
        *models_table(figures, measured.models),
        "",
        "Memory per network: the resident MiB one loaded, warmed-up network adds, with one",
        "compute thread and the service's malloc: a process's first network, the largest of the",
        f"next ones, and the larger of both; median (min-max) over {rounds} repeats.",
        "",
        *memory_table(memory, DEFAULT_MODEL),
        "",
        "## Detections against the opencv engine",
        "",
        *agreement_text,
        "",
    ]
