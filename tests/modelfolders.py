"""User model folders for the tests: links to a real model's files, views, and each way of
breaking a folder with what the repository's error then says."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from iweblens.models.store import ModelPaths


def user_folder(root: Path, name: str, paths: ModelPaths, description: str | None = None) -> Path:
    """``root/name`` holding (links to) the model files of ``paths`` and ``description`` as its
    model.toml."""
    folder = root / name
    folder.mkdir(parents=True)
    for path in (paths.cfg, paths.weights, paths.names):
        (folder / path.name).symlink_to(path)
    if description is not None:
        (folder / "model.toml").write_text(description)
    return folder


def view_folder(root: Path, name: str, description: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "model.toml").write_text(description)
    return folder


def replaced(folder: Path, name: str, content: str | bytes) -> None:
    (folder / name).unlink(missing_ok=True)
    if isinstance(content, bytes):
        (folder / name).write_bytes(content)
    else:
        (folder / name).write_text(content)


def unlinked(name: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).unlink()


def written(name: str, content: str | bytes) -> Callable[[Path], None]:
    return lambda folder: replaced(folder, name, content)


def cut_short(path: Path, size: int) -> None:
    with path.open("rb") as handle:
        start = handle.read(size)
    replaced(path.parent, path.name, start)


def names_without_one(folder: Path) -> None:
    labels = (folder / "coco.names").read_text().splitlines()
    replaced(folder, "coco.names", "\n".join(labels[1:]))


# Each broken folder: how it is broken, and what the error says after naming the folder.
FOLDER_FAULTS: dict[str, tuple[Callable[[Path], None], str]] = {
    "no-cfg": (unlinked("yolov3-tiny.cfg"), "no *.cfg file(s); a model needs one"),
    "no-weights": (unlinked("yolov3-tiny.weights"), "no *.weights file(s); a model needs one"),
    "no-names": (unlinked("coco.names"), "no *.names file(s); a model needs one"),
    "two-cfgs": (written("copy.cfg", "[net]\n"), "2 *.cfg file(s); a model needs one"),
    "weights-size": (
        lambda folder: cut_short(folder / "yolov3-tiny.weights", 28),
        "yolov3-tiny.weights: has 28 bytes; yolov3-tiny.cfg needs 35434956",
    ),
    "names-count": (names_without_one, "coco.names: has 79 names; yolov3-tiny.cfg has classes=80"),
    "names-binary": (written("coco.names", b"\xff\xfe"), "coco.names: is not UTF-8 text"),
    "cfg-garbage": (
        written("yolov3-tiny.cfg", "this is no cfg\n"),
        "yolov3-tiny.cfg: cfg line 1: 'this is no cfg' is not key=value",
    ),
    "toml-garbage": (written("model.toml", "input_size = \n"), "model.toml: not a TOML file"),
    "toml-binary": (written("model.toml", b"\xff\xfe"), "model.toml: not a TOML file"),
    "unknown-key": (
        written("model.toml", "size = 320\n"),
        "model.toml: unknown key(s) size; it knows base, engine, input_size, labels",
    ),
    "input-size": (
        written("model.toml", "input_size = 300\n"),
        "model.toml: input_size 300 is not a multiple of 32",
    ),
    "input-size-text": (
        written("model.toml", 'input_size = "320"\n'),
        "model.toml: input_size '320' is not a multiple of 32",
    ),
    "engine": (written("model.toml", "engine = 3\n"), "model.toml: engine 3 is not a name"),
}

VIEW_FAULTS: dict[str, tuple[str, str]] = {
    "no-labels": ('base = "yolov3-tiny"\n', "a view needs [labels]: answered = [classes]"),
    "labels-not-a-table": ("labels = 3\n", "a view needs [labels]: answered = [classes]"),
    "labels-not-names": ("[labels]\nvehicle = 3\n", "labels.vehicle is not a list of class names"),
    "labels-of-numbers": (
        "[labels]\nvehicle = [1]\n",
        "labels.vehicle is not a list of class names",
    ),
    "base-not-a-name": ('base = 3\n[labels]\ncar = "car"\n', "base 3 is not a model name"),
}
