"""Attacks that hold many connections open: slow (slowloris) or silent, against the probes.

- ``slowloris``: 128 connections sending one header byte per second, reconnecting when dropped;
- ``silent``: 500 connections sending nothing.

Both: probe p99 < 1 s, 0 probe failures; whether real requests are still served is measured
(and, in the full runs, judged against the rate served without the flood).
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from iweblens.bench.attacks.results import (
    AttackResult,
    Check,
    pod_figures,
    probe_figures,
    statuses_of,
)
from iweblens.bench.http_client import DETECTION_PATH
from iweblens.bench.kubelet import Prober
from iweblens.bench.pod import connection_sampler, running_pod
from iweblens.bench.soak import ClosedLoop
from iweblens.harness.manifest import PodSpec
from iweblens.harness.procfs import Background
from iweblens.harness.serving import LOOPBACK

# While an attack that would stall the pod runs, ordinary requests must still be served at this
# share of the rate the same client is served without it (judged by the full runs only: a rate).
SERVED_UNDER_ATTACK = 0.9


def slow_header_byte(offset: int) -> bytes:
    """Byte ``offset`` of an endless request head: a request line, then header lines forever."""
    prefix = f"POST {DETECTION_PATH} HTTP/1.1\r\nHost: {LOOPBACK}\r\nContent-Type: image/jpeg\r\n"
    if offset < len(prefix):
        return prefix[offset].encode()
    line = "X-Slow: 0123456789\r\n"
    return line[(offset - len(prefix)) % len(line)].encode()


class ConnectionFlood(Background):
    """``connections`` connections to the pod, re-opened when dropped, during a ``with`` block.

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
    baseline_s: float = 0.0,
) -> AttackResult:
    """Hold ``connections`` slow or silent connections for ``duration_s``; probe and serve."""
    return flood_attack(
        spec,
        images,
        "slowloris" if trickle else "silent",
        lambda port: ConnectionFlood(port, connections, trickle),
        duration_s=duration_s,
        real_request_timeout=real_request_timeout,
        baseline_s=baseline_s,
    )


def flood_attack(
    spec: PodSpec,
    images: Sequence[Path],
    attack: str,
    make_flood: Callable[[int], ConnectionFlood],
    *,
    duration_s: float,
    real_request_timeout: float = 10.0,
    baseline_s: float = 0.0,
) -> AttackResult:
    """Hold the flood ``make_flood(port)`` on a fresh pod for ``duration_s``; probe and serve.

    With ``baseline_s``, the same ordinary client first runs that long without the flood, and
    the result judges the rate served under the flood against it (``SERVED_UNDER_ATTACK``).
    """
    with running_pod(spec, attack) as pod:
        url = f"{pod.url}{DETECTION_PATH}"
        baseline = served_rate(url, images, baseline_s, real_request_timeout)
        with (
            connection_sampler(pod) as sampler,
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
            "max_held_connections": max(sampler.readings, default=0),
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
    if baseline is not None:
        ratio = len(served) / duration_s / baseline if baseline > 0 else 0.0
        figures["served_per_s_without"] = round(baseline, 2)
        figures["served_rate_ratio"] = round(ratio, 2)
        cell += f"; served {ratio:.2f}x the rate without the attack"
        checks.append(
            Check(
                f"served >= {SERVED_UNDER_ATTACK:.0%} of the rate without the attack",
                ratio >= SERVED_UNDER_ATTACK,
            )
        )
    return AttackResult(attack, figures, checks, cell)


def served_rate(
    url: str, images: Sequence[Path], duration_s: float, timeout: float
) -> float | None:
    """Photographs one closed-loop client gets answered 200 per second (None for 0 s)."""
    if duration_s <= 0:
        return None
    loop = ClosedLoop(url, images, 1, timeout=timeout).start()
    time.sleep(duration_s)
    return sum(o.ok for o in loop.stop()) / duration_s
