"""The model repository: names, aliases, views and their labels, ``IWEBLENS_MODELS``, and the
check of a user's models folder (every broken folder named with its fault)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from modelfolders import FOLDER_FAULTS, VIEW_FAULTS, user_folder, view_folder

from iweblens.config import Settings
from iweblens.models.labels import COCO_SPELLING, coco_name
from iweblens.models.repository import (
    BUNDLED_VIEWS,
    DarknetModel,
    ModelConfigError,
    ModelNotLoadedError,
    ModelRepository,
    UnknownModelError,
    View,
    read_folder,
    scan_folder,
)
from iweblens.models.store import ModelPaths

VEHICLES = ("bicycle", "bus", "car", "motorbike", "truck")


def model(name: str, *labels: str) -> DarknetModel:
    return DarknetModel(name, Path("/nowhere") / name, labels=labels)


@pytest.fixture(scope="module")
def darknet_labels(model_paths: ModelPaths) -> tuple[str, ...]:
    """The 80 COCO classes in darknet's spelling (``motorbike``), as coco.names lists them."""
    return tuple(model_paths.labels())


def repository(
    *models: DarknetModel | View, loaded: tuple[str, ...] = ("coco",)
) -> ModelRepository:
    return ModelRepository([*models, *BUNDLED_VIEWS], loaded)


def settings(**changes: object) -> Settings:
    return dataclasses.replace(Settings.from_env(), **changes)  # type: ignore[arg-type]


# --- names and aliases ---


@pytest.mark.parametrize(
    ("asked", "answered"),
    [("general", "ipcam-general"), ("", "ipcam-general"), ("combined", "ipcam-combined")],
)
def test_codeproject_aliases_name_the_ipcam_views(
    darknet_labels: tuple[str, ...], asked: str, answered: str
) -> None:
    served = repository(model("coco", *darknet_labels)).resolve(asked)
    assert served.name == answered
    assert served.model.name == "coco"


def test_no_name_is_the_default_model_unrelabelled(darknet_labels: tuple[str, ...]) -> None:
    served = repository(model("coco", *darknet_labels)).resolve(None)
    assert (served.name, served.relabel, served.labels) == ("coco", None, darknet_labels)


def test_list_is_no_model_and_an_unknown_name_lists_the_names(
    darknet_labels: tuple[str, ...],
) -> None:
    models = repository(model("coco", *darknet_labels))
    for name in ("list", "nope", "ipcam-general/", "../detection", "\u6a21\u578b", "x" * 5000):
        with pytest.raises(UnknownModelError) as raised:
            models.resolve(name)
        assert raised.value.known == ("coco", *(view.name for view in BUNDLED_VIEWS))
    assert "list" not in models.served()


def test_a_model_not_loaded_names_the_variable_that_loads_it(
    darknet_labels: tuple[str, ...],
) -> None:
    over_other = View("mine", (("car", "car"),), base="other", strict=True)
    models = repository(model("coco", *darknet_labels), model("other", "car"), over_other)
    for name in ("other", "mine"):
        with pytest.raises(ModelNotLoadedError, match=r"IWEBLENS_MODELS=coco\); add it to"):
            models.resolve(name)
        assert not models.is_loaded(name)


# --- views ---


@pytest.mark.parametrize("spelling", ["darknet", "coco"])
def test_ipcam_general_answers_every_vehicle_as_one_label_in_either_spelling(
    darknet_labels: tuple[str, ...], spelling: str
) -> None:
    labels = darknet_labels if spelling == "darknet" else tuple(map(coco_name, darknet_labels))
    served = repository(model("coco", *labels)).resolve("ipcam-general")
    motorcycle = "motorbike" if spelling == "darknet" else "motorcycle"
    vehicles = {motorcycle if name == "motorbike" else name for name in VEHICLES}
    assert dict(served.relabel or {}) == {"person": "person"} | dict.fromkeys(vehicles, "vehicle")
    assert served.labels == ("person", "vehicle")


def test_ipcam_combined_answers_cocos_spelling_of_darknets_classes(
    darknet_labels: tuple[str, ...],
) -> None:
    served = repository(model("coco", *darknet_labels)).resolve("combined")
    relabel = dict(served.relabel or {})
    assert relabel["motorbike"] == "motorcycle"
    assert all(shown == coco_name(label) for label, shown in relabel.items())
    assert set(relabel) <= set(darknet_labels) and not set(relabel) & set(COCO_SPELLING.values())


def test_a_bundled_view_over_a_model_lacking_its_classes_is_left_out() -> None:
    models = repository(model("coco", "dog", "person", "apple"))
    served = models.served()
    assert list(served) == ["coco", "ipcam-general", "ipcam-combined", "ipcam-animal", "ipcam-dark"]
    assert served["ipcam-general"].labels == ("person",)
    fruit = repository(model("coco", "apple", "banana"))
    assert list(fruit.served()) == ["coco"]
    with pytest.raises(ModelNotLoadedError):
        fruit.resolve("general")


def test_a_user_view_naming_a_class_its_model_lacks_is_an_error() -> None:
    typo = View("mine", (("car", "vehicle"), ("truk", "vehicle"), ("bus", "vehicle")), strict=True)
    models = repository(model("coco", "car", "truck", "bus"), typo)
    with pytest.raises(
        ModelConfigError, match=r"view 'mine': its model 'coco' has no class 'truk'"
    ):
        models.served()


def test_a_user_view_over_a_second_model_answers_with_that_model(
    darknet_labels: tuple[str, ...],
) -> None:
    pets = View("pets", (("Cat", "pet"), ("dog", "pet")), base="small", strict=True)
    models = repository(
        model("coco", *darknet_labels), model("small", "dog", "cat"), pets, loaded=("coco", "small")
    )
    served = models.resolve("pets")
    assert served.model.name == "small"
    assert dict(served.relabel or {}) == {"cat": "pet", "dog": "pet"}
    assert models.resolve("general").model.name == "coco"  # bundled views: over the default


# --- IWEBLENS_MODELS ---


def test_the_first_loaded_model_is_the_default(
    model_paths: ModelPaths, yolov4_tiny_paths: ModelPaths
) -> None:
    models = ModelRepository.from_settings(settings(models=("yolov4-tiny", "yolov3-tiny")))
    assert models.default == "yolov4-tiny"
    assert models.resolve(None).model.name == "yolov4-tiny"
    assert models.resolve("ipcam-general").model.name == "yolov4-tiny"


@pytest.mark.parametrize(
    ("loaded", "fault"),
    [
        (("ipcam-general",), "names the view 'ipcam-general'"),
        (("yolov3-tiny", "general"), "names 'general', which is no model"),
        (("yolov5",), "names 'yolov5', which is no model"),
        (("yolov3-tiny", "yolov3-tiny"), "names 'yolov3-tiny' twice"),
    ],
)
def test_iweblens_models_naming_no_real_model_is_an_error_listing_them(
    tmp_path: Path, model_paths: ModelPaths, loaded: tuple[str, ...], fault: str
) -> None:
    user_folder(tmp_path, "mine", model_paths)
    with pytest.raises(ModelConfigError) as raised:
        ModelRepository.from_settings(settings(models=loaded, custom_models_dir=tmp_path))
    message = str(raised.value)
    assert message.startswith("IWEBLENS_MODELS ") and fault in message
    assert "yolov3-tiny, yolov4-tiny, mine" in message


# --- a user's models folder ---


def test_a_users_darknet_folder_is_a_model_named_after_it(
    tmp_path: Path, model_paths: ModelPaths
) -> None:
    folder = user_folder(tmp_path, "my-yolo", model_paths, 'input_size = 320\nengine = "openvino"')
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "README.txt").write_text("not a model")
    [found] = scan_folder(tmp_path, tmp_path / ".cache")
    assert isinstance(found, DarknetModel)
    assert (found.name, found.folder, found.input_size, found.engine) == (
        "my-yolo",
        folder,
        320,
        "openvino",
    )
    assert found.labels == tuple(model_paths.labels())
    assert found.verified_paths() == ModelPaths(
        folder / model_paths.cfg.name,
        folder / model_paths.weights.name,
        folder / "coco.names",
        tmp_path / ".cache" / "my-yolo",
    )
    assert set(found.sha256) == {"yolov3-tiny.cfg", "yolov3-tiny.weights", "coco.names"}


def test_without_a_description_a_folder_takes_its_cfgs_input_size(
    tmp_path: Path, model_paths: ModelPaths
) -> None:
    found = read_folder(user_folder(tmp_path, "plain", model_paths), tmp_path / ".cache")
    assert isinstance(found, DarknetModel)
    assert (found.input_size, found.engine) == (416, None)


def test_a_model_toml_view_folder_is_served_over_its_base(
    tmp_path: Path, model_paths: ModelPaths
) -> None:
    view_folder(
        tmp_path,
        "doorway",
        'base = "yolov3-tiny"\n[labels]\nperson = "person"\nride = ["motorcycle", "Bicycle"]\n',
    )
    models = ModelRepository.from_settings(settings(custom_models_dir=tmp_path))
    view = models.models["doorway"]
    assert view == View(
        "doorway",
        (("person", "person"), ("motorcycle", "ride"), ("Bicycle", "ride")),
        base="yolov3-tiny",
        strict=True,
    )
    served = models.resolve("doorway")
    assert dict(served.relabel or {}) == {
        "person": "person",
        "motorbike": "ride",
        "bicycle": "ride",
    }
    assert models.names()[-1] == "doorway"


@pytest.mark.parametrize("fault", FOLDER_FAULTS)
def test_each_broken_darknet_folder_is_named_with_its_fault(
    tmp_path: Path, model_paths: ModelPaths, fault: str
) -> None:
    breaks, says = FOLDER_FAULTS[fault]
    folder = user_folder(tmp_path, fault, model_paths)
    breaks(folder)
    with pytest.raises(ModelConfigError) as raised:
        ModelRepository.from_settings(settings(custom_models_dir=tmp_path))
    assert str(raised.value).startswith(f"{folder}"), raised.value
    assert says in str(raised.value)


@pytest.mark.parametrize("fault", VIEW_FAULTS)
def test_each_broken_view_folder_is_named_with_its_fault(tmp_path: Path, fault: str) -> None:
    description, says = VIEW_FAULTS[fault]
    folder = view_folder(tmp_path, fault, description)
    with pytest.raises(ModelConfigError) as raised:
        scan_folder(tmp_path, tmp_path / ".cache")
    assert str(raised.value) == f"{folder / 'model.toml'}: {says}"


@pytest.mark.parametrize("name", ["list", "general", "combined"])
def test_a_folder_named_like_a_route_or_an_alias_is_refused(
    tmp_path: Path, model_paths: ModelPaths, name: str
) -> None:
    folder = user_folder(tmp_path, name, model_paths)
    with pytest.raises(
        ModelConfigError, match=f"^{re.escape(str(folder))}: '{name}' is a reserved name"
    ):
        scan_folder(tmp_path, tmp_path / ".cache")


def test_every_broken_folder_is_reported_at_once(tmp_path: Path, model_paths: ModelPaths) -> None:
    user_folder(tmp_path, "good", model_paths)
    broken = {
        name: user_folder(tmp_path, name, model_paths)
        for name in ("no-cfg", "names-count", "engine")
    }
    for name, folder in broken.items():
        FOLDER_FAULTS[name][0](folder)
    view_folder(tmp_path, "no-labels", VIEW_FAULTS["no-labels"][0])
    with pytest.raises(ModelConfigError) as raised:
        scan_folder(tmp_path, tmp_path / ".cache")
    message = str(raised.value)
    for name, folder in broken.items():
        assert str(folder) in message and FOLDER_FAULTS[name][1] in message
    assert f"{tmp_path / 'no-labels' / 'model.toml'}: " in message
    assert f"{tmp_path / 'good'}" not in message


def test_a_models_folder_that_is_no_folder_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "models"
    with pytest.raises(ModelConfigError, match=f"IWEBLENS_CUSTOM_MODELS_DIR={missing} is not"):
        scan_folder(missing, tmp_path / ".cache")


@pytest.mark.parametrize("name", ["yolov4-tiny", "ipcam-general"])
def test_a_folder_named_like_a_bundled_model_is_named_with_its_fault(
    tmp_path: Path, model_paths: ModelPaths, name: str
) -> None:
    folder = view_folder(tmp_path, name, '[labels]\nvehicle = ["car"]\n')
    user_folder(tmp_path, "broken", model_paths, "engine = 3\n")
    with pytest.raises(ModelConfigError) as raised:
        ModelRepository.from_settings(settings(custom_models_dir=tmp_path))
    assert f"{folder}: '{name}' is a bundled model's name" in str(raised.value)
    assert f"{tmp_path / 'broken' / 'model.toml'}: engine 3" in str(raised.value)


@pytest.mark.parametrize("base", ["yolov5", "ipcam-general", "general"])
def test_a_view_over_no_real_model_is_an_error_listing_them(
    tmp_path: Path, model_paths: ModelPaths, base: str
) -> None:
    view_folder(tmp_path, "mine", f'base = "{base}"\n[labels]\nvehicle = ["car"]\n')
    with pytest.raises(ModelConfigError) as raised:
        ModelRepository.from_settings(settings(custom_models_dir=tmp_path))
    assert str(raised.value) == (
        f"view 'mine': its base {base!r} is no real model; the real models are "
        "yolov3-tiny, yolov4-tiny"
    )


def test_a_folder_of_model_files_and_view_labels_is_refused(
    tmp_path: Path, model_paths: ModelPaths
) -> None:
    folder = user_folder(tmp_path, "both", model_paths, '[labels]\nvehicle = ["car"]\n')
    with pytest.raises(ModelConfigError) as raised:
        scan_folder(tmp_path, tmp_path / ".cache")
    assert str(raised.value) == (
        f"{folder / 'model.toml'}: base or [labels] make a view, which has no model files, "
        "input_size or engine; this folder has yolov3-tiny.cfg, yolov3-tiny.weights, coco.names"
    )
    (folder / "yolov3-tiny.cfg").unlink()
    (folder / "yolov3-tiny.weights").unlink()
    (folder / "coco.names").unlink()
    (folder / "model.toml").write_text('engine = "openvino"\nbase = "yolov3-tiny"\n')
    with pytest.raises(ModelConfigError, match=r"; this folder has engine$"):
        scan_folder(tmp_path, tmp_path / ".cache")


@pytest.mark.parametrize(
    ("labels", "fault"),
    [
        ('vehicle = []\nperson = ["person"]', "labels.vehicle names no class"),
        ('a = ["car"]\nb = ["Car"]', "class 'car' is answered as both 'a' and 'b'"),
        ('a = ["motorcycle"]\nb = ["motorbike"]', "class 'motorbike' is answered as both"),
    ],
)
def test_a_view_answering_a_label_by_no_class_or_a_class_twice_is_refused(
    tmp_path: Path, model_paths: ModelPaths, labels: str, fault: str
) -> None:
    view_folder(tmp_path, "mine", f'base = "yolov3-tiny"\n[labels]\n{labels}\n')
    with pytest.raises(ModelConfigError, match=re.escape(fault)):
        ModelRepository.from_settings(settings(custom_models_dir=tmp_path)).served()
