"""``iweblens bench-decode`` on two committed photographs: its tables are there and sane."""

from __future__ import annotations

from pathlib import Path

from iweblens.bench import decoding


def test_agreement_table_has_every_decode(photos: list[Path]) -> None:
    """3 MP (2000 x 1500) is decoded at 1/2 by the service's rule; 12 MP at 1/4."""
    lines = decoding.agreement(photos[:2], log=lambda _: None, sizes_mp=(3, 12))
    rows = [line.split("|")[1:-1] for line in lines if line.startswith("| ") and "MP |" in line]
    assert [(row[0].strip(), row[1].strip()) for row in rows] == [
        ("3 MP", "full"),
        ("3 MP", "1/8"),
        ("3 MP", "1/4"),
        ("3 MP", "1/2 *"),
        ("12 MP", "full"),
        ("12 MP", "1/8"),
        ("12 MP", "1/4 *"),
        ("12 MP", "1/2"),
    ]
    assert all(0.0 <= float(row[3]) <= 1.0 for row in rows)


def test_cpu_table_compares_full_size_with_size_aware(photos: list[Path]) -> None:
    lines = decoding.cpu(photos[:1], rounds=1)
    assert [line.split("|")[1].strip() for line in lines[2:4]] == ["full size", "size-aware"]
    assert all(float(line.split("|")[2]) > 0 for line in lines[2:4])
