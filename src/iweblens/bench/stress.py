"""``iweblens stress``: the attacks of issue 12 on one imitated pod, with their outcomes judged.

Each attack runs against a fresh :class:`~iweblens.bench.pod.Pod` (the Deployment's CPU and
memory limits, the kubelet's probes) on loopback only, is bounded in connections and in time, and
stops by itself. Each returns an :class:`AttackResult`: its figures, and a check per outcome the
issue states. The suite runs short versions (``tests/bench/test_pod_attacks.py``); ``make stress``
runs the full ones and prints the before/after table of ``docs/reliability.md``.

- ``study-load``: not an attack but the assignment's study on one pod (32 reference clients over
  the photographs, no retry): 0 errors, which shedding must not break;
- ``one-max-image``: one image at the pixel limit, alone: served, and the pod's peak memory;
- ``max-bodies``: 64 concurrent requests at the body limit in every flavour (multipart, raw, base64
  JSON, double-encoded JSON): 0 OOM kills, every request answered 200/413/429/503, the next good
  request 200;
- ``slowloris``: 128 connections sending one header byte per second, reconnecting when dropped;
  ``silent``: 500 connections sending nothing: probe p99 < 1 s, 0 probe failures; whether real
  requests are still served is measured;
- ``overload``: open-loop arrivals at 3x what the pod serves, clients that give up after 5 s:
  inferences for departed clients < 10 % of all inferences, and a fresh request answered in < 2 s
  sent within 5 s of the burst's end;
- ``sigterm``: SIGTERM with 200 requests accepted: every one answered (200, or a 503);
- ``cpu-over-memory``: a 2-CPU quota with the same memory: ready, no OOM kill (or a clean exit).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from iweblens.bench.pod import MIB, Background, Pod, PodSampler, Prober
from iweblens.bench.soak import LOST, REFUSED, ClosedLoop, Outcome
from iweblens.config import Settings
from iweblens.study.replicas.balanced import LOOPBACK, replica_is_ready
from iweblens.study.replicas.manifest import PodSpec

GAVE_UP = "gave up"  # the client's own deadline passed first (it closed the connection)
DETECTION_PATH = "/api/object_detection"
SHED_STATUSES = (413, 429, 503)
# A shutdown 503 this soon after SIGTERM lets a client or balancer retry elsewhere in good time.
PROMPT_503_S = 2.0
# Admission limits that let the server take 200 photographs into its queue (SIGTERM attack): at
# ~0.2-0.3 s each on half a core they are 40-60 s of work, over the default wait limit, and their
# bodies and the memory the allocator retains come close to the default budget of a 512 MiB pod.
DEEP_QUEUE_ENV = Settings.to_env(max_wait=600, memory_budget=200 * 2**20)
SEND_CHUNK = 256 * 1024
# /metrics samples worth keeping from an overload run (what the server shed, dropped, queued).
SERVER_FIGURES = ("shed", "dropped", "disconnect", "queue", "inference_seconds_count")


# ----------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Body:
    """A request body and its content type, built once and sent by many clients."""

    content_type: str
    data: bytes
    flavour: str


def multipart_body(
    image: bytes, filename: str = "image.jpg", fields: Mapping[str, str] | None = None
) -> Body:
    """One file part named ``image``, as the reference client sends, after any text ``fields``."""
    boundary = "iweblensstressboundary"
    texts = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in (fields or {}).items()
    )
    head = (
        f"{texts}--{boundary}\r\n"
        f'Content-Disposition: form-data; name="image"; filename="{filename}"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    data = head + image + f"\r\n--{boundary}--\r\n".encode()
    return Body(f"multipart/form-data; boundary={boundary}", data, "multipart")


def raw_body(image: bytes) -> Body:
    return Body("image/jpeg", image, "raw")


def json_body(image: bytes, double: bool = False) -> Body:
    """``{"image": base64}``; ``double``: that document encoded again as a JSON string."""
    document = json.dumps({"id": "stress", "image": base64.b64encode(image).decode("ascii")})
    if double:
        return Body("application/json", json.dumps(document).encode(), "json-double")
    return Body("application/json", document.encode(), "json")


FLAVOURS: dict[str, Callable[[bytes], Body]] = {
    "multipart": multipart_body,
    "raw": raw_body,
    "json": json_body,
    "json-double": lambda image: json_body(image, double=True),
}


def exchange(
    port: int,
    body: Body,
    timeout: float,
    on_sent: Callable[[], None] | None = None,
    *,
    path: str = DETECTION_PATH,
) -> Outcome:
    """POST ``body`` to ``path`` on a new connection and read the status, within ``timeout`` s.

    The body is sent in chunks while watching for an early answer (a server may refuse a large
    body before reading it), as curl does; an answer read after the server reset the connection
    still counts as answered. A client whose deadline passes closes the connection: it has left.
    """
    started = time.monotonic()
    deadline = started + timeout

    def outcome(status: int | None, failure: str | None) -> Outcome:
        return Outcome(started, time.monotonic(), status, None, failure)

    try:
        sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
    except ConnectionRefusedError:
        return outcome(None, REFUSED)
    except TimeoutError:
        return outcome(None, GAVE_UP)
    except OSError:
        return outcome(None, REFUSED)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\n"
        f"Content-Type: {body.content_type}\r\nContent-Length: {len(body.data)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    with sock:
        try:
            _send_watching(sock, memoryview(head + body.data), deadline)
        except TimeoutError:
            return outcome(None, GAVE_UP)
        except OSError:
            pass  # the server may have answered and closed early: read what it sent
        if on_sent is not None:
            on_sent()
        try:
            status = _read_status(sock, deadline)
        except TimeoutError:
            return outcome(None, GAVE_UP)
    return outcome(status, None if status is not None else LOST)


def _send_watching(sock: socket.socket, data: memoryview, deadline: float) -> None:
    sock.setblocking(False)
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        sent = 0
        while sent < len(data):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            for _key, events in selector.select(remaining):
                if events & selectors.EVENT_READ:
                    return  # an early answer (or the server closed): stop sending
                with contextlib.suppress(BlockingIOError):
                    sent += sock.send(data[sent : sent + SEND_CHUNK])


def _read_status(sock: socket.socket, deadline: float) -> int | None:
    """The status of the answer, after reading it whole (None: closed without an answer)."""
    received = b""
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            sock.settimeout(remaining)
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    except ConnectionError:
        pass  # reset after (or instead of) the answer
    parts = received.split(b" ", 2)
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
        return int(parts[1])
    return None


def photo_body(images: Sequence[Path], index: int) -> Body:
    image = images[index % len(images)]
    return multipart_body(image.read_bytes(), image.name)


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Check:
    """One outcome the issue requires, and whether this run met it."""

    outcome: str
    passed: bool


@dataclass
class AttackResult:
    """The figures of one attack, its checks, and the one-line cell of the before/after table."""

    attack: str
    figures: dict[str, Any]
    checks: list[Check]
    cell: str
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def lines(self) -> list[str]:
        verdicts = "; ".join(f"{'PASS' if c.passed else 'FAIL'} {c.outcome}" for c in self.checks)
        return [f"{self.attack}: {self.cell}", f"  {verdicts}", *(f"  {n}" for n in self.notes)]


def statuses_of(outcomes: Sequence[Outcome]) -> Counter[str]:
    return Counter(str(o.status) if o.status is not None else str(o.failure) for o in outcomes)


def _counts(counter: Mapping[str, int]) -> str:
    return ", ".join(f"{key}: {value}" for key, value in sorted(counter.items()))


def probe_figures(prober: Prober) -> dict[str, Any]:
    return {
        "probe_failures": prober.failures,
        "probe_p99_s": round(prober.quantile(0.99), 3),
        "probes": prober.summary(),
        "would_restart": prober.records["liveness"].would_act
        if "liveness" in prober.records
        else 0,
    }


def pod_figures(pod: Pod) -> dict[str, Any]:
    peak = pod.peak_memory_bytes()
    return {
        "oom_kills": pod.oom_kills(),
        "peak_memory_mib": None if peak is None else round(peak / MIB, 1),
        "memory_limit_mib": round(pod.spec.memory_bytes / MIB, 1),
    }


@contextlib.contextmanager
def running_pod(spec: PodSpec, name: str) -> Iterator[Pod]:
    """A fresh pod, ready; stopped and its cgroups removed afterwards."""
    with Pod(spec, name=name) as pod:
        pod.wait_ready()
        yield pod


# ----------------------------------------------------------------------------- memory


def maximal_image(photo: Path, max_pixels: int) -> bytes:
    """``photo`` scaled to the pixel limit in a camera's 4:3, as a JPEG: the costliest decode."""
    width = int((max_pixels * 4 / 3) ** 0.5)
    with Image.open(photo) as source:
        scaled = source.convert("RGB").resize((width, max_pixels // width))
    output = io.BytesIO()
    scaled.save(output, "JPEG", quality=90)
    return output.getvalue()


def maximal_body(flavour: str, image: bytes, body_limit: int) -> Body:
    """A ``flavour`` request with a body just under ``body_limit``: ``image``, padded after its end.

    Decoders stop at the JPEG end marker, so the padded image still decodes (and is as costly as
    the image); the padding makes the body, and every copy the server keeps of it, maximal.
    """
    make = FLAVOURS[flavour]
    envelope = len(make(b"").data)
    room = body_limit - envelope - 16
    if flavour.startswith("json"):
        room = room // 4 * 3  # base64 turns 3 bytes into 4 characters
    if room < len(image):
        raise ValueError(f"a {len(image)}-byte image does not fit a {body_limit}-byte body")
    return make(image + bytes(room - len(image)))


@dataclass(frozen=True)
class RequestLimits:
    """The body and pixel limits of the server a pod runs (its code, its environment)."""

    max_body_bytes: int
    max_pixels: int

    @classmethod
    def of(cls, spec: PodSpec) -> RequestLimits:
        """Asked of the server's own code, run with the pod's environment: a pod may run another
        checkout (``PYTHONPATH`` in ``spec.env``) with other defaults than the harness's."""
        script = (
            "import json; from iweblens.config import Settings; s = Settings.from_env(); "
            "print(json.dumps([s.max_body_bytes, s.max_pixels]))"
        )
        output = subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, **spec.env},
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return cls(*json.loads(output))


def one_max_image(spec: PodSpec, images: Sequence[Path]) -> AttackResult:
    """One request with an image at the pixel limit, alone on a fresh pod: its peak memory."""
    image = maximal_image(images[0], RequestLimits.of(spec).max_pixels)
    with running_pod(spec, "one-max-image") as pod:
        outcome = exchange(pod.port, multipart_body(image), timeout=120)
        time.sleep(0.5)
        figures = {"status": outcome.status or outcome.failure, **pod_figures(pod)}
    cell = (
        f"{figures['status']}; peak {figures['peak_memory_mib']} of "
        f"{figures['memory_limit_mib']:.0f} MiB; OOM kills {figures['oom_kills']}"
    )
    checks = [
        Check("an image at the pixel limit is served (200)", outcome.status == 200),
        Check("0 OOM kills", figures["oom_kills"] == 0),
    ]
    return AttackResult("one-max-image", figures, checks, cell)


def max_bodies(
    spec: PodSpec,
    images: Sequence[Path],
    *,
    concurrency: int = 64,
    timeout: float = 180.0,
) -> AttackResult:
    """``concurrency`` requests at the body limit at once, the four flavours in turn."""
    limits = RequestLimits.of(spec)
    image = maximal_image(images[0], limits.max_pixels)
    bodies = [maximal_body(flavour, image, limits.max_body_bytes) for flavour in FLAVOURS]
    with running_pod(spec, "max-bodies") as pod, Prober(pod.port, spec.probes) as prober:
        start = threading.Barrier(concurrency)
        outcomes: list[Outcome] = []

        def client(index: int) -> None:
            start.wait()
            outcomes.append(exchange(pod.port, bodies[index % len(bodies)], timeout))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        next_good = exchange(pod.port, photo_body(images, 1), timeout=60)
        statuses = statuses_of(outcomes)
        figures = {
            "requests": concurrency,
            "body_bytes": [len(body.data) for body in bodies],
            "statuses": dict(statuses),
            "next_good": next_good.status or next_good.failure,
            "next_good_s": round(next_good.ended - next_good.started, 2),
            **pod_figures(pod),
            **probe_figures(prober),
        }
    answered = sum(statuses.get(str(code), 0) for code in (200, *SHED_STATUSES))
    cell = (
        f"OOM kills {figures['oom_kills']}; {_counts(statuses)}; peak "
        f"{figures['peak_memory_mib']} MiB; next good request {figures['next_good']}"
    )
    checks = [
        Check("0 OOM kills", figures["oom_kills"] == 0),
        Check("every request answered 200/413/429/503", answered == concurrency),
        Check("the next good request 200", next_good.status == 200),
    ]
    return AttackResult("max-bodies", figures, checks, cell)


# ----------------------------------------------------------------------------- slow connections


def slow_header_byte(offset: int) -> bytes:
    """Byte ``offset`` of an endless request head: a request line, then header lines forever."""
    prefix = f"POST {DETECTION_PATH} HTTP/1.1\r\nHost: {LOOPBACK}\r\nContent-Type: image/jpeg\r\n"
    if offset < len(prefix):
        return prefix[offset].encode()
    line = "X-Slow: 0123456789\r\n"
    return line[(offset - len(prefix)) % len(line)].encode()


class ConnectionFlood(Background):
    """``connections`` connections to the pod, re-opened when dropped, until :meth:`stop`.

    ``trickle``: each sends the next byte of an endless request head every ``interval`` seconds
    (slowloris); otherwise they send nothing at all. One thread runs them all.
    """

    def __init__(self, port: int, connections: int, trickle: bool, interval: float = 1.0) -> None:
        self._port = port
        self.connections = connections
        self._trickle = trickle
        self._interval = interval
        self.opened = 0
        self.dropped = 0
        self.connect_failures = 0
        super().__init__("flood")

    def _run(self) -> None:
        open_: dict[socket.socket, int] = {}  # socket -> bytes sent
        try:
            while not self._stop.is_set():
                self._top_up(open_)
                for sock in list(open_):
                    if _dropped(sock):
                        sock.close()
                        del open_[sock]
                        self.dropped += 1
                    elif self._trickle:
                        with contextlib.suppress(BlockingIOError, OSError):
                            open_[sock] += sock.send(slow_header_byte(open_[sock]))
                self._stop.wait(self._interval)
        finally:
            for sock in open_:
                sock.close()

    def _top_up(self, open_: dict[socket.socket, int]) -> None:
        while len(open_) < self.connections and not self._stop.is_set():
            try:
                sock = socket.create_connection((LOOPBACK, self._port), timeout=1.0)
            except OSError:
                self.connect_failures += 1
                return  # the backlog is full or the pod is gone: try again next round
            sock.setblocking(False)
            open_[sock] = 0
            self.opened += 1


def _dropped(sock: socket.socket) -> bool:
    """True once the server closed, reset or answered the connection (peeks, never blocks)."""
    try:
        sock.recv(1, socket.MSG_PEEK)  # b"" (closed) or the first byte of an answer
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True


def connection_flood(
    spec: PodSpec,
    images: Sequence[Path],
    *,
    connections: int,
    trickle: bool,
    duration_s: float,
    real_request_timeout: float = 10.0,
) -> AttackResult:
    """Hold ``connections`` slow or silent connections for ``duration_s``; probe and serve."""
    return flood_attack(
        spec,
        images,
        "slowloris" if trickle else "silent",
        lambda port: ConnectionFlood(port, connections, trickle),
        duration_s=duration_s,
        real_request_timeout=real_request_timeout,
    )


def flood_attack(
    spec: PodSpec,
    images: Sequence[Path],
    attack: str,
    make_flood: Callable[[int], ConnectionFlood],
    *,
    duration_s: float,
    real_request_timeout: float = 10.0,
) -> AttackResult:
    """Hold the flood ``make_flood(port)`` on a fresh pod for ``duration_s``; probe and serve."""
    with running_pod(spec, attack) as pod:
        url = f"{pod.url}{DETECTION_PATH}"
        with (
            PodSampler(pod) as sampler,
            Prober(pod.port, spec.probes) as prober,
            make_flood(pod.port) as flood,
        ):
            time.sleep(min(3.0, duration_s / 4))  # the flood is in place before real requests
            real = ClosedLoop(url, images, 1, timeout=real_request_timeout).start()
            time.sleep(duration_s)
            outcomes = real.stop()
        served = [o for o in outcomes if o.ok]
        latencies = sorted(o.ended - o.started for o in served)
        figures = {
            "connections": flood.connections,
            "duration_s": duration_s,
            "flood_opened": flood.opened,
            "flood_dropped": flood.dropped,
            "flood_connect_failures": flood.connect_failures,
            "max_held_connections": sampler.max_connections,
            "real_requests": len(outcomes),
            "real_served": len(served),
            "real_statuses": dict(statuses_of(outcomes)),
            "real_p50_s": round(latencies[len(latencies) // 2], 2) if latencies else None,
            **probe_figures(prober),
            **pod_figures(pod),
        }
    cell = (
        f"probe p99 {figures['probe_p99_s'] * 1000:.0f} ms, {figures['probe_failures']} probe "
        f"failures, would-restart {figures['would_restart']}; real requests served "
        f"{len(served)} of {len(outcomes)}"
        + (f" (p50 {figures['real_p50_s']} s)" if latencies else "")
    )
    checks = [
        Check("probe p99 < 1 s", figures["probe_p99_s"] < 1.0),
        Check("0 probe failures", figures["probe_failures"] == 0),
    ]
    return AttackResult(attack, figures, checks, cell)


# ----------------------------------------------------------------------------- overload


def read_metrics(url: str, timeout: float = 5.0) -> dict[str, float]:
    """The pod's ``/metrics`` as ``{'name{label="value"}': value}`` ({} without an answer)."""
    import requests

    try:
        text = requests.get(f"{url}/metrics", timeout=timeout).text
    except requests.RequestException:
        return {}
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{key}="{value}"' for key, value in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


INFERENCES = "iweblens_inference_seconds_count"


def _drained_inferences(url: str, limit_s: float, settle_s: float = 5.0) -> tuple[float, float]:
    """Wait until the pod has finished its backlog; (inferences run so far, seconds waited).

    Drained: the inference count stayed the same over ``settle_s`` and nothing but this reading
    is in flight. Bounded by ``limit_s``.
    """
    started = time.monotonic()
    last = -1.0
    while time.monotonic() - started < limit_s:
        metrics = read_metrics(url)
        count = metrics.get(INFERENCES, -1.0)
        if count == last and metrics.get("iweblens_requests_in_flight", 0) <= 1:
            return count, time.monotonic() - started
        last = count
        time.sleep(settle_s)
    return last, time.monotonic() - started


def overload(
    spec: PodSpec,
    images: Sequence[Path],
    *,
    rate_per_s: float = 15.0,
    duration_s: float = 60.0,
    client_timeout_s: float = 5.0,
    recovery_answer_s: float = 2.0,
    recovery_within_s: float = 5.0,
    recovery_limit_s: float = 300.0,
    drain_limit_s: float = 600.0,
) -> AttackResult:
    """Open-loop arrivals at ``rate_per_s`` for ``duration_s``; clients leave after a timeout.

    Inferences for departed clients = every inference the pod ran (its ``/metrics``) minus every
    answer a client received: work whose answer nobody read.
    """
    bodies = [photo_body(images, index) for index in range(len(images))]
    with running_pod(spec, "overload") as pod:
        before = read_metrics(pod.url).get(INFERENCES, 0.0)
        outcomes: list[Outcome] = []
        with PodSampler(pod) as sampler, Prober(pod.port, spec.probes) as prober:
            threads = []
            started = time.monotonic()
            arrivals = round(rate_per_s * duration_s)
            for index in range(arrivals):
                time.sleep(max(0.0, started + index / rate_per_s - time.monotonic()))
                thread = threading.Thread(
                    target=lambda i=index: outcomes.append(
                        exchange(pod.port, bodies[i % len(bodies)], client_timeout_s)
                    ),
                    daemon=True,
                )
                thread.start()
                threads.append(thread)
            burst_end = time.monotonic()
            recovery = _recover(pod.port, bodies, burst_end, recovery_answer_s, recovery_limit_s)
            for thread in threads:
                thread.join()
            after, drain_s = _drained_inferences(pod.url, drain_limit_s)
        shed_metrics = {
            name: value
            for name, value in read_metrics(pod.url).items()
            if any(word in name for word in SERVER_FIGURES)
            and not any(part in name for part in ("_bucket", "_created"))
        }
        figures = _overload_figures(outcomes, recovery, after - before, burst_end)
        figures.update(
            rate_per_s=rate_per_s,
            duration_s=duration_s,
            client_timeout_s=client_timeout_s,
            drain_s=round(drain_s, 1),
            max_held_connections=sampler.max_connections,
            server_metrics=shed_metrics,
            **probe_figures(prober),
            **pod_figures(pod),
        )
    recovered = figures["recovered_after_s"]
    checks = [
        Check("inferences for departed clients < 10 %", figures["departed_fraction"] < 0.10),
        Check(
            f"a fresh request answered < {recovery_answer_s:g} s, sent within "
            f"{recovery_within_s:g} s of the burst's end",
            recovered is not None and recovered <= recovery_within_s,
        ),
    ]
    cell = (
        f"clients got {figures['answered_200']} of {figures['arrivals']} answers "
        f"({_counts(figures['statuses'])}); inferences {figures['inferences']:.0f}, for departed "
        f"clients {figures['departed']:.0f} ({figures['departed_fraction']:.0%}); recovery "
        + ("never" if recovered is None else f"{recovered:.1f} s")
        + f"; max held connections {figures['max_held_connections']}; liveness would-restart "
        f"{figures['would_restart']}"
    )
    return AttackResult("overload", figures, checks, cell)


def _recover(
    port: int, bodies: Sequence[Body], burst_end: float, answer_s: float, limit_s: float
) -> list[Outcome]:
    """Fresh requests after the burst until one is answered 200 within ``answer_s``.

    Once a second for 10 s, then every 5 s (each attempt that gives up leaves work behind on a
    server that does not notice departed clients).
    """
    attempts: list[Outcome] = []
    while time.monotonic() - burst_end < limit_s:
        attempt = exchange(port, bodies[len(attempts) % len(bodies)], answer_s)
        attempts.append(attempt)
        if attempt.status == 200:
            break
        pause = 1.0 if attempt.started - burst_end < 10 else 5.0
        time.sleep(max(0.0, attempt.started + pause - time.monotonic()))
    return attempts


def _overload_figures(
    outcomes: Sequence[Outcome], recovery: Sequence[Outcome], inferences: float, burst_end: float
) -> dict[str, Any]:
    answered = sum(o.ok for o in outcomes) + sum(o.ok for o in recovery)
    departed = max(0.0, inferences - answered)
    recovered = next((r for r in recovery if r.ok), None)
    return {
        "arrivals": len(outcomes),
        "statuses": dict(statuses_of(outcomes)),
        "answered_200": sum(o.ok for o in outcomes),
        "recovery_attempts": len(recovery),
        "inferences": inferences,
        "departed": departed,
        "departed_fraction": departed / inferences if inferences > 0 else 0.0,
        "recovered_after_s": None if recovered is None else round(recovered.started - burst_end, 2),
        "recovery_answer_s": None
        if recovered is None
        else round(recovered.ended - recovered.started, 2),
    }


# ----------------------------------------------------------------------------- the study


def study_load(
    spec: PodSpec, images: Sequence[Path], *, clients: int = 32, requests: int = 128
) -> AttackResult:
    """The assignment's study on one pod: ``clients`` reference-client threads, ``requests``
    photographs (the 128 of the study, or fewer photographs cycled).

    Not an attack: the load the service exists for, which shedding must leave error-free (the
    reference client never retries).
    """
    from iweblens.load.client import run_load

    with running_pod(spec, "study-load") as pod:
        photographs = [images[index % len(images)] for index in range(requests)]
        endpoint = f"{pod.url}{DETECTION_PATH}"
        result = run_load(photographs, endpoint, clients, timeout=120, progress=False)
        figures = {
            "clients": clients,
            "images": result.images,
            "errors": result.errors,
            "timeouts": result.timeouts,
            "mean_s": round(result.mean_s, 2),
            "p99_s": round(result.p99_s, 2),
            "shed": {
                name: value
                for name, value in read_metrics(pod.url).items()
                if name.startswith("iweblens_shed_total")
            },
            **pod_figures(pod),
        }
    cell = (
        f"{clients} clients x {result.images} images: errors {result.errors}, timeouts "
        f"{result.timeouts}; mean {result.mean_s:.1f} s, p99 {result.p99_s:.1f} s"
    )
    checks = [Check("0 errors", result.errors == 0 and result.timeouts == 0)]
    return AttackResult("study-load", figures, checks, cell)


# ----------------------------------------------------------------------------- shutdown


def sigterm(
    spec: PodSpec,
    images: Sequence[Path],
    *,
    accepted: int = 200,
    accept_wait_s: float = 60.0,
) -> AttackResult:
    """SIGTERM once the server has accepted all ``accepted`` requests; count those unanswered.

    Accepted: held by the server's processes (``Pod.held_connections``, from the kernel's tables)
    or already served; connections still in the backlog are not counted, since closing the
    listener refuses them cleanly. The pod is stopped as the kubelet stops it (SIGKILL once the
    grace after preStop is over). How promptly the shutdown 503s come is reported, not judged.

    The server's admission limits are raised (:data:`DEEP_QUEUE_ENV`) so that it admits all of
    them: this attack is about the shutdown of a deep queue, which the defaults do not let build.
    """
    bodies = [photo_body(images, index) for index in range(len(images))]
    spec = replace(spec, env={**spec.env, **DEEP_QUEUE_ENV})
    with running_pod(spec, "sigterm") as pod:
        sent: list[float] = []  # list.append is atomic: one entry per request sent in full
        outcomes: list[Outcome] = []
        timeout = spec.stop_grace_s + 60

        def client(index: int) -> None:
            body = bodies[index % len(bodies)]
            outcomes.append(exchange(pod.port, body, timeout, lambda: sent.append(0.0)))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(accepted)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + accept_wait_s
        held = pod.held_connections()
        while held + len(outcomes) < accepted and time.monotonic() < deadline:
            time.sleep(0.05)
            held = pod.held_connections()
        answered_before = len(outcomes)
        served_before = sum(o.ok for o in outcomes)
        sent_in_full = len(sent)
        signalled = time.monotonic()
        termination = pod.terminate()
        for thread in threads:
            thread.join()
        figures_pod = pod_figures(pod)
    statuses = statuses_of(outcomes)
    unanswered = sum(o.status is None and o.failure != REFUSED for o in outcomes)
    shed_after = sorted(o.ended - signalled for o in outcomes if o.status == 503)
    prompt = sum(seconds <= PROMPT_503_S for seconds in shed_after)
    figures = {
        "requests": accepted,
        "held_at_signal": held,
        "sent_in_full_at_signal": sent_in_full,
        "answered_before_signal": answered_before,
        "statuses": dict(statuses),
        "unanswered": unanswered,
        "prompt_503": prompt,
        "median_503_after_signal_s": round(shed_after[len(shed_after) // 2], 2)
        if shed_after
        else None,
        "last_503_after_signal_s": round(shed_after[-1], 2) if shed_after else None,
        "exit_code": termination.exit_code,
        "exit_after_s": round(termination.seconds, 1),
        "killed_at_grace": termination.killed,
        "grace_s": spec.stop_grace_s,
        **figures_pod,
    }
    cell = (
        f"{held} held at the signal ({answered_before} answered before); {_counts(statuses)}; "
        f"without an answer {unanswered}"
        + (
            f"; 503s within {PROMPT_503_S:g} s of the signal: {prompt} of {len(shed_after)}, "
            f"last after {shed_after[-1]:.1f} s"
            if shed_after
            else ""
        )
        + f"; exit {termination.exit_code} after {termination.seconds:.1f} s"
        + (" (SIGKILL at the grace)" if termination.killed else "")
    )
    checks = [
        Check(
            f"{accepted} requests accepted at the signal (held, or served)",
            held + served_before >= accepted and served_before == answered_before,
        ),
        Check("0 requests without an answer", unanswered == 0),
    ]
    return AttackResult("sigterm", figures, checks, cell)


# ----------------------------------------------------------------------------- sizing


def cpu_over_memory(spec: PodSpec, *, cores: float = 2.0, watch_s: float = 45.0) -> AttackResult:
    """The manifest's memory with ``cores`` CPUs: ready without OOM kills, or exits non-zero."""
    bigger = replace(spec, cpu_cores=cores)
    with Pod(bigger, name="cpu-over-memory") as pod:
        started = time.monotonic()
        ready_after = None
        while time.monotonic() - started < watch_s and pod.alive:
            if ready_after is None and replica_is_ready(LOOPBACK, pod.port):
                ready_after = time.monotonic() - started
            time.sleep(0.5)
        exit_code = pod.process.poll() if pod.process is not None else None
        figures = {
            "cores": cores,
            "watched_s": watch_s,
            "ready_after_s": None if ready_after is None else round(ready_after, 1),
            "exit_code": exit_code,
            **pod_figures(pod),
        }
        notes = [line for line in pod.log().splitlines() if "network" in line.lower()][-3:]
    state = (
        f"ready after {figures['ready_after_s']} s"
        if ready_after is not None
        else f"exited with {exit_code}"
        if exit_code is not None
        else f"not ready in {watch_s:g} s, still running"
    )
    limits = f"{cores:g} CPU, {figures['memory_limit_mib']:.0f} MiB"
    cell = f"{limits}: {state}; OOM kills {figures['oom_kills']}"
    checks = [
        Check("0 OOM kills", figures["oom_kills"] == 0),
        Check("ready, or exits non-zero", ready_after is not None or exit_code not in (None, 0)),
    ]
    return AttackResult("cpu-over-memory", figures, checks, cell, notes)


# ----------------------------------------------------------------------------- the command


ATTACKS = (
    "study-load",
    "one-max-image",
    "max-bodies",
    "slowloris",
    "silent",
    "overload",
    "sigterm",
    "cpu-over-memory",
)


def run_attack(name: str, spec: PodSpec, images: Sequence[Path]) -> AttackResult:
    """The full version of one attack, as ``make stress`` runs it."""
    if name == "study-load":
        return study_load(spec, images)
    if name == "one-max-image":
        return one_max_image(spec, images)
    if name == "max-bodies":
        return max_bodies(spec, images)
    if name == "slowloris":
        return connection_flood(spec, images, connections=128, trickle=True, duration_s=60)
    if name == "silent":
        return connection_flood(spec, images, connections=500, trickle=False, duration_s=60)
    if name == "overload":
        return overload(spec, images)
    if name == "sigterm":
        return sigterm(spec, images)
    if name == "cpu-over-memory":
        return cpu_over_memory(spec)
    raise ValueError(f"unknown attack {name!r}; one of {', '.join(ATTACKS)}")


def table(columns: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """A markdown table: one row per attack, one column per run (label -> saved results)."""
    labels = list(columns)
    attacks = [a for a in ATTACKS if any(a in results for results in columns.values())]
    lines = [
        "| attack | " + " | ".join(labels) + " |",
        "|---|" + "---|" * len(labels),
    ]
    for attack in attacks:
        cells = []
        for label in labels:
            result = columns[label].get(attack)
            if result is None:
                cells.append("-")
                continue
            verdict = "pass" if all(c["passed"] for c in result["checks"]) else "**fail**"
            cells.append(f"{verdict}: {result['cell']}")
        lines.append(f"| {attack} | " + " | ".join(cells) + " |")
    return lines


def run_stress(
    spec: PodSpec, images: Sequence[Path], attacks: Sequence[str] = ATTACKS
) -> dict[str, dict[str, Any]]:
    """Run the full ``attacks`` in turn, each on a fresh pod; print each result as it comes.

    Returns every figure, as ``--json`` saves it and :func:`table` reads it.
    """
    print(
        f"pod: {spec.cpu_cores:g} CPU, {spec.memory_bytes / MIB:.0f} MiB, probes "
        + ", ".join(f"{k} {p.path} every {p.period_s:g} s" for k, p in spec.probes.items()),
        flush=True,
    )
    results = {}
    for name in attacks:
        result = run_attack(name, spec, images)
        print("\n".join(result.lines()), flush=True)
        results[name] = asdict(result)
    return results


def all_passed(results: Mapping[str, Mapping[str, Any]]) -> bool:
    return all(check["passed"] for result in results.values() for check in result["checks"])
