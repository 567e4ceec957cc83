"""How many networks this process runs, and how many bytes it may spend on requests in flight.

Both come from the pod's limits: networks = min(what the CPU allotment can keep busy, what the
memory limit can hold), and the request budget is the memory limit less what the process holds
once its networks are loaded, less a margin. A process that cannot hold even one network refuses
to start (``InsufficientMemoryError``) rather than be OOM-killed in a loop.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from iweblens.config import Settings, env_name
from iweblens.inference.resources import memory_allotment, resident_bytes
from iweblens.models.store import PINNED

log = logging.getLogger(__name__)

MiB = 1024 * 1024
# Resident MiB one loaded, warmed-up network adds, by (model, engine), at each input side it was
# measured at (``iweblens bench``, ``bench/memory.py``; docs/reliability.md): the most any network
# of a process added (the first pays for its engine's library, a later one may add more as the
# heap grows), the highest over repeated runs. The same figure is used for every network: an
# overestimate costs a network, an underestimate an OOM kill. They hold for the kind of CPU they
# were measured on: engines pick their kernels, and so the layouts they keep weights in, by
# instruction set.
NETWORK_MIB: dict[tuple[str, str], dict[int, int]] = {
    ("yolov3-tiny", "opencv"): {320: 135, 416: 311, 608: 331},
    ("yolov3-tiny", "onnxruntime"): {320: 146, 416: 146, 608: 164},
    ("yolov3-tiny", "openvino"): {320: 153, 416: 161, 608: 187},
    ("yolov3-tiny", "openvino-int8"): {416: 112},
    ("yolov4-tiny", "opencv"): {320: 123, 416: 215, 608: 237},
    ("yolov4-tiny", "onnxruntime"): {320: 102, 416: 102, 608: 140},
    ("yolov4-tiny", "openvino"): {320: 131, 416: 138, 608: 161},
    ("yolov4-tiny", "openvino-int8"): {416: 105},
}
# Kept free for allocator slack, thread stacks, connections and the measurement's own error.
MARGIN_BYTES = 32 * MiB
# The least a process must keep for requests: a few ordinary photographs in flight.
MIN_REQUEST_BYTES = 48 * MiB


def measured_bytes(figures: Mapping[int, int], input_size: int) -> int:
    """Bytes at ``input_size`` from figures (MiB) measured at some sides, never an underestimate
    of a network whose memory does not shrink as its input grows.

    At or below a measured side: the largest figure of the sides up to the nearest measured one
    at or above it (not an interpolation: OpenCV's memory jumps between two measured sides,
    where it turns on its Winograd kernels; and a smaller figure at a larger side is the
    measurement's noise). Above the largest side: the largest figure grown with the input's area.
    """
    above = [side for side in figures if side >= input_size]
    side = min(above) if above else max(figures)
    figure = max(mib for measured, mib in figures.items() if measured <= side) * MiB
    return figure if above else int(figure * (input_size / side) ** 2)


def _bundled_weights() -> dict[str, int]:
    return {
        name: next(spec.size for spec in model.files if spec.name.endswith(".weights"))
        for name, model in PINNED.items()
    }


BUNDLED_WEIGHTS_BYTES = _bundled_weights()


@dataclass(frozen=True)
class NetworkLoad:
    """One network each inference thread holds: its model, engine and input side (pixels), and
    for a model not in ``NETWORK_MIB`` (a user's) the size of its weights file in bytes (None:
    not known)."""

    model: str
    engine: str
    input_size: int
    weights_bytes: int | None = None

    @property
    def bytes(self) -> int:
        """Its estimated resident bytes.

        A bundled model: its measured figures (``measured_bytes``). Any other model: the bundled
        models' figures on the same engine (on every engine, for one not measured), each scaled
        by the ratio of the weights files (a network holds its weights in the engine's own
        layouts, which grow with them), the largest of those; never less than the largest
        bundled figure (activations, and an engine's library, do not shrink with the weights).
        """
        figures = NETWORK_MIB.get((self.model, self.engine))
        if figures is not None:
            return measured_bytes(figures, self.input_size)
        keys = [key for key in NETWORK_MIB if key[1] == self.engine] or list(NETWORK_MIB)
        measured = [
            (measured_bytes(NETWORK_MIB[key], self.input_size), BUNDLED_WEIGHTS_BYTES[key[0]])
            for key in keys
        ]
        largest = max(figure for figure, _ in measured)
        if not self.weights_bytes:
            return largest
        return max(
            largest, *(figure * self.weights_bytes // weights for figure, weights in measured)
        )


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
    kept = MARGIN_BYTES + MIN_REQUEST_BYTES
    room = limit - resident - kept
    each = ", ".join(
        f"{load.model} on {load.engine} at {load.input_size} (~{load.bytes / MiB:.0f} MiB)"
        for load in loads
    )
    needed = resident + kept + sum(load.bytes for load in loads)
    if len(loads) == 1:
        what, fits = f"one {loads[0].engine} network of {each}", ""
    else:
        what = f"one network of each model ({each})"
        fitting = largest_fitting(loads, room)
        fits = (
            "; "
            + " or ".join(f"{env_name('models')}={','.join(s)}" for s in fitting)
            + " would fit"
            if fitting
            else "; no one of them fits"
        )
    return (
        f"the memory limit ({limit / MiB:.0f} MiB) cannot hold {what} beside the process "
        f"({resident / MiB:.0f} MiB) and the room for requests ({kept / MiB:.0f} MiB){fits}; "
        f"give the pod more memory (at least {needed / MiB:.0f} MiB) or load fewer models "
        f"({env_name('models')})"
    )


def largest_fitting(loads: Sequence[NetworkLoad], room: int) -> list[tuple[str, ...]]:
    """The largest sets of ``loads``' models (as many models as can be) whose networks together
    fit in ``room`` bytes, each in ``loads``' order (the first is the default); empty when no
    single one fits."""
    for count in range(len(loads), 0, -1):
        sets = [
            tuple(load.model for load in chosen)
            for chosen in itertools.combinations(loads, count)
            if sum(load.bytes for load in chosen) <= room
        ]
        if sets:
            return sets
    return []


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
