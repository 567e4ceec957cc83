"""Every attack ``iweblens stress`` (``make stress``) runs, by name, at its full settings.

The suite runs shorter versions of the same functions (``tests/bench/test_pod_attacks.py`` and
``tests/bench/test_attacks_*.py``), which assert outcomes only; the full runs here also judge
rates: while an attack that would stall the pod runs, the ordinary client is served at least
``SERVED_UNDER_ATTACK`` of the rate it gets without the attack, measured on the same pod just
before (``baseline_s``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from iweblens.bench.attacks.bodies import hostile_json
from iweblens.bench.attacks.connections import (
    declared_bodies,
    maximal_burst,
    one_byte_flood,
    sigterm_long_job,
)
from iweblens.bench.attacks.floods import connection_flood
from iweblens.bench.attacks.formats import costly_formats
from iweblens.bench.attacks.images import hostile_images
from iweblens.bench.attacks.memory import max_bodies, one_max_image
from iweblens.bench.attacks.overload import overload
from iweblens.bench.attacks.patience import impatient_clients
from iweblens.bench.attacks.results import AttackResult
from iweblens.bench.attacks.shutdown import sigterm
from iweblens.bench.attacks.sizing import cpu_over_memory
from iweblens.bench.attacks.study_load import study_load
from iweblens.bench.pod import MIB
from iweblens.harness.manifest import PodSpec

FLOOD_S = 60.0

Attack = Callable[[PodSpec, Sequence[Path]], AttackResult]

ATTACKS: dict[str, Attack] = {
    "study-load": study_load,
    "one-max-image": one_max_image,
    "max-bodies": max_bodies,
    "slowloris": lambda spec, images: connection_flood(
        spec, images, connections=128, trickle=True, duration_s=FLOOD_S, baseline_s=FLOOD_S
    ),
    "silent": lambda spec, images: connection_flood(
        spec, images, connections=500, trickle=False, duration_s=FLOOD_S, baseline_s=FLOOD_S
    ),
    "one-byte-flood": lambda spec, images: one_byte_flood(
        spec, images, duration_s=FLOOD_S, baseline_s=FLOOD_S
    ),
    "declared-bodies": lambda spec, images: declared_bodies(
        spec, images, duration_s=FLOOD_S, baseline_s=FLOOD_S
    ),
    "impatient-clients": lambda spec, images: impatient_clients(spec, images, duration_s=FLOOD_S),
    "hostile-json": hostile_json,
    "hostile-images": hostile_images,
    "costly-formats": costly_formats,
    "maximal-burst": maximal_burst,
    "overload": overload,
    "sigterm": sigterm,
    "sigterm-long-job": sigterm_long_job,
    "cpu-over-memory": lambda spec, _images: cpu_over_memory(spec),
}


def run_attack(name: str, spec: PodSpec, images: Sequence[Path]) -> AttackResult:
    """The full version of one attack, as ``make stress`` runs it."""
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; one of {', '.join(ATTACKS)}")
    return ATTACKS[name](spec, images)


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
    spec: PodSpec, images: Sequence[Path], attacks: Sequence[str] = tuple(ATTACKS)
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
