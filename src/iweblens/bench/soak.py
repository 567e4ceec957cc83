"""Soak and fault runs: closed-loop load that keeps every request's fate, and the server's vitals.

The study's client summarises a run; reliability questions need more: *when* each request started
and ended (was it in flight when a replica died?), and *how* it failed (refused before any
connection, which a client may safely retry, or lost after the server accepted it, which is the
failure that must never happen). ``iweblens soak`` runs 32 clients against one pod (the
Deployment's CPU and memory limits, ``bench.pod``) for minutes and checks for errors, OOM kills,
memory drift and slope, and leaked file descriptors or threads.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import requests
from urllib3.exceptions import NewConnectionError

from iweblens.config import Settings
from iweblens.harness.manifest import PodSpec
from iweblens.harness.procfs import Sampler, open_fds, status_fields

REFUSED = "refused"  # no connection was made: nothing reached the server
LOST = "lost"  # connected, then no answer: the request may have reached the server
RSS_DRIFT_LIMIT = 0.10
# Issue 12: after warm-up, RSS may rise by less than this over a long soak (30 min at 16 clients).
RSS_SLOPE_LIMIT_MIB_PER_MIN = 0.5
# A slope over less time than this is allocator noise more than a trend: reported, not judged.
RSS_SLOPE_MIN_S = 600.0
WARM_UP_MAX_S = 300.0


@dataclass(frozen=True)
class Outcome:
    """One request: monotonic start and end, HTTP status (None without an answer), failure kind."""

    started: float
    ended: float
    status: int | None
    served_by: str | None
    failure: str | None

    @property
    def ok(self) -> bool:
        return self.status == 200


def _refused(error: requests.ConnectionError) -> bool:
    reason = getattr(error.args[0] if error.args else None, "reason", None)
    return isinstance(reason, NewConnectionError)


def post_image(url: str, name: str, data: bytes, timeout: float) -> Outcome:
    """POST one image as the reference client does (a new connection, one multipart part)."""
    started = time.monotonic()
    status = served_by = failure = None
    try:
        response = requests.post(url, files={"image": (name, data)}, timeout=timeout)
        status, served_by = response.status_code, response.headers.get("X-Served-By")
    except requests.ConnectionError as error:
        failure = REFUSED if _refused(error) else LOST
    except requests.RequestException:
        failure = LOST
    return Outcome(started, time.monotonic(), status, served_by, failure)


class ClosedLoop:
    """``clients`` threads, each posting the next image as soon as its last answer came back."""

    def __init__(
        self,
        url: str,
        images: Sequence[Path],
        clients: int,
        *,
        timeout: float = 120.0,
        stop_when_refused: bool = False,
    ) -> None:
        self._url = url
        self._images = [(image.name, image.read_bytes()) for image in images]
        self._timeout = timeout
        self._stop_when_refused = stop_when_refused
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.outcomes: list[Outcome] = []
        self._threads = [
            threading.Thread(target=self._client, args=(index,), name=f"soak-{index}", daemon=True)
            for index in range(clients)
        ]

    def start(self) -> ClosedLoop:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> list[Outcome]:
        """Let each client finish the request it is sending, then return every outcome."""
        self._stop.set()
        return self.join()

    def join(self) -> list[Outcome]:
        for thread in self._threads:
            thread.join()
        return sorted(self.outcomes, key=lambda outcome: outcome.started)

    def completed(self) -> int:
        with self._lock:
            return len(self.outcomes)

    def _client(self, index: int) -> None:
        position = index  # clients start on different images, as the reference's pool does
        while not self._stop.is_set():
            name, data = self._images[position % len(self._images)]
            position += 1
            outcome = post_image(self._url, name, data, self._timeout)
            with self._lock:
                self.outcomes.append(outcome)
            if self._stop_when_refused and outcome.failure == REFUSED:
                return


@dataclass(frozen=True)
class Vitals:
    """One reading of a process: resident memory, open file descriptors, threads."""

    at: float
    rss_kb: int
    fds: int
    threads: int


def read_vitals(pid: int) -> Vitals:
    """One reading of ``pid`` from ``/proc``; ``OSError`` once the process is gone."""
    fields = status_fields(pid)
    return Vitals(
        at=time.monotonic(),
        rss_kb=int(fields["VmRSS"].split()[0]),
        fds=len(open_fds(pid)),
        threads=int(fields["Threads"]),
    )


def settled_vitals(pid: int, readings: int = 8, interval: float = 0.25) -> Vitals:
    """The idle floor of a process: the fewest fds and threads over a few readings.

    A health check may hold a connection for a moment; the minimum does not count it.
    """
    samples = []
    for _ in range(readings):
        samples.append(read_vitals(pid))
        time.sleep(interval)
    return Vitals(
        samples[-1].at,
        min(s.rss_kb for s in samples),
        min(s.fds for s in samples),
        min(s.threads for s in samples),
    )


@dataclass(frozen=True)
class SoakReport:
    """The figures of one soak run and the verdict on them."""

    duration_s: float
    clients: int
    cpu_limit: float | None
    requests: int
    statuses: dict[str, int]
    p50_s: float
    p95_s: float
    rss_warm_kb: float  # median over the window right after warm-up, under load
    rss_end_kb: float  # median over the last window, under load
    idle_before: Vitals
    idle_after: Vitals
    threads_warm: int  # most threads seen in the window right after warm-up
    threads_end: int  # most threads seen in the last window
    rss_by_tenth_kb: list[float]  # median RSS in each tenth of the run: a leak's slope shows here
    rss_slope_mib_per_min: float  # least-squares slope of RSS after warm-up
    oom_kills: int = 0
    peak_memory_bytes: int | None = None  # the pod's high-water mark (its memory cgroup)
    failures: list[str] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return self.requests - self.statuses.get("200", 0)

    @property
    def rss_drift(self) -> float:
        return (self.rss_end_kb - self.rss_warm_kb) / self.rss_warm_kb

    def lines(self) -> list[str]:
        cpu = "unlimited" if self.cpu_limit is None else f"{self.cpu_limit:g} CPU"
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items()))
        return [
            f"soak: {self.clients} clients for {self.duration_s:.0f} s against one {cpu} replica",
            f"requests: {self.requests} ({statuses}); errors: {self.errors}",
            f"latency: p50 {self.p50_s * 1000:.0f} ms, p95 {self.p95_s * 1000:.0f} ms",
            f"RSS under load: {self.rss_warm_kb / 1024:.1f} MiB after warm-up, "
            f"{self.rss_end_kb / 1024:.1f} MiB at the end: drift {self.rss_drift:+.1%}",
            "RSS by tenth of the run (MiB): "
            + " ".join(f"{kb / 1024:.0f}" for kb in self.rss_by_tenth_kb),
            f"RSS slope after warm-up: {self.rss_slope_mib_per_min:+.2f} MiB/min",
            f"pod memory: peak {_mib(self.peak_memory_bytes)}, OOM kills {self.oom_kills}",
            f"open fds when idle: {self.idle_before.fds} before, {self.idle_after.fds} after",
            f"threads: {self.idle_before.threads} idle before, {self.threads_warm} after warm-up, "
            f"{self.threads_end} at the end, {self.idle_after.threads} idle after",
            "verdict: " + ("PASS" if not self.failures else "FAIL: " + "; ".join(self.failures)),
        ]


def _mib(size: int | None) -> str:
    return "unknown" if size is None else f"{size / 2**20:.1f} MiB"


def rss_slope(samples: Sequence[Vitals]) -> float:
    """Least-squares slope of RSS over time, in MiB per minute (0 with fewer than 2 readings)."""
    if len(samples) < 2 or len({s.at for s in samples}) < 2:
        return 0.0
    fit = statistics.linear_regression([s.at for s in samples], [s.rss_kb for s in samples])
    return fit.slope * 60 / 1024


def _window(samples: Sequence[Vitals], start: float, end: float) -> list[Vitals]:
    return [s for s in samples if start <= s.at <= end]


def _rss_by_tenth(samples: Sequence[Vitals], started: float, duration_s: float) -> list[float]:
    tenth = duration_s / 10
    windows = (_window(samples, started + i * tenth, started + (i + 1) * tenth) for i in range(10))
    return [statistics.median(s.rss_kb for s in window) for window in windows if window]


def judge(
    outcomes: Sequence[Outcome],
    samples: Sequence[Vitals],
    idle_before: Vitals,
    idle_after: Vitals,
    *,
    started: float,
    duration_s: float,
    clients: int,
    cpu_limit: float | None,
    thread_cap: int,
    oom_kills: int = 0,
    peak_memory_bytes: int | None = None,
) -> SoakReport:
    """Reduce a soak to its figures; memory is compared between the first and last windows.

    The first window starts after a warm-up (allocators and the request thread pool grow to their
    working size under the first minutes of load: a quarter of the run, at most 5 minutes); a leak
    shows as growth after that, and as the slope of RSS over everything after it.
    """
    warm_up = min(WARM_UP_MAX_S, duration_s / 4)
    window = max(5.0, duration_s / 10)
    first = _window(samples, started + warm_up, started + warm_up + window)
    last = _window(samples, started + duration_s - window, started + duration_s)
    latencies = sorted(o.ended - o.started for o in outcomes)
    statuses = Counter(str(o.status) if o.status else o.failure or "none" for o in outcomes)
    report = SoakReport(
        duration_s=duration_s,
        clients=clients,
        cpu_limit=cpu_limit,
        requests=len(outcomes),
        statuses=dict(statuses),
        p50_s=statistics.median(latencies),
        p95_s=latencies[int(0.95 * (len(latencies) - 1))],
        rss_warm_kb=statistics.median(s.rss_kb for s in first),
        rss_end_kb=statistics.median(s.rss_kb for s in last),
        idle_before=idle_before,
        idle_after=idle_after,
        threads_warm=max(s.threads for s in first),
        threads_end=max(s.threads for s in last),
        rss_by_tenth_kb=_rss_by_tenth(samples, started, duration_s),
        rss_slope_mib_per_min=rss_slope(_window(samples, started + warm_up, started + duration_s)),
        oom_kills=oom_kills,
        peak_memory_bytes=peak_memory_bytes,
    )
    if report.errors:
        report.failures.append(f"{report.errors} requests did not get a 200")
    if oom_kills:
        report.failures.append(f"{oom_kills} OOM kills")
    slope = report.rss_slope_mib_per_min
    if duration_s - warm_up >= RSS_SLOPE_MIN_S and slope >= RSS_SLOPE_LIMIT_MIB_PER_MIN:
        report.failures.append(
            f"RSS rising {slope:.2f} MiB/min after warm-up "
            f"(limit {RSS_SLOPE_LIMIT_MIB_PER_MIN} MiB/min)"
        )
    if report.rss_drift >= RSS_DRIFT_LIMIT:
        report.failures.append(f"RSS drift {report.rss_drift:+.1%} (limit {RSS_DRIFT_LIMIT:.0%})")
    if idle_after.fds > idle_before.fds:
        report.failures.append(f"{idle_after.fds - idle_before.fds} file descriptors leaked")
    # The request threads (a2wsgi's pool) are started on demand, up to ``thread_cap``: the count
    # creeps towards the cap under load, and only going past it would be a leak.
    if max(report.threads_end, idle_after.threads) > idle_before.threads + thread_cap:
        report.failures.append(f"more threads than the {thread_cap} pooled request threads")
    return report


def soak(
    images: Sequence[Path],
    spec: PodSpec,
    settings: Settings,
    *,
    duration_s: float,
    clients: int = 32,
    sample_every_s: float = 2.0,
) -> SoakReport:
    """Start one pod held to ``spec``'s limits, load it for ``duration_s``, judge it.

    ``settings`` are the ones the pod's server reads too (it inherits this environment): its
    keep-alive and request threads bound what the judge expects.

    The clients post to the pod directly, each on a new connection (as the reference client).
    Vitals are those of the pod's largest process, the one holding the networks.
    """
    from iweblens.bench.pod import Pod

    with Pod(spec, name="soak") as pod:
        pod.wait_ready()
        server = pod.largest_process()
        assert server is not None, "a ready pod has a process"
        idle_before = settled_vitals(server)
        with Sampler(lambda: read_vitals(server), sample_every_s, "vitals") as sampler:
            started = time.monotonic()
            load = ClosedLoop(f"{pod.url}/api/object_detection", images, clients).start()
            time.sleep(duration_s)
            outcomes = load.stop()
        samples = sampler.readings
        # Connections the clients closed last are released within the keep-alive timeout.
        time.sleep(settings.keepalive + 5)
        idle_after = settled_vitals(server)
        return judge(
            outcomes,
            samples,
            idle_before,
            idle_after,
            started=started,
            duration_s=duration_s,
            clients=clients,
            cpu_limit=spec.cpu_cores,
            thread_cap=settings.threads,
            oom_kills=pod.oom_kills(),
            peak_memory_bytes=pod.peak_memory_bytes(),
        )
