"""Memory per network: the resident bytes one loaded, warmed-up network adds, per model, engine and
input size, for the first network of a process and each next one.

Each measurement runs in a fresh child process (``python -m iweblens.bench.memory MODEL ENGINE SIZE
NETWORKS`` prints one JSON line) with the service's malloc (``with_huge_pages``) and one compute
thread, as in a 0.5-CPU pod (``set_compute_threads(1)``). The child imports what the server has
imported when it sizes its pool, reads its resident set size (``/proc/self/statm``), then builds
``NETWORKS`` detectors one after the other, each warmed up as the inference pool warms it (one
grey frame at the input size), and reads the resident size after each. The first network's figure
includes what its engine's library costs once per process; the next ones show what a further
inference thread costs. Converted graphs and INT8 models are made beforehand, in other processes:
a conversion in the measured process would count as the network's memory.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from iweblens.allocator import with_huge_pages
from iweblens.bench.claims import Spread
from iweblens.config import Settings
from iweblens.models.store import PINNED, ModelPaths, ModelStore

MiB = 1024 * 1024
# The sizes ``inference/sizing.py`` is calibrated at, and the INT8 engine's only one (the cfg's).
SIZES = (320, 416, 608)
NETWORKS = 3
INT8_ENGINE = "openvino-int8"
ONNX_ENGINES = ("onnxruntime", "openvino")


@dataclass(frozen=True)
class NetworkMemory:
    """One child's readings (bytes): its resident size before any network, and after each."""

    model: str
    engine: str
    input_size: int
    baseline: int
    after: tuple[int, ...]

    @property
    def added(self) -> list[int]:
        """Bytes each network added, in load order: the first, then each next one."""
        readings = [self.baseline, *self.after]
        return [later - earlier for earlier, later in itertools.pairwise(readings)]

    @property
    def first(self) -> int:
        return self.added[0]

    @property
    def next(self) -> int | None:
        """The most a further network added (None with one network measured)."""
        return max(self.added[1:], default=None)


def bundled_paths(model: str, settings: Settings) -> ModelPaths:
    """A bundled model's verified files in the cache (``ModelIntegrityError`` if missing)."""
    return ModelStore.in_cache(settings.model_dir, PINNED[model], progress=False).verified_paths()


def measure_in_process(
    model: str, engine: str, input_size: int, networks: int, settings: Settings
) -> NetworkMemory:
    """Load ``networks`` networks of ``model`` on ``engine`` in this process, warm each, and read
    the resident size before and after each (see the module's docstring)."""
    import numpy as np

    from iweblens.inference import pool  # noqa: F401  (what the server holds when it sizes)
    from iweblens.inference.detector import Detector
    from iweblens.inference.engines import set_compute_threads
    from iweblens.inference.resources import resident_bytes

    set_compute_threads(1)
    paths = bundled_paths(model, settings)
    frame = np.full((input_size, input_size, 3), 128, np.uint8)
    held = []
    baseline = resident_bytes()
    after = []
    for _ in range(networks):
        detector = Detector.from_settings(settings, paths, engine, input_size=input_size)
        detector.detect(frame)
        held.append(detector)
        after.append(resident_bytes())
    return NetworkMemory(model, engine, input_size, baseline, tuple(after))


def measure_child(model: str, engine: str, input_size: int, networks: int) -> NetworkMemory:
    """``measure_in_process`` in a fresh child process with the service's malloc."""
    command = [sys.executable, "-m", "iweblens.bench.memory", model, engine, str(input_size)]
    output = subprocess.run(
        [*command, str(networks)],
        env=with_huge_pages(os.environ),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result = json.loads(output.strip().splitlines()[-1])
    return NetworkMemory(**{**result, "after": tuple(result["after"])})


def sizes_for(engine: str, sizes: Sequence[int], paths: ModelPaths) -> list[int]:
    """The sizes ``engine`` can run the model at: the INT8 model only at the cfg's."""
    if engine != INT8_ENGINE:
        return list(sizes)
    from iweblens.models.onnx_export import graph_input_size

    graph = graph_input_size(paths)
    return [size for size in sizes if size == graph]


def _quantize(model: str, images: Sequence[Path], settings: Settings) -> None:
    from iweblens.bench.agreement import calibration_half
    from iweblens.inference.quantize import quantize

    paths = bundled_paths(model, settings)
    quantize(paths, calibration_half(images), settings.input_size)


def _convert(model: str, sizes: Sequence[int], settings: Settings) -> None:
    from iweblens.models.onnx_export import ensure_onnx

    paths = bundled_paths(model, settings)
    for size in sizes:
        ensure_onnx(paths, size)


def _in_child(target: Callable[..., None], *args: object) -> None:
    # NNCF and OpenVINO leave threads spinning, and a conversion's memory stays with the process.
    child = multiprocessing.get_context("spawn").Process(target=target, args=args)
    child.start()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"{target.__name__} failed (exit code {child.exitcode})")


def prepare(
    models: Sequence[str],
    engines: Sequence[str],
    sizes: Sequence[int],
    images: Sequence[Path],
    settings: Settings,
) -> None:
    """Make what the engines load, each in a child process: the ONNX graphs at ``sizes`` and,
    when ``openvino-int8`` is wanted, each model's INT8 model (calibrated on the first half of
    ``images`` by file name, as ``bench.agreement.prepare_int8``)."""
    from iweblens.inference.engines.openvino import quantized_model

    if not any(engine in (*ONNX_ENGINES, INT8_ENGINE) for engine in engines):
        return
    for model in models:
        _in_child(_convert, model, list(sizes), settings)
        if INT8_ENGINE in engines:
            try:
                quantized_model(bundled_paths(model, settings))
            except FileNotFoundError:
                _in_child(_quantize, model, list(images), settings)


def measure_memory(
    models: Sequence[str],
    engines: Sequence[str],
    sizes: Sequence[int],
    repeats: int,
    settings: Settings,
    networks: int = NETWORKS,
) -> list[NetworkMemory]:
    """Every (model, engine, size) the engine can run, ``repeats`` times, in alternating order
    (A B C, then C B A, ...); each reading a fresh child (``measure_child``)."""
    combos = [
        (model, engine, size)
        for model in models
        for engine in engines
        for size in sizes_for(engine, sizes, bundled_paths(model, settings))
    ]
    readings = []
    for index in range(repeats):
        for model, engine, size in combos if index % 2 == 0 else reversed(combos):
            readings.append(measure_child(model, engine, size, networks))
    return readings


@dataclass(frozen=True)
class MemoryFigures:
    """The readings of one (model, engine, size), one per repeat, in the order measured (MiB):
    the first network, the most a next one added, and the most of both (what sizing counts for
    every network)."""

    model: str
    engine: str
    input_size: int
    first: tuple[float, ...]
    next: tuple[float, ...]

    @property
    def per_network(self) -> tuple[float, ...]:
        if not self.next:
            return self.first
        return tuple(max(pair) for pair in zip(self.first, self.next, strict=True))

    @classmethod
    def group(cls, readings: Sequence[NetworkMemory]) -> list[MemoryFigures]:
        """One entry per (model, engine, size), in the order first measured."""
        keys = list(dict.fromkeys((r.model, r.engine, r.input_size) for r in readings))
        figures = []
        for key in keys:
            mine = [r for r in readings if (r.model, r.engine, r.input_size) == key]
            firsts = tuple(r.first / MiB for r in mine)
            nexts = tuple(r.next / MiB for r in mine if r.next is not None)
            figures.append(cls(*key, firsts, nexts))
        return figures


def memory_table(figures: Sequence[MemoryFigures], reference: str) -> list[str]:
    """Markdown: one row per (model, engine, size): MiB of the first network, of the largest next
    one and of the larger of both, as median (min-max) over repeats, and that last figure's ratio
    to ``reference``'s at the same engine and size, taken per repeat."""
    by_key = {(f.model, f.engine, f.input_size): f for f in figures}
    lines = [
        "| model | engine | input | first network MiB | each next MiB | per network MiB "
        f"| per network / {reference} |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for fig in figures:
        base = by_key.get((reference, fig.engine, fig.input_size))
        ratio = "-"
        if base is not None and fig.model != reference:
            pairs = zip(fig.per_network, base.per_network, strict=True)
            ratio = Spread.of([mine / theirs for mine, theirs in pairs]).text(digits=2)
        nxt = Spread.of(fig.next).text(digits=0) if fig.next else "-"
        lines.append(
            f"| {fig.model} | {fig.engine} | {fig.input_size} "
            f"| {Spread.of(fig.first).text(digits=0)} | {nxt} "
            f"| {Spread.of(fig.per_network).text(digits=0)} | {ratio} |"
        )
    return lines


def _child(argv: list[str]) -> None:
    model, engine, size, networks = argv
    reading = measure_in_process(model, engine, int(size), int(networks), Settings.from_env())
    print(json.dumps(asdict(reading)))


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit("usage: python -m iweblens.bench.memory MODEL ENGINE SIZE NETWORKS")
    _child(sys.argv[1:])
