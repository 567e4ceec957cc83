"""How many networks this process runs, and how many bytes it may spend on requests in flight.

Both come from the pod's limits: networks = min(what the CPU allotment can keep busy, what the
memory limit can hold), and the request budget is the memory limit less what the process holds
once its networks are loaded, less a margin. A process that cannot hold even one network refuses
to start (``InsufficientMemoryError``) rather than be OOM-killed in a loop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from iweblens.config import Settings
from iweblens.inference.resources import memory_allotment, resident_bytes

log = logging.getLogger(__name__)

MiB = 1024 * 1024
# Resident memory one loaded, warmed-up network adds, by engine (measured on the 2026-11-30 VM
# with tests of this commit: OpenCV DNN 284-288 MiB; ONNX Runtime 150 MiB for the first, 108 for
# each next; OpenVINO 178 then 103). The first figure is used for every network: an overestimate
# costs a network, an underestimate an OOM kill.
NETWORK_BYTES = {
    "opencv": 290 * MiB,
    "onnxruntime": 150 * MiB,
    "openvino": 180 * MiB,
    "openvino-int8": 180 * MiB,
}
# Kept free for allocator slack, thread stacks, connections and the measurement's own error.
MARGIN_BYTES = 32 * MiB
# The least a process must keep for requests: a few ordinary photographs in flight.
MIN_REQUEST_BYTES = 48 * MiB


class InsufficientMemoryError(RuntimeError):
    """The memory limit cannot hold one network and the minimum room for requests."""


@dataclass(frozen=True)
class Plan:
    """The sizing decision, with the figures it came from (all in bytes)."""

    workers: int
    cpu_workers: int
    limit: int
    resident: int
    per_network: int


def plan_workers(settings: Settings, cpu_workers: int) -> Plan:
    """Networks to load: ``cpu_workers``, or fewer if memory holds fewer; logs when it is fewer.

    Raises ``InsufficientMemoryError`` when not even one fits.
    """
    limit = memory_allotment()
    resident = resident_bytes()
    per_network = NETWORK_BYTES.get(settings.engine, max(NETWORK_BYTES.values()))
    room = limit - resident - MARGIN_BYTES - MIN_REQUEST_BYTES
    fit = room // per_network
    if fit < 1:
        raise InsufficientMemoryError(
            f"the memory limit ({limit / MiB:.0f} MiB) cannot hold one {settings.engine} network "
            f"(~{per_network / MiB:.0f} MiB) beside the process ({resident / MiB:.0f} MiB) and "
            f"the room for requests ({(MARGIN_BYTES + MIN_REQUEST_BYTES) / MiB:.0f} MiB); "
            "give the pod more memory"
        )
    workers = min(cpu_workers, fit)
    if workers < cpu_workers:
        log.warning(
            "running %d network(s), not %d: the CPU allotment would keep %d busy, but the "
            "memory limit (%.0f MiB) holds only %d of ~%.0f MiB each",
            workers,
            cpu_workers,
            cpu_workers,
            limit / MiB,
            fit,
            per_network / MiB,
        )
    return Plan(workers, cpu_workers, limit, resident, per_network)


def request_budget(settings: Settings, limit: int | None = None, pending_networks: int = 0) -> int:
    """Bytes requests in flight may hold: ``IWEBLENS_MEMORY_BUDGET``, or derived from the limit.

    The memory limit (``limit``, default the allotment) less the resident size now, less the
    estimated cost of ``pending_networks`` still to load, less the margin: measured again once the
    networks are loaded, so the budget is what really remains.
    """
    if settings.memory_budget > 0:
        return settings.memory_budget
    limit = memory_allotment() if limit is None else limit
    per_network = NETWORK_BYTES.get(settings.engine, max(NETWORK_BYTES.values()))
    held = resident_bytes() + pending_networks * per_network
    return max(0, limit - held - MARGIN_BYTES)
