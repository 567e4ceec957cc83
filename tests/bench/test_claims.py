"""The report's building blocks: spreads over rounds, goal verdicts, ISA flags, F1 noise."""

from __future__ import annotations

from pathlib import Path

from iweblens.bench.agreement import F1Tally, f1_noise
from iweblens.bench.claims import (
    Spread,
    at_least,
    at_most,
    claims_table,
    isa_line,
    not_measured,
    reported,
)
from iweblens.detection import Detection
from iweblens.inference.resources import isa_flags

AVX512_CPUINFO = """processor\t: 0
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16
"""


def test_spread_is_the_median_with_the_lowest_and_highest_round() -> None:
    spread = Spread.of([0.91, 0.95, 0.94])
    assert spread.median == 0.94
    assert spread.cells() == ("0.94", "0.91-0.95")
    assert spread.text(1000, 0) == "940 (910-950)"
    assert Spread.of([2.0]).cells() == ("2.00", "")


def test_goals_are_judged_on_the_median_and_pending_ones_say_why() -> None:
    assert at_least("x", [0.90, 0.94, 0.95], 0.93).met
    assert not at_most("y", [1.0, 1.2, 1.3], 1.1).met
    lines = claims_table(
        [
            at_least("x", [0.9], 0.93),
            not_measured("z", ">= 4", "not built"),
            reported("w", [0.8, 0.9], "not exact"),
        ]
    )
    assert lines[2] == "| x | 0.90 |  | >= 0.93 | **no** |"
    assert lines[3] == "| z | | | >= 4 | not measured: not built |"
    assert lines[4] == "| w | 0.85 | 0.80-0.90 | none | not exact |"


def test_isa_flags_name_present_and_absent_extensions(tmp_path: Path) -> None:
    avx512, avx2 = tmp_path / "avx512", tmp_path / "avx2"
    avx512.write_text(AVX512_CPUINFO)
    avx2.write_text("flags\t: fpu sse2 avx avx2 fma\n")
    flags = isa_flags(avx512)
    assert flags == ["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16"]
    assert isa_line(flags).endswith("absent: avx_vnni amx_tile amx_int8 amx_bf16")
    assert isa_flags(avx2) == ["avx2", "fma"]


def _tally(matched: int, missed: int, extra: int) -> F1Tally:
    reference = [Detection("cat", 0.9, 10 * i, 0, 5, 5) for i in range(matched + missed)]
    candidate = reference[:matched] + [Detection("dog", 0.9, 0, 0, 5, 5)] * extra
    tally = F1Tally()
    tally.add(reference, candidate)
    return tally


def test_f1_noise_is_zero_when_every_image_agrees_and_grows_with_disagreement() -> None:
    assert f1_noise([_tally(3, 0, 0) for _ in range(20)]) == 0.0
    mixed = [_tally(3, 0, 0) for _ in range(15)] + [_tally(1, 2, 1) for _ in range(5)]
    assert 0.01 < f1_noise(mixed) < 0.2
