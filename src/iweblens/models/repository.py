"""The model repository: every model the service knows by name, and which of them it loads.

A model is a description handed to the one inference path (pool, detector, admission), never a
second service. Two kinds exist (``KINDS``, the registry a new kind is added to):

* ``darknet``: a cfg, its weights and a names file. The bundled ones (``yolov3-tiny``, the
  default, and ``yolov4-tiny``) are pinned and fetched into the cache, each in its own folder;
  a user's live in ``IWEBLENS_CUSTOM_MODELS_DIR``, one folder per model named after the folder.
* ``view``: named classes of a real model, answered under other labels (``ipcam-general``
  answers car, truck, bus, motorcycle and bicycle as ``vehicle``). A view loads nothing.

A user's model folder may hold a ``model.toml`` description::

    input_size = 320          # darknet: the network side (default: the cfg's)
    engine = "onnxruntime"    # darknet: this model's engine (default: IWEBLENS_ENGINE)
    base = "yolov4-tiny"      # a view: the model it views (default: the server's default)
    [labels]                  # a view: answered label = the base model's classes
    vehicle = ["car", "truck", "bus"]
    person = ["person"]

A folder with ``base`` or ``[labels]`` and no model files is a view; one with a cfg, weights and
names is a darknet model. ``IWEBLENS_MODELS`` names the real models a server loads (the first is
its default, answering whenever no model is named); every view over a loaded model is served too.
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from iweblens.config import Settings, env_name
from iweblens.models.darknet import DarknetModelError, check_model
from iweblens.models.labels import coco_name
from iweblens.models.store import PINNED, ModelPaths, ModelStore, PinnedModel, sha256_of

log = logging.getLogger(__name__)

DEFAULT_MODEL = "yolov3-tiny"
DESCRIPTION_FILE = "model.toml"
# The cache's folder for what is derived from a user's models, one subfolder per model.
USER_CACHE = "user"
# What CodeProject.AI and Agent DVR ask for by these names, and what answers them here.
ALIASES = MappingProxyType(
    {"": "ipcam-general", "general": "ipcam-general", "combined": "ipcam-combined"}
)
RESERVED = frozenset({"list"})  # /v1/vision/custom/list is the listing


class ModelConfigError(ValueError):
    """A model, a model folder or ``IWEBLENS_MODELS`` cannot be served; says which and why."""


class UnknownModelError(LookupError):
    """No model of that name; ``known`` lists the names that exist."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name, self.known = name, tuple(known)
        super().__init__(f"unknown model {name!r}; the models are {', '.join(self.known)}")


class ModelNotLoadedError(LookupError):
    """The model exists but this server does not load it (``IWEBLENS_MODELS``)."""

    def __init__(self, name: str, loaded: Iterable[str]) -> None:
        self.name, self.loaded = name, tuple(loaded)
        super().__init__(
            f"model {name!r} is not loaded on this server ({env_name('models')}="
            f"{','.join(self.loaded)}); add it to {env_name('models')} to serve it"
        )


@dataclass(frozen=True)
class DarknetModel:
    """A darknet model: where its files are, and how it runs.

    ``pinned``: the bundled model's pinned files (None for a user's, checked at start-up);
    ``input_size``/``engine``: this model's own (None: the server's ``IWEBLENS_INPUT_SIZE`` and
    ``IWEBLENS_ENGINE``); ``labels``: in class-index order (None for a bundled model not yet
    fetched); ``sha256``: file name -> hash.
    """

    name: str
    folder: Path
    pinned: PinnedModel | None = None
    paths: ModelPaths | None = None
    input_size: int | None = None
    engine: str | None = None
    labels: tuple[str, ...] | None = None
    sha256: Mapping[str, str] = field(default_factory=dict)
    kind: str = field(default="darknet", init=False)

    def verified_paths(self) -> ModelPaths:
        """The files to load: a bundled model's verified against their pins (raises
        ``ModelIntegrityError``), a user's as checked at start-up."""
        if self.pinned is not None:
            return ModelStore(self.folder, progress=False, model=self.pinned).verified_paths()
        assert self.paths is not None
        return self.paths


@dataclass(frozen=True)
class View:
    """Classes of a real model answered under other labels; loads nothing.

    ``classes``: (the base model's class in COCO's or darknet's spelling, the answered label),
    in the order the answered labels are listed; ``base``: the viewed model (None: the server's
    default model); ``strict``: every class must be the base's (a user's view: a typo is an
    error), else the classes the base lacks are left out (a bundled view over any model).
    """

    name: str
    classes: tuple[tuple[str, str], ...]
    base: str | None = None
    note: str = ""
    strict: bool = False
    kind: str = field(default="view", init=False)

    @property
    def labels(self) -> tuple[str, ...]:
        """The answered labels, each once, in order."""
        return tuple(dict.fromkeys(answered for _, answered in self.classes))


Model = DarknetModel | View


def _same(*names: str) -> tuple[tuple[str, str], ...]:
    return tuple((name, name) for name in names)


_VEHICLES = ("car", "truck", "bus", "motorcycle", "bicycle")
_ANIMALS = ("bird", "cat", "dog", "horse", "sheep", "cow", "bear")
# The community's ipcam models are fine-tuned weights; these views answer their names from
# COCO's classes. Their labels COCO has no class for are named in the note.
BUNDLED_VIEWS: tuple[View, ...] = (
    View(
        "ipcam-general",
        (("person", "person"), *((vehicle, "vehicle") for vehicle in _VEHICLES)),
        note="COCO stand-in for the community's ipcam-general: person, vehicle",
    ),
    View(
        "ipcam-combined",
        _same("person", "bicycle", "car", "motorcycle", "bus", "truck", *_ANIMALS),
        note="COCO stand-in for the community's ipcam-combined; COCO has no deer, rabbit, "
        "raccoon, fox, skunk, squirrel or pig",
    ),
    View(
        "ipcam-animal",
        _same(*_ANIMALS),
        note="COCO stand-in for the community's ipcam-animal; COCO has no deer, rabbit, "
        "raccoon, fox, skunk, squirrel or pig",
    ),
    View(
        "ipcam-dark",
        _same("bicycle", "bus", "car", "cat", "dog", "motorcycle", "person"),
        note="COCO stand-in for the community's ipcam-dark (the same classes; not trained on "
        "night images)",
    ),
)


@dataclass(frozen=True)
class Served:
    """What answers one request naming a model: the real model that runs and, for a view, the
    label map (the real model's label -> the answered label; classes not in it are dropped)."""

    name: str
    model: DarknetModel
    relabel: Mapping[str, str] | None = None

    @property
    def labels(self) -> tuple[str, ...]:
        """The labels this model answers with."""
        if self.relabel is not None:
            return tuple(dict.fromkeys(self.relabel.values()))
        return self.model.labels or ()


class ModelRepository:
    """Every known model by name, the loaded ones, and name resolution (aliases included).

    Build it with ``from_settings``; ``resolve`` answers what serves a request's model name.
    """

    def __init__(self, models: Iterable[Model], loaded: Iterable[str]) -> None:
        self.models: dict[str, Model] = {}
        for model in models:
            if model.name in self.models:
                raise ModelConfigError(f"two models are named {model.name!r}")
            self.models[model.name] = model
        for model in self.models.values():
            base = model.base if isinstance(model, View) else None
            if base is not None and not isinstance(self.models.get(base), DarknetModel):
                raise ModelConfigError(
                    f"view {model.name!r}: its base {base!r} is no real model; the real models "
                    f"are {', '.join(self.real_names())}"
                )
        self.loaded = tuple(loaded)
        if not self.loaded:
            raise ModelConfigError(f"{env_name('models')} names no model")
        for name in self.loaded:
            if self.loaded.count(name) > 1:
                raise ModelConfigError(
                    f"{env_name('models')} names {name!r} twice; each real model "
                    f"({', '.join(self.real_names())}) loads once"
                )
            found = self.models.get(name)
            if found is None:
                raise ModelConfigError(
                    f"{env_name('models')} names {name!r}, which is no model; the real models "
                    f"are {', '.join(self.real_names())}"
                )
            if not isinstance(found, DarknetModel):
                raise ModelConfigError(
                    f"{env_name('models')} names the view {name!r}; it names real models "
                    f"({', '.join(self.real_names())}): views over them are served free"
                )
        self.default = self.loaded[0]
        self._served: dict[str, Served] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelRepository:
        """The bundled models and views, and every model in ``IWEBLENS_CUSTOM_MODELS_DIR``.

        Raises ``ModelConfigError`` naming the folder, the file and the fault for a user's model
        that cannot be served (a view's base no real model included), and for an
        ``IWEBLENS_MODELS`` naming no real model.
        """
        models: list[Model] = [bundled(pinned, settings.model_dir) for pinned in PINNED.values()]
        models += BUNDLED_VIEWS
        if settings.custom_models_dir is not None:
            models += scan_folder(
                settings.custom_models_dir,
                settings.model_dir / USER_CACHE,
                {model.name for model in models},
            )
        return cls(models, settings.models)

    def real_names(self) -> list[str]:
        return [name for name, model in self.models.items() if isinstance(model, DarknetModel)]

    def names(self) -> list[str]:
        """Every model's name, real ones first, in registration order."""
        return list(self.models)

    def real(self, name: str) -> DarknetModel:
        """The real model ``name`` (a darknet model; raises ``UnknownModelError``)."""
        model = self.models.get(name)
        if not isinstance(model, DarknetModel):
            raise UnknownModelError(name, self.real_names())
        return model

    def base_of(self, view: View) -> str:
        """The name of the model a view is over."""
        return view.base or self.default

    def is_loaded(self, name: str) -> bool:
        """Whether this server answers ``name`` (a view: whether its base is loaded)."""
        return name in self.served()

    def canonical(self, name: str) -> str:
        """The model a request's name means (``general`` -> ``ipcam-general``)."""
        return ALIASES.get(name, name)

    def resolve(self, name: str | None) -> Served:
        """What serves a request naming ``name`` (None: the default model).

        Raises ``UnknownModelError`` (with the known names) and ``ModelNotLoadedError``.
        """
        name = self.default if name is None else self.canonical(name)
        if name not in self.models or name in RESERVED:
            raise UnknownModelError(name, self.names())
        served = self.served().get(name)
        if served is None:
            raise ModelNotLoadedError(name, self.loaded)
        return served

    def served(self) -> dict[str, Served]:
        """Everything this server answers, by name: each loaded model, then each view over one.

        Computed once the loaded models' labels are known (their files fetched). Raises
        ``ModelConfigError`` for a user's view naming classes its model does not have; a bundled
        view whose model has none of its classes is left out.
        """
        if self._served is not None:
            return self._served
        served = {name: Served(name, self.real(name)) for name in self.loaded}
        for model in self.models.values():
            if not isinstance(model, View) or self.base_of(model) not in self.loaded:
                continue
            base = served[self.base_of(model)].model
            relabel = relabel_for(model, base)
            if relabel:
                served[model.name] = Served(model.name, base, relabel)
            else:
                log.info("view %s left out: %s has none of its classes", model.name, base.name)
        self._served = served
        return served


def relabel_for(view: View, base: DarknetModel) -> Mapping[str, str]:
    """The base's label -> the answered label, for the view's classes the base has (empty when
    it has none).

    Classes are matched in COCO's or darknet's spelling, any case. Raises ``ModelConfigError``
    for a strict view naming a class the base does not have, and for a view answering one class
    under two labels.
    """
    if base.labels is None:
        raise ModelConfigError(f"view {view.name!r}: the files of {base.name!r} are not fetched")
    spelled = {coco_name(label).lower(): label for label in base.labels}
    spelled.update({label.lower(): label for label in base.labels})
    missing = [wanted for wanted, _ in view.classes if wanted.lower() not in spelled]
    if missing and view.strict:
        raise ModelConfigError(
            f"view {view.name!r}: its model {base.name!r} has no class "
            f"{', '.join(repr(name) for name in missing)}"
        )
    relabel: dict[str, str] = {}
    for wanted, answered in view.classes:
        label = spelled.get(wanted.lower())
        if label is not None and relabel.setdefault(label, answered) != answered:
            raise ModelConfigError(
                f"view {view.name!r}: class {label!r} is answered as both "
                f"{relabel[label]!r} and {answered!r}"
            )
    return MappingProxyType(relabel)


def bundled(pinned: PinnedModel, cache: Path) -> DarknetModel:
    """A bundled model's description; its labels when its files are already in the cache."""
    store = ModelStore.in_cache(cache, pinned, progress=False)
    names = next(spec for spec in pinned.files if spec.name.endswith(".names"))
    path = store.path(names.name)
    labels = _read_labels(path) if path.is_file() and sha256_of(path) == names.sha256 else None
    return DarknetModel(
        pinned.name,
        store.directory,
        pinned=pinned,
        labels=labels,
        sha256=MappingProxyType({spec.name: spec.sha256 for spec in pinned.files}),
    )


def _read_labels(path: Path) -> tuple[str, ...]:
    return tuple(line.strip() for line in path.read_text().splitlines() if line.strip())


def scan_folder(folder: Path, cache: Path, taken: Collection[str] = ()) -> list[Model]:
    """Every model in a user's models folder, checked; raises ``ModelConfigError`` naming each
    broken folder, its file and the fault (all of them, not only the first). What is derived
    from a model (a converted graph) goes to ``cache/<name>``, never into its folder.
    ``taken``: the bundled models' names, which no folder may take."""
    if not folder.is_dir():
        raise ModelConfigError(f"{env_name('custom_models_dir')}={folder} is not a folder")
    models: list[Model] = []
    faults: list[str] = []
    for sub in sorted(path for path in folder.iterdir() if path.is_dir()):
        if sub.name.startswith("."):
            continue
        if sub.name in taken:
            faults.append(f"{sub}: {sub.name!r} is a bundled model's name")
            continue
        try:
            models.append(read_folder(sub, cache / sub.name))
        except ModelConfigError as error:
            faults.append(str(error))
    if faults:
        raise ModelConfigError("; ".join(faults))
    return models


def _description(folder: Path) -> dict[str, object]:
    path = folder / DESCRIPTION_FILE
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ModelConfigError(f"{path}: not a TOML file ({error})") from None


def read_folder(folder: Path, derived: Path) -> Model:
    """One user model folder as a model named after it, its derived files going to ``derived``;
    raises ``ModelConfigError``."""
    description = _description(folder)
    unknown = sorted(set(description) - {*_DARKNET_KEYS, *_VIEW_KEYS})
    if unknown:
        raise ModelConfigError(
            f"{folder / DESCRIPTION_FILE}: unknown key(s) {', '.join(unknown)}; it knows "
            f"{', '.join(sorted({*_DARKNET_KEYS, *_VIEW_KEYS}))}"
        )
    if folder.name in RESERVED or folder.name in ALIASES:
        raise ModelConfigError(f"{folder}: {folder.name!r} is a reserved name")
    kind = "view" if _VIEW_KEYS & set(description) else "darknet"
    return KINDS[kind](folder, description, derived)


_DARKNET_KEYS = frozenset({"input_size", "engine"})
_VIEW_KEYS = frozenset({"base", "labels"})
_DARKNET_SUFFIXES = (".cfg", ".weights", ".names")


def _darknet_folder(folder: Path, description: Mapping[str, object], derived: Path) -> DarknetModel:
    files: dict[str, Path] = {}
    for suffix in _DARKNET_SUFFIXES:
        found = sorted(folder.glob(f"*{suffix}"))
        if len(found) != 1:
            count = "no" if not found else f"{len(found)}"
            raise ModelConfigError(f"{folder}: {count} *{suffix} file(s); a model needs one")
        files[suffix] = found[0]
    paths = ModelPaths(files[".cfg"], files[".weights"], files[".names"], derived)
    try:
        checked = check_model(paths.cfg, paths.weights, paths.names)
    except DarknetModelError as error:
        raise ModelConfigError(f"{folder}: {error}") from None
    input_size = description.get("input_size", checked.input_size)
    if not isinstance(input_size, int) or input_size <= 0 or input_size % 32:
        raise ModelConfigError(
            f"{folder / DESCRIPTION_FILE}: input_size {input_size!r} is not a multiple of 32"
        )
    engine = description.get("engine")
    if engine is not None and not isinstance(engine, str):
        raise ModelConfigError(f"{folder / DESCRIPTION_FILE}: engine {engine!r} is not a name")
    return DarknetModel(
        folder.name,
        folder,
        paths=paths,
        input_size=input_size,
        engine=engine,
        labels=checked.labels,
        sha256=MappingProxyType({path.name: sha256_of(path) for path in files.values()}),
    )


def _view_folder(folder: Path, description: Mapping[str, object], derived: Path) -> View:
    del derived  # a view derives nothing
    where = folder / DESCRIPTION_FILE
    # Half a model, half a view: which one was meant is unknown, so neither is served.
    stray = [
        path.name for suffix in _DARKNET_SUFFIXES for path in sorted(folder.glob(f"*{suffix}"))
    ]
    stray += sorted(_DARKNET_KEYS & set(description))
    if stray:
        raise ModelConfigError(
            f"{where}: base or [labels] make a view, which has no model files, input_size or "
            f"engine; this folder has {', '.join(stray)}"
        )
    base = description.get("base")
    if base is not None and not isinstance(base, str):
        raise ModelConfigError(f"{where}: base {base!r} is not a model name")
    labels = description.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise ModelConfigError(f"{where}: a view needs [labels]: answered = [classes]")
    classes: list[tuple[str, str]] = []
    for answered, wanted in labels.items():
        wanted = [wanted] if isinstance(wanted, str) else wanted
        if not isinstance(wanted, list) or not all(isinstance(w, str) for w in wanted):
            raise ModelConfigError(f"{where}: labels.{answered} is not a list of class names")
        if not wanted:
            raise ModelConfigError(f"{where}: labels.{answered} names no class")
        classes += [(name, answered) for name in wanted]
    return View(folder.name, tuple(classes), base=base, strict=True)


# The kinds a model folder can describe: a new kind (an ONNX graph) registers here.
KINDS: dict[str, Callable[[Path, Mapping[str, object], Path], Model]] = {
    "darknet": _darknet_folder,
    "view": _view_folder,
}
