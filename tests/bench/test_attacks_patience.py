"""Impatient clients among patient ones, on one imitated pod (``iweblens.bench.attacks.patience``).

Clients that hang up after 0.1 s (Frigate's timeout) at 0.4 requests/s, beside two reference
clients that wait: the patient clients are all answered. Asserts outcomes, never speed.
"""

from __future__ import annotations

from pathlib import Path

from iweblens.bench.attacks.patience import impatient_clients
from iweblens.harness.manifest import PodSpec


def test_impatient_clients_do_not_get_patient_ones_refused(
    pod_spec: PodSpec, coco128: list[Path]
) -> None:
    result = impatient_clients(pod_spec, coco128, duration_s=30.0)
    print("\n" + "\n".join(result.lines()) + f"\n  {result.figures}")
    assert result.passed, result.figures
