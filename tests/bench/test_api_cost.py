"""The options/annotation cost measurement runs, and measures what it says it measures."""

from __future__ import annotations

from pathlib import Path

import requests

from iweblens.bench import api_cost


def test_every_variant_is_measured_and_reported(photos: list[Path]) -> None:
    rows = api_cost.measure(photos[:2], rounds=1)
    assert len(rows) == 2 and all(set(row) == set(api_cost.VARIANTS) for row in rows)
    assert all(total > rest > 0 for row in rows for total, rest in row.values())
    table = api_cost.report(rows)
    assert [line.split(" | ")[0].strip("| ") for line in table[2:-1]] == list(api_cost.VARIANTS)


def test_the_option_variants_change_no_answer_on_the_committed_photos(
    live_server: str, photos: list[Path]
) -> None:
    for photo in photos:
        answers = [
            requests.post(
                f"{live_server}/api/object_detection",
                files={"image": (photo.name, photo.read_bytes())},
                data=api_cost.VARIANTS[name],
                timeout=120,
            ).json()
            for name in ("plain", "options", "classes")
        ]
        assert answers[0] == answers[1] == answers[2], photo.name
