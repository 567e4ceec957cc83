"""Per-request options of ``POST /api/object_detection``: parsing, validation, and their effect.

An option is read from the body's fields (multipart form fields, members of the JSON object) or
from the query string, the one place a raw image body leaves for them; naming the same option in
both is refused. Every refusal is a 400 in the service's error shape, with code ``invalid_option``
or ``unknown_class``. With no option given, the answer is exactly today's.

=================  =========================================================================
``min_confidence``  0-1; keep scores strictly above it (default IWEBLENS_CONFIDENCE, 0.5). The
                    engines zero scores at or below ``ModelCard.score_floor`` (0.2): a lower
                    value is accepted and behaves as the floor; the detailed answer says so.
``nms``             0-1; IoU above which the weaker box of one class is dropped (default 0.45)
``classes``         COCO labels to keep: repeated fields/parameters, comma-separated text, or a
                    JSON array; darknet's spelling (``aeroplane``) or COCO's (``airplane``)
``max_detections``  a whole number >= 1: the most confident N objects
``details``         true/false: add class ids, image size, timings and model identity
``annotate``        true/false: answer with a JPEG of the image with the boxes drawn
``model``           a model's name (``GET /api/models``); default: the server's default model
=================  =========================================================================

Booleans are ``true/false``, ``1/0``, ``yes/no`` or ``on/off`` (JSON booleans in a JSON body).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from werkzeug.datastructures import MultiDict

from iweblens.detection import DetectionParams, ModelCard
from iweblens.models.labels import COCO_SPELLING, coco_name
from iweblens.models.repository import Served
from iweblens.service.errors import ApiError
from iweblens.service.wire import DetectionRequest, Flavour

OPTION_NAMES = (
    "min_confidence",
    "nms",
    "classes",
    "max_detections",
    "details",
    "annotate",
    "model",
)
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class DetectionOptions:
    """What one request asked for; None or False means the service's default behaviour."""

    min_confidence: float | None = None
    nms: float | None = None
    classes: tuple[str, ...] | None = None  # as the client spelled them
    max_detections: int | None = None
    details: bool = False
    annotate: bool = False
    model: str | None = None

    def params(self, model: ModelCard, served: Served | None = None) -> DetectionParams:
        """The inference layer's parameters for ``model`` (the real model that runs) and, when
        the request named one, ``served`` (the named model or view); ``ApiError`` 400 names
        unknown classes."""
        relabel = None if served is None else served.relabel
        classes = None
        if self.classes is not None:
            labels = model.labels if served is None else served.labels
            classes = resolve_classes(self.classes, labels)
            if relabel is not None:
                classes = frozenset(label for label, shown in relabel.items() if shown in classes)
        return DetectionParams(
            confidence=self.min_confidence,
            nms=self.nms,
            classes=classes,
            max_detections=self.max_detections,
            annotate=self.annotate,
            model=None if served is None else served.model.name,
            relabel=relabel,
        )


def resolve_classes(names: Iterable[str], labels: Sequence[str]) -> frozenset[str]:
    """The model's ``labels`` for ``names`` (either spelling, any case), or ``ApiError`` 400."""
    known = {label.lower(): label for label in labels}
    known.update((coco_name(label).lower(), label) for label in labels)
    # A view answers COCO's spelling; darknet's spelling of the same class names it too.
    known.update((darknet, coco) for darknet, coco in COCO_SPELLING.items() if coco in labels)
    resolved, unknown = set(), []
    for name in names:
        label = known.get(name.strip().lower())
        if label is None:
            unknown.append(name)
        else:
            resolved.add(label)
    if unknown:
        listed = ", ".join(repr(name) for name in unknown)
        raise ApiError(
            400,
            "unknown_class",
            f"unknown class {listed}; the model knows {', '.join(labels)} "
            f"(COCO's spellings {', '.join(sorted(COCO_SPELLING.values()))} are accepted too)",
        )
    return frozenset(resolved)


def parse_options(request: DetectionRequest, query: Mapping[str, list[str]]) -> DetectionOptions:
    """The options of a parsed request and its query string (name -> every value given)."""
    if request.flavour is Flavour.JSON:
        body = {name: [value] for name, value in request.fields.items() if name in OPTION_NAMES}
    else:
        body = {name: values for name, values in request.fields.items() if name in OPTION_NAMES}
    given = {name: values for name, values in query.items() if name in OPTION_NAMES and values}
    if twice := sorted(body.keys() & given.keys()):
        message = f"{', '.join(twice)} given both in the body and in the query string"
        raise ApiError(400, "invalid_option", message)
    given.update(body)
    options = DetectionOptions(
        min_confidence=_fraction(given, "min_confidence"),
        nms=_fraction(given, "nms"),
        classes=_classes(given),
        max_detections=_count(given),
        details=_flag(given, "details"),
        annotate=_flag(given, "annotate"),
        model=_name(given),
    )
    if options.details and options.annotate:
        raise ApiError(
            400, "invalid_option", "details and annotate exclude each other: an image has no room"
        )
    return options


def query_lists(args: MultiDict[str, str]) -> dict[str, list[str]]:
    """Query parameters (``request.args``) as name -> every value given."""
    return {name: args.getlist(name) for name in args}


def _one(given: Mapping[str, list[Any]], name: str) -> Any:
    values = given.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise ApiError(400, "invalid_option", f"{name} is given {len(values)} times; give it once")
    return values[0]


def parse_number(value: Any) -> float | None:
    """A finite number from a JSON number or a text field; None when it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # an integer past the double range
            return None
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _fraction(given: Mapping[str, list[Any]], name: str) -> float | None:
    value = _one(given, name)
    if value is None:
        return None
    number = parse_number(value)
    if number is None or not 0.0 <= number <= 1.0:
        raise ApiError(400, "invalid_option", f"{name} must be a number from 0 to 1, not {value!r}")
    return number


def _count(given: Mapping[str, list[Any]]) -> int | None:
    value = _one(given, "max_detections")
    if value is None:
        return None
    count = value if isinstance(value, int) and not isinstance(value, bool) else None
    # isdecimal, not isdigit: int() refuses superscripts and circled digits.
    if isinstance(value, str) and value.strip().isdecimal():
        try:
            count = int(value.strip())
        except ValueError:  # past int()'s digit limit
            count = None
    if count is None or count < 1:
        message = f"max_detections must be a whole number of at least 1, not {value!r}"
        raise ApiError(400, "invalid_option", message)
    return count


def _flag(given: Mapping[str, list[Any]], name: str) -> bool:
    value = _one(given, name)
    if value is None or isinstance(value, bool):
        return bool(value)
    word = str(value).strip().lower() if isinstance(value, str | int) else None
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ApiError(400, "invalid_option", f"{name} must be true or false, not {value!r}")


def _name(given: Mapping[str, list[Any]]) -> str | None:
    value = _one(given, "model")
    if value is None or isinstance(value, str):
        return value
    raise ApiError(400, "invalid_option", f"model must be a model's name (text), not {value!r}")


def _classes(given: Mapping[str, list[Any]]) -> tuple[str, ...] | None:
    values = given.get("classes")
    if not values:
        return None
    names: list[str] = []
    for value in values:
        items = value if isinstance(value, list) else [value]
        for item in items:
            if not isinstance(item, str):
                message = f"classes must be labels (text), not {item!r}"
                raise ApiError(400, "invalid_option", message)
            names += [name.strip() for name in item.split(",") if name.strip()]
    if not names:
        raise ApiError(400, "invalid_option", "classes names no label; leave it out to keep all")
    return tuple(names)
