"""How many networks this process runs, and how many bytes it may spend on requests in flight.

Both come from the pod's limits: networks = min(what the CPU allotment can keep busy, what the
memory limit can hold), and the request budget is the memory limit less what the process holds
once its networks are loaded, less a margin. A process that cannot hold even one network refuses
to start (``InsufficientMemoryError``) rather than be OOM-killed in a loop.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from iweblens.config import Settings
from iweblens.inference.resources import memory_allotment, resident_bytes

log = logging.getLogger(__name__)

MiB = 1024 * 1024
# Resident memory one loaded, warmed-up network adds, by engine, at the 416 input (measured with
# YOLOv3-tiny, the largest bundled model: docs/reliability.md). The first network's figure is
# used for every network: an overestimate costs a network, an underestimate an OOM kill.
NETWORK_BYTES = {
    "opencv": 290 * MiB,
    "onnxruntime": 150 * MiB,
    "openvino": 180 * MiB,
    "openvino-int8": 180 * MiB,
}
REFERENCE_SIZE = 416
# Kept free for allocator slack, thread stacks, connections and the measurement's own error.
MARGIN_BYTES = 32 * MiB
# The least a process must keep for requests: a few ordinary photographs in flight.
MIN_REQUEST_BYTES = 48 * MiB


@dataclass(frozen=True)
class NetworkLoad:
    """One network each inference thread holds: its model, engine and input side (pixels)."""

    model: str
    engine: str
    input_size: int

    @property
    def bytes(self) -> int:
        """Its estimated resident bytes: the engine's figure, grown with the input's area
        above the reference size (activations scale with it), never shrunk below it."""
        base = NETWORK_BYTES.get(self.engine, max(NETWORK_BYTES.values()))
        return int(base * max(1.0, (self.input_size / REFERENCE_SIZE) ** 2))


class InsufficientMemoryError(RuntimeError):
    """The memory limit cannot hold one network and the minimum room for requests."""


@dataclass(frozen=True)
class Plan:
    """The sizing decision, with the figures it came from (all in bytes)."""

    workers: int
    cpu_workers: int
    limit: int
    resident: int
    per_network: int  # bytes of one inference thread's networks (one per loaded model)


def plan_workers(
    settings: Settings, cpu_workers: int, loads: Sequence[NetworkLoad] | None = None
) -> Plan:
    """Inference threads to run: ``cpu_workers``, or fewer if memory holds fewer (logged).

    Each thread holds one network of each of ``loads`` (default: the default model with the
    server's engine and input size). Raises ``InsufficientMemoryError`` when not even one
    thread's networks fit, saying what would.
    """
    loads = loads or [NetworkLoad("yolov3-tiny", settings.engine, settings.input_size)]
    limit = memory_allotment()
    resident = resident_bytes()
    per_network = sum(load.bytes for load in loads)
    room = limit - resident - MARGIN_BYTES - MIN_REQUEST_BYTES
    fit = room // per_network
    if fit < 1:
        raise InsufficientMemoryError(_too_small(loads, limit, resident))
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


def _too_small(loads: Sequence[NetworkLoad], limit: int, resident: int) -> str:
    room = limit - resident - MARGIN_BYTES - MIN_REQUEST_BYTES
    each = ", ".join(
        f"{load.model} on {load.engine} at {load.input_size} (~{load.bytes / MiB:.0f} MiB)"
        for load in loads
    )
    fits = [load.model for load in loads if load.bytes <= room]
    if len(loads) == 1:
        what = f"cannot hold one {loads[0].engine} network of {each}"
    else:
        what = f"cannot hold one network of each model ({each})"
        what += f"; {', '.join(fits)} alone would fit" if fits else "; no one of them fits"
    return (
        f"the memory limit ({limit / MiB:.0f} MiB) {what} beside the process "
        f"({resident / MiB:.0f} MiB) and the room for requests "
        f"({(MARGIN_BYTES + MIN_REQUEST_BYTES) / MiB:.0f} MiB); give the pod more memory or "
        "load fewer models (IWEBLENS_MODELS)"
    )


def request_budget(settings: Settings, limit: int | None = None, pending_bytes: int = 0) -> int:
    """Bytes requests in flight may hold: ``IWEBLENS_MEMORY_BUDGET``, or derived from the limit.

    The memory limit (``limit``, default the allotment) less the resident size now, less the
    estimated ``pending_bytes`` of networks still to load, less the margin: measured again once
    the networks are loaded, so the budget is what really remains.
    """
    if settings.memory_budget > 0:
        return settings.memory_budget
    limit = memory_allotment() if limit is None else limit
    held = resident_bytes() + pending_bytes
    return max(0, limit - held - MARGIN_BYTES)
