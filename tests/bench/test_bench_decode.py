"""``iweblens bench-decode`` on two committed photographs: its tables are there and sane."""

from __future__ import annotations

from pathlib import Path

from iweblens.bench import cost_model, decoding, variants
from iweblens.config import Settings


def test_agreement_table_has_every_decode(photos: list[Path]) -> None:
    """3 MP (2000 x 1500) is decoded at 1/2 by the service's rule; 12 MP at 1/4."""
    lines = decoding.reduced_decode_agreement(
        photos[:2], Settings(), log=lambda _: None, sizes_mp=(3, 12)
    )
    rows = [line.split("|")[1:-1] for line in lines if line.startswith("| ") and "MP |" in line]
    assert [(row[0].strip(), row[1].strip()) for row in rows] == [
        (f"{size} MP", decode)
        for size in (3, 12)
        for decode in ("full", "1/8", "1/4", "1/2", "the rule")
    ]
    # The rule decodes 3 MP at 1/2 and 12 MP at 1/4: the same long sides as those rows.
    assert rows[4][2] == rows[3][2] and rows[9][2] == rows[7][2]
    assert all(0.0 <= float(row[3]) <= 1.0 for row in rows)


def test_cpu_table_compares_full_size_with_size_aware(photos: list[Path]) -> None:
    lines = decoding.cpu(photos[:1], Settings(), rounds=1)
    assert [line.split("|")[1].strip() for line in lines[2:4]] == ["full size", "size-aware"]
    assert all(float(line.split("|")[2]) > 0 for line in lines[2:4])


def test_cost_table_sets_each_prediction_beside_its_measurement(photos: list[Path]) -> None:
    """``bench-decode cost``'s rows: a decoded sample with both figures, a refused one marked."""
    chosen = [v for v in variants.VARIANTS if (v.format, v.name) in REFUSED_AND_DECODED]
    rows = list(
        cost_model.rows(photos[0], Settings(), chosen, lambda _: [variants.SMALL], lambda _: None)
    )
    lines = cost_model.table(rows, unit_s=0.1)
    cells = {tuple(c.strip() for c in line.split("|")[1:3]): line for line in lines[2:]}
    gif = cells["GIF", "palette"].split("|")
    assert float(gif[7]) > 0 and float(gif[9]) > 0 and gif[10].strip() == "yes"
    assert "refused" in cells["TIFF", "float32"]
    assert cost_model.machine()[1].startswith("- CPU: ")


REFUSED_AND_DECODED = {("GIF", "palette"), ("TIFF", "float32")}
