"""``iweblens bench``: every performance claim of the service as a ratio measured in one run.

Absolute times drift on shared machines; ratios taken in the same run on the same machine hold.
Everything that is timed runs under the same CPU quota as a pod (a cgroup, as the experiment's
``local`` backend does):

- the *floor*: decode + letterbox + forward + postprocess in-process, one network, no HTTP; its
  throughput ``F`` is what the CPU allows and what the service is judged against;
- the *service*: ``iweblens serve`` replicas behind HAProxy, loaded with the reference client's
  multipart requests at 1 and at C client threads, with 1 and with R replicas, and its RSS;
- the *naive baseline* (``iweblens.bench.naive``): the usual implementation of this assignment.

Detections are compared too (outside the quota: that is correctness, not speed): float engines
must be identical to ``opencv`` on every image; the INT8 engine is calibrated on the first half
of the images by file name and judged by F1 on the second half.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import requests

from iweblens.bench.agreement import F1Tally, differences
from iweblens.config import Settings
from iweblens.load.client import LoadResult, run_load
from iweblens.models.store import ModelStore
from iweblens.study.replicas.cgroup import CpuCgroup
from iweblens.study.replicas.local import LocalBackend

QUOTA_CORES = 0.5
DEFAULT_ENGINES = ("opencv", "onnxruntime", "openvino", "openvino-int8")
REFERENCE_ENGINE = "opencv"
INT8_ENGINE = "openvino-int8"
NAIVE_START_TIMEOUT_S = 60.0
RSS_SAMPLE_S = 0.2
WARMUP_IMAGES = 2
PROFILE_STAGES = ("decode", "letterbox", "forward", "postprocess")
VERSIONED_PACKAGES = (
    "iweblens",
    "opencv-python-headless",
    "onnxruntime",
    "openvino",
    "onnx",
    "nncf",
    "numpy",
    "flask",
    "gunicorn",
)


# ----------------------------------------------------------------------------- the floor


def measure_floor(engine: str, images: Sequence[Path]) -> tuple[float, dict[str, float]]:
    """Seconds per image of decode + letterbox + forward + postprocess, one net, in-process.

    Also returns a profile: CPU seconds per image of each stage (CPU time, not wall time, so the
    quota's throttling pauses do not land on whichever stage they interrupt), from a second pass.
    """
    from iweblens.inference.cpu import cpu_allotment, threads_for
    from iweblens.inference.detector import Detector, letterbox
    from iweblens.inference.engines import set_compute_threads
    from iweblens.inference.images import decode_image

    settings = Settings.from_env()
    paths = ModelStore(settings.model_dir, progress=False).verified_paths()
    set_compute_threads(threads_for(cpu_allotment()))
    detector = Detector.from_settings(settings, paths, engine)
    payloads = [image.read_bytes() for image in images]
    for data in payloads[:WARMUP_IMAGES]:
        detector.detect_bytes(data)
    start = time.perf_counter()
    for data in payloads:
        detector.detect_bytes(data)
    seconds_per_image = (time.perf_counter() - start) / len(payloads)

    laps = CpuLaps()
    for data in payloads:
        laps.start()
        image = decode_image(data)
        laps.mark("decode")
        blob, box = letterbox(image, settings.input_size)
        laps.mark("letterbox")
        rows = detector.engine.forward(blob)
        laps.mark("forward")
        detector.decode(rows, box, image.shape[1], image.shape[0])
        laps.mark("postprocess")
    return seconds_per_image, {stage: total / len(payloads) for stage, total in laps.totals.items()}


class CpuLaps:
    """CPU seconds spent in each named stage, summed over repetitions."""

    def __init__(self) -> None:
        self.totals = dict.fromkeys(PROFILE_STAGES, 0.0)
        self._last = time.process_time()

    def start(self) -> None:
        self._last = time.process_time()

    def mark(self, stage: str) -> None:
        now = time.process_time()
        self.totals[stage] += now - self._last
        self._last = now


@contextlib.contextmanager
def quota_cgroup(label: str) -> Iterator[CpuCgroup]:
    """A fresh cgroup holding ``QUOTA_CORES``, removed (with anything left in it) afterwards."""
    cgroup = CpuCgroup.create(f"iweblens-bench-{os.getpid()}-{label}", QUOTA_CORES)
    try:
        yield cgroup
    finally:
        cgroup.remove()


def limited_command(cgroup: CpuCgroup, command: Sequence[str]) -> list[str]:
    """``command`` run so that it enters ``cgroup`` before it executes anything."""
    return cgroup.command(list(command))


def floor_under_quota(engine: str, images: Sequence[Path]) -> tuple[float, dict[str, float]]:
    """``measure_floor`` in a child process held to the pod's CPU quota."""
    with quota_cgroup(f"floor-{engine}") as cgroup:
        command = [sys.executable, "-m", "iweblens.bench.run", "--floor", engine, *map(str, images)]
        output = subprocess.run(
            limited_command(cgroup, command), check=True, capture_output=True, text=True
        ).stdout
    result = json.loads(output.strip().splitlines()[-1])
    return float(result["seconds_per_image"]), result["stages"]


# ----------------------------------------------------------------------------- served runs


class RssSampler:
    """Peak resident memory of a set of processes, sampled in the background during a run."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self._pids = pids
        self._stop = threading.Event()
        self.peak_bytes = 0
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while True:
            self.peak_bytes = max(self.peak_bytes, sum(map(rss_bytes, self._pids())))
            if self._stop.wait(RSS_SAMPLE_S):
                return


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class ServedRun:
    """One closed-loop load run against the service or the baseline."""

    clients: int
    replicas: int
    load: LoadResult
    rss_bytes: int = 0


def _load(images: Sequence[Path], endpoint: str, clients: int, timeout: float = 60.0) -> LoadResult:
    result = run_load(images, endpoint, clients, timeout=timeout, progress=False)
    if result.errors or result.timeouts:
        raise RuntimeError(f"{result.errors} errors, {result.timeouts} timeouts at {endpoint}")
    return result


def measure_service(
    engine: str, images: Sequence[Path], clients: int, replicas: int
) -> list[ServedRun]:
    """The service with ``engine``: 1 replica at 1 and ``clients`` threads, then ``replicas``."""
    backend = LocalBackend(cpu_limit=QUOTA_CORES, engine=engine)
    runs = []
    try:
        backend.scale(1)
        name = backend.replica_names()[0]
        cgroup = backend.cgroup_of(name)
        if cgroup is None:
            raise RuntimeError("the replica runs without a CPU quota; the figures would lie")
        for threads in (1, clients):
            with RssSampler(cgroup.pids) as rss:
                load = _load(images, backend.endpoint, threads)
            runs.append(ServedRun(threads, 1, load, rss.peak_bytes))
        backend.scale(replicas)
        runs.append(ServedRun(clients, replicas, _load(images, backend.endpoint, clients)))
    finally:
        backend.close()
    return runs


def _wait_for_http(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + NAIVE_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the naive baseline exited during start-up")
        with contextlib.suppress(requests.ConnectionError):
            requests.get(url, timeout=2)
            return
        time.sleep(0.2)
    raise RuntimeError(f"the naive baseline did not answer at {url}")


# 32 naive requests each load their own network in half a core: answers take 30 s and more, and
# like the reference client the benchmark waits for them rather than count them as lost.
NAIVE_REQUEST_TIMEOUT_S = 600.0


def measure_naive(images: Sequence[Path], clients: int) -> list[ServedRun]:
    """The naive baseline at 1 and ``clients`` threads, under the same quota."""
    from iweblens.study.replicas.balanced import LOOPBACK, free_port

    port = free_port()
    model_dir = Settings.from_env().model_dir
    command = [sys.executable, "-m", "iweblens.bench.naive", "--port", str(port)]
    runs = []
    with quota_cgroup("naive") as cgroup:
        process = subprocess.Popen(
            limited_command(cgroup, [*command, "--model-dir", str(model_dir)]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            _wait_for_http(f"http://{LOOPBACK}:{port}/", process)
            endpoint = f"http://{LOOPBACK}:{port}/api/object_detection"
            for threads in (1, clients):
                with RssSampler(cgroup.pids) as rss:
                    load = _load(images, endpoint, threads, timeout=NAIVE_REQUEST_TIMEOUT_S)
                runs.append(ServedRun(threads, 1, load, rss.peak_bytes))
        finally:
            process.terminate()
            process.wait()
    return runs


# ----------------------------------------------------------------------------- agreement


def engine_detections(engine: str, images: Sequence[Path]) -> list[list]:
    """Every image's detections by ``engine`` (correctness only, so no quota)."""
    from iweblens.inference.detector import Detector

    settings = Settings.from_env()
    paths = ModelStore(settings.model_dir, progress=False).verified_paths()
    detector = Detector.from_settings(settings, paths, engine)
    return [detector.detect_bytes(image.read_bytes()) for image in images]


def _quantize(images: Sequence[Path]) -> None:
    from iweblens.inference.quantize import quantize

    settings = Settings.from_env()
    paths = ModelStore(settings.model_dir, progress=False).verified_paths()
    quantize(paths, calibration_half(images), settings.input_size)


def prepare_int8(images: Sequence[Path]) -> None:
    """Quantize with the first half of the images (by file name) as the calibration set.

    In a child process: NNCF and OpenVINO leave worker threads behind that keep spinning on the
    host's cores, and would slow the client side of the measurements that follow.
    """
    child = multiprocessing.get_context("spawn").Process(target=_quantize, args=(list(images),))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"quantization failed (exit code {child.exitcode})")


def calibration_half(images: Sequence[Path]) -> list[Path]:
    ordered = sorted(images, key=lambda image: image.name)
    return ordered[: max(1, len(ordered) // 2)]


# ----------------------------------------------------------------------------- the report


@dataclass
class Claim:
    """One ratio next to its goal."""

    name: str
    value: float
    goal: str
    met: bool


@dataclass
class EngineFigures:
    engine: str
    floor_s: float
    stages: dict[str, float]
    served: list[ServedRun] = field(default_factory=list)
    agreement: str = ""

    @property
    def floor_throughput(self) -> float:
        return 1 / self.floor_s

    def run(self, clients: int, replicas: int) -> ServedRun:
        return next(r for r in self.served if (r.clients, r.replicas) == (clients, replicas))


def at_most(name: str, value: float, limit: float) -> Claim:
    return Claim(name, value, f"<= {limit:g}", value <= limit)


def at_least(name: str, value: float, limit: float) -> Claim:
    return Claim(name, value, f">= {limit:g}", value >= limit)


def engine_claims(
    figures: EngineFigures, clients: int, replicas: int, naive: list[ServedRun], fastest: bool
) -> list[Claim]:
    """The issue's per-engine ratios: overhead over the floor, scaling, memory, vs naive."""
    tag = f"[{figures.engine}]"
    one, many = figures.run(1, 1), figures.run(clients, 1)
    spread = figures.run(clients, replicas)
    floor, rate = figures.floor_s, figures.floor_throughput
    naive_one, naive_many = naive
    factor = 6.0 if fastest else 3.0
    return [
        at_most(f"latency@1 / floor time {tag}", one.load.mean_s / floor, 1.10),
        at_least(f"throughput@{clients} / F {tag}", many.load.throughput / rate, 0.95),
        at_least(
            f"{replicas} / 1 replica throughput @{clients} {tag}",
            spread.load.throughput / many.load.throughput,
            2.8,
        ),
        at_most(
            f"mean@{clients}x1 / ideal {clients}/F {tag}",
            many.load.mean_s / (clients / rate),
            1.10,
        ),
        at_most(
            f"mean@{clients}x{replicas} / ideal {clients}/({replicas}F) {tag}",
            spread.load.mean_s / (clients / (replicas * rate)),
            1.10,
        ),
        at_most(f"RSS@{clients} / RSS@1 {tag}", many.rss_bytes / max(one.rss_bytes, 1), 1.2),
        at_least(
            f"throughput@{clients} vs naive {tag}",
            many.load.throughput / naive_many.load.throughput,
            factor,
        ),
        at_least(f"latency@1 naive / ours {tag}", naive_one.load.mean_s / one.load.mean_s, factor),
    ]


def engine_comparison(figures: EngineFigures, reference: EngineFigures) -> Claim:
    goal = 3.5 if figures.engine == INT8_ENGINE else 2.0
    return at_least(
        f"F / F[opencv] [{figures.engine}]",
        figures.floor_throughput / reference.floor_throughput,
        goal,
    )


def machine_lines() -> list[str]:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = []
    for package in VERSIONED_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions.append(f"{package} {metadata.version(package)}")
    load = os.getloadavg()
    return [
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {cpu}, {os.cpu_count()} vCPU, {platform.platform()}",
        f"- Python {platform.python_version()}; {', '.join(versions)}",
        # Other work on the machine steals the quota's CPU: a load above the cores it has means
        # the figures are noisy, whatever the ratios say.
        f"- load average at the end (1/5/15 min): {' / '.join(f'{v:.2f}' for v in load)}",
    ]


def _mib(value: int) -> str:
    return f"{value / 2**20:.0f}"


def measurement_table(
    engines: list[EngineFigures], naive: list[ServedRun], clients: int, replicas: int
) -> list[str]:
    lines = [
        f"| engine | floor ms/img | F img/s | mean@1 ms | p99@1 ms | img/s @{clients} "
        f"| mean@{clients} ms | img/s @{clients}x{replicas} | RSS@1 MiB | RSS@{clients} MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for fig in engines:
        one, many, spread = (
            fig.run(1, 1),
            fig.run(clients, 1),
            fig.run(clients, replicas),
        )
        lines.append(
            f"| {fig.engine} | {fig.floor_s * 1000:.1f} | {fig.floor_throughput:.2f} "
            f"| {one.load.mean_s * 1000:.1f} | {one.load.p99_s * 1000:.1f} "
            f"| {many.load.throughput:.2f} | {many.load.mean_s * 1000:.0f} "
            f"| {spread.load.throughput:.2f} | {_mib(one.rss_bytes)} | {_mib(many.rss_bytes)} |"
        )
    naive_one, naive_many = naive
    lines.append(
        f"| naive baseline | | | {naive_one.load.mean_s * 1000:.1f} "
        f"| {naive_one.load.p99_s * 1000:.1f} | {naive_many.load.throughput:.2f} "
        f"| {naive_many.load.mean_s * 1000:.0f} | | {_mib(naive_one.rss_bytes)} "
        f"| {_mib(naive_many.rss_bytes)} |"
    )
    return lines


def profile_table(engines: list[EngineFigures]) -> list[str]:
    lines = [
        "| engine | " + " | ".join(f"{stage} CPU ms" for stage in PROFILE_STAGES) + " | total |",
        "|---|" + "---:|" * (len(PROFILE_STAGES) + 1),
    ]
    for fig in engines:
        cells = [f"{fig.stages[stage] * 1000:.1f}" for stage in PROFILE_STAGES]
        total = sum(fig.stages.values()) * 1000
        lines.append(f"| {fig.engine} | {' | '.join(cells)} | {total:.1f} |")
    return lines


def claims_table(claims: list[Claim]) -> list[str]:
    lines = ["| ratio | measured | goal | met |", "|---|---:|---|---|"]
    lines += [
        f"| {c.name} | {c.value:.2f} | {c.goal} | {'yes' if c.met else '**no**'} |" for c in claims
    ]
    return lines


# ----------------------------------------------------------------------------- orchestration


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
    images: Sequence[Path], engines: Sequence[str], clients: int, replicas: int
) -> list[str]:
    """Measure everything and return the report as Markdown lines."""
    engines, notes = available_engines(engines)
    if REFERENCE_ENGINE not in engines:
        raise ValueError("the opencv engine is the reference and must be benchmarked")
    if INT8_ENGINE in engines:
        log(f"quantizing on {len(calibration_half(images))} calibration images")
        prepare_int8(images)
    figures = []
    for engine in engines:
        log(f"{engine}: floor under a {QUOTA_CORES}-CPU quota")
        fig = EngineFigures(engine, *floor_under_quota(engine, images))
        log(f"{engine}: service at 1 and {clients} clients, 1 and {replicas} replicas")
        fig.served = measure_service(engine, images, clients, replicas)
        figures.append(fig)
    log(f"naive baseline at 1 and {clients} clients")
    naive = measure_naive(images, clients)
    log("agreement with opencv's detections")
    agreement = agreement_lines(engines, images)

    reference = figures[0]
    fastest = max(figures, key=lambda fig: fig.run(clients, 1).load.throughput)
    claims = []
    for fig in figures:
        claims += engine_claims(fig, clients, replicas, naive, fastest=fig is fastest)
        if fig is not reference:
            claims.append(engine_comparison(fig, reference))
    quota = f"{QUOTA_CORES} CPU (cgroup cpu.cfs_quota_us) per process under test"
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


def agreement_lines(engines: Sequence[str], images: Sequence[Path]) -> list[str]:
    from iweblens.inference.engines import set_compute_threads

    set_compute_threads(1)
    reference = engine_detections(REFERENCE_ENGINE, images)
    judged = set(sorted(images, key=lambda image: image.name)) - set(calibration_half(images))
    lines = []
    for engine in engines:
        if engine == REFERENCE_ENGINE:
            continue
        found = engine_detections(engine, images)
        if engine == INT8_ENGINE:
            tally = F1Tally()
            for image, expected, actual in zip(images, reference, found, strict=True):
                if image in judged:
                    tally.add(expected, actual)
            met = "met" if tally.f1 >= 0.97 else "**missed**"
            lines.append(
                f"- {engine}: F1 {tally.f1:.3f} on the {len(judged)} judged images (goal >= 0.97,"
                f" {met}): {tally.true_positives} matched, {tally.false_negatives} missed, "
                f"{tally.false_positives} extra"
            )
            continue
        differing = [
            image.name
            for image, expected, actual in zip(images, reference, found, strict=True)
            if differences(expected, actual)
        ]
        verdict = "identical" if not differing else f"DIFFERENT on {', '.join(differing)}"
        lines.append(
            f"- {engine}: {verdict} on {len(images) - len(differing)}/{len(images)} images "
            "(same labels, IoU >= 0.99, confidence within 0.001)"
        )
    return lines


def _floor_child(argv: list[str]) -> None:
    engine, images = argv[0], [Path(arg) for arg in argv[1:]]
    seconds_per_image, stages = measure_floor(engine, images)
    print(json.dumps({"engine": engine, "seconds_per_image": seconds_per_image, "stages": stages}))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--floor"]:
        _floor_child(sys.argv[2:])
    else:
        sys.exit(
            "usage: python -m iweblens.bench.run --floor ENGINE IMAGE...; see `iweblens bench`"
        )
