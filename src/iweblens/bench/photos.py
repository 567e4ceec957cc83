"""The photographs a bench command runs on: the ``*.jpg`` files of a folder, first N by name."""

from __future__ import annotations

from pathlib import Path


def jpg_photos(folder: Path, count: int | None = None) -> list[Path]:
    """``folder``'s ``*.jpg`` files sorted by name, the first ``count`` of them (all for None).

    Only the lower-case ``.jpg`` suffix counts, as the reference client globs; a missing folder
    gives an empty list.
    """
    return sorted(Path(folder).glob("*.jpg"))[:count]
