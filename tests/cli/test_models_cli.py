"""The command line and a user's models folder: ``serve`` refuses every broken folder at start-up
(exits, naming the folder and the fault), ``models`` lists them, ``detect --model`` answers with
a model or view."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cutdown import cut_down
from modelfolders import FOLDER_FAULTS, VIEW_FAULTS, user_folder, view_folder
from support import IMAGES_DIR, free_port

from iweblens.models.store import ModelPaths

VIEWS = ["ipcam-general", "ipcam-combined", "ipcam-animal", "ipcam-dark"]
BUS_AND_TRUCK = IMAGES_DIR / "000000028124.jpg"  # a bus the model also scores as a truck
DOG_AND_PEOPLE = IMAGES_DIR / "000000473528.jpg"


def iweblens(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "iweblens.cli", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def refused_serve(env: dict[str, str]) -> str:
    """The line ``iweblens serve`` exited on, having served nothing."""
    port = free_port()
    done = iweblens("serve", "--host", "127.0.0.1", "--port", str(port), env=env)
    assert done.returncode != 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("iweblens: ")
    return line


def test_serve_exits_naming_every_broken_folder_and_its_fault(
    tmp_path: Path, model_paths: ModelPaths
) -> None:
    for name, (breaks, _) in FOLDER_FAULTS.items():
        breaks(user_folder(tmp_path, name, model_paths))
    for name, (description, _) in VIEW_FAULTS.items():
        view_folder(tmp_path, name, description)
    user_folder(tmp_path, "good", model_paths)
    line = refused_serve({"IWEBLENS_CUSTOM_MODELS_DIR": str(tmp_path)})
    for name, (_, says) in FOLDER_FAULTS.items():
        assert f"{tmp_path / name}" in line and says in line, name
    for name, (_, says) in VIEW_FAULTS.items():
        assert f"{tmp_path / name / 'model.toml'}: {says}" in line, name
    assert f"{tmp_path / 'good'}" not in line


def test_serve_exits_when_the_models_folder_is_no_folder(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    for missing in (tmp_path / "nowhere", tmp_path / "file"):
        line = refused_serve({"IWEBLENS_CUSTOM_MODELS_DIR": str(missing)})
        assert line == f"iweblens: IWEBLENS_CUSTOM_MODELS_DIR={missing} is not a folder"


# What makes a folder unservable past the folder's own check, and what ``serve`` then says.
SERVE_FAULTS: dict[str, tuple[str, str, dict[str, str], str]] = {
    "reserved-name": ("list", "[labels]\nvehicle = ['car']\n", {}, "'list' is a reserved name"),
    "bundled-name": (
        "yolov4-tiny",
        "[labels]\nvehicle = ['car']\n",
        {},
        "'yolov4-tiny' is a bundled model's name",
    ),
    "base-unknown": (
        "mine",
        "base = 'yolov5'\n[labels]\nvehicle = ['car']\n",
        {},
        "view 'mine': its base 'yolov5' is no real model; the real models are",
    ),
    "class-unknown": (
        "mine",
        "[labels]\nvehicle = ['car', 'truk']\n",
        {},
        "view 'mine': its model 'yolov3-tiny' has no class 'truk'",
    ),
    "view-loaded": (
        "mine",
        "[labels]\nvehicle = ['car']\n",
        {"IWEBLENS_MODELS": "mine"},
        "IWEBLENS_MODELS names the view 'mine'",
    ),
}


@pytest.mark.parametrize("fault", SERVE_FAULTS)
def test_serve_exits_on_a_view_it_cannot_serve(tmp_path: Path, fault: str) -> None:
    name, description, env, says = SERVE_FAULTS[fault]
    view_folder(tmp_path, name, description)
    line = refused_serve({"IWEBLENS_CUSTOM_MODELS_DIR": str(tmp_path), **env})
    assert says in line


def test_serve_exits_on_a_loaded_user_models_unknown_engine(
    tmp_path: Path, model_paths: ModelPaths
) -> None:
    user_folder(tmp_path, "mine", model_paths, 'engine = "tensorflow"\n')
    env = {"IWEBLENS_CUSTOM_MODELS_DIR": str(tmp_path), "IWEBLENS_MODELS": "yolov3-tiny,mine"}
    assert "model mine: engine: unknown engine 'tensorflow'" in refused_serve(env)


@pytest.fixture
def user_models(tmp_path: Path, model_paths: ModelPaths) -> dict[str, str]:
    """The environment of a models folder: ``mine`` (YOLOv3-tiny's files, at 320) and
    ``doorway``, a view over it, with only the bundled default loaded."""
    user_folder(tmp_path, "mine", model_paths, "input_size = 320\n")
    view_folder(tmp_path, "doorway", 'base = "mine"\n[labels]\nvisitor = ["person", "dog"]\n')
    return {"IWEBLENS_CUSTOM_MODELS_DIR": str(tmp_path)}


def test_models_lists_the_bundled_and_the_users_models(
    user_models: dict[str, str], tmp_path: Path
) -> None:
    table = iweblens("models", env=user_models)
    assert table.returncode == 0, table.stderr
    rows = [line.split(maxsplit=3) for line in table.stdout.splitlines()]
    assert [row[:3] for row in rows] == [
        ["yolov3-tiny", "darknet", "loaded"],
        ["yolov4-tiny", "darknet", "-"],
        *([view, "view", "loaded"] for view in VIEWS),
        ["doorway", "view", "-"],
        ["mine", "darknet", "-"],
    ]
    assert rows[-2][3] == "over mine: visitor"
    assert rows[-1][3] == f"320 px, opencv, 80 labels, {tmp_path / 'mine'}"
    listed = json.loads(iweblens("models", "--json", env=user_models).stdout)
    assert [entry["name"] for entry in listed] == [row[0] for row in rows]
    loaded = iweblens("models", "--json", env={**user_models, "IWEBLENS_MODELS": "mine"})
    assert {e["name"]: e["loaded"] for e in json.loads(loaded.stdout)}["doorway"] == "loaded"


def detected(*args: str, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    done = iweblens("detect", *args, env=env)
    assert done.returncode == 0, done.stderr
    found: list[dict[str, Any]] = json.loads(done.stdout)["objects"]
    return found


def test_detect_with_ipcam_general_prints_only_person_and_vehicle() -> None:
    plain = detected(str(DOG_AND_PEOPLE))
    viewed = detected("--model", "ipcam-general", str(DOG_AND_PEOPLE))
    assert {o["label"] for o in viewed} == {"person", "vehicle"}
    assert [o for o in viewed if o["label"] == "person"] == [
        o for o in plain if o["label"] == "person"
    ]
    assert detected("--model", "general", str(DOG_AND_PEOPLE)) == viewed


def test_detect_with_ipcam_general_prints_one_vehicle_for_a_bus_scored_as_a_truck() -> None:
    low = {"IWEBLENS_CONFIDENCE": "0.25"}
    plain = detected(str(BUS_AND_TRUCK), env=low)
    viewed = detected("--model", "ipcam-general", str(BUS_AND_TRUCK), env=low)
    assert [o["label"] for o in viewed] == ["vehicle"] * 3
    assert sorted(o["label"] for o in plain) == ["bus", "bus", "car", "truck"]
    boxes = [o["rectangle"] for o in plain]
    assert [o["rectangle"] for o in viewed] == [
        b for i, b in enumerate(boxes) if b not in boxes[:i]
    ]


def test_detect_with_a_users_view_loads_its_model_whatever_iweblens_models_says(
    user_models: dict[str, str],
) -> None:
    plain = detected("--model", "mine", str(DOG_AND_PEOPLE), env=user_models)
    viewed = detected("--model", "doorway", str(DOG_AND_PEOPLE), env=user_models)
    assert {o["label"] for o in viewed} == {"visitor"}
    assert len(viewed) <= len([o for o in plain if o["label"] in ("person", "dog")])
    assert next(o["rectangle"] for o in plain if o["label"] == "dog") in [
        o["rectangle"] for o in viewed
    ]


@pytest.mark.parametrize("command", ["detect", "fetch-model"])
@pytest.mark.parametrize("name", ["nope", "list", "ipcam-general/"])
def test_an_unknown_model_on_the_command_line_exits_listing_the_models(
    command: str, name: str
) -> None:
    args = ["--model", name, *([str(DOG_AND_PEOPLE)] if command == "detect" else [])]
    done = iweblens(command, *args)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"iweblens: unknown model {name!r}; the models are yolov3-tiny, yolov4-tiny, "
        + ", ".join(VIEWS)
    )


def test_models_lists_what_the_views_answer_over_a_model_lacking_classes(
    tmp_path: Path, model_paths: ModelPaths
) -> None:
    cut_down(model_paths, ("person",), tmp_path / "people")
    env = {"IWEBLENS_CUSTOM_MODELS_DIR": str(tmp_path), "IWEBLENS_MODELS": "people"}
    listed = {e["name"]: e for e in json.loads(iweblens("models", "--json", env=env).stdout)}
    assert {name: e["loaded"] for name, e in listed.items() if e["kind"] == "view"} == {
        "ipcam-general": "loaded",
        "ipcam-combined": "loaded",
        "ipcam-animal": "-",
        "ipcam-dark": "loaded",
    }
    assert listed["ipcam-general"]["detail"] == "over people: person"
    assert listed["people"]["detail"] == f"416 px, opencv, 1 labels, {tmp_path / 'people'}"


def test_detect_with_another_model_needs_none_of_the_defaults_files(
    tmp_path: Path, yolov4_tiny_paths: ModelPaths
) -> None:
    cache = tmp_path / "cache"
    (cache / "yolov4-tiny").mkdir(parents=True)
    for path in (yolov4_tiny_paths.cfg, yolov4_tiny_paths.weights, yolov4_tiny_paths.names):
        (cache / "yolov4-tiny" / path.name).symlink_to(path)
    env = {"IWEBLENS_MODEL_DIR": str(cache)}
    found = detected("--model", "yolov4-tiny", str(DOG_AND_PEOPLE), env=env)
    assert {o["label"] for o in found} >= {"dog", "person"}
    assert [path.name for path in cache.iterdir()] == ["yolov4-tiny"]
