"""darknet's model files: the cfg parser, in pure Python (no ONNX, no OpenCV).

The ONNX converter builds its graph from these sections; the model repository checks a user's
model folder with them before anything loads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Section:
    """One ``[kind]`` block of a darknet cfg file."""

    kind: str
    options: dict[str, str] = field(default_factory=dict)

    def integer(self, key: str, default: int) -> int:
        """The option as an int (``default`` when absent)."""
        return int(self.options.get(key, default))

    def ints(self, key: str) -> list[int]:
        """A comma-separated option as ints."""
        return [int(part) for part in self.options[key].split(",") if part.strip()]


def parse_cfg(text: str) -> list[Section]:
    """Parse darknet's ini-like cfg into sections, in file order.

    ``#`` starts a comment anywhere, ``;`` at the start of a line (as in darknet); a repeated key
    keeps its last value (as OpenCV's importer does). Raises ``ValueError`` naming the line for
    an option outside any section or a line that is not ``key=value``, which OpenCV's importer
    refuses too: read as an empty option, it would build a network nobody described.
    """
    sections: list[Section] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith(";"):
            continue
        if line.startswith("["):
            sections.append(Section(line.strip("[]").strip()))
            continue
        key, equals, value = line.partition("=")
        if not equals or not key.strip():
            raise ValueError(f"cfg line {number}: {raw.strip()!r} is not key=value")
        if not sections:
            raise ValueError(f"cfg line {number}: {raw.strip()!r} comes before any [section]")
        sections[-1].options[key.strip()] = value.strip()
    return sections
