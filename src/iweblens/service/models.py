"""Which model answers a request, and the model listing ``GET /api/models``.

A request names a model by the native ``model`` option or the DeepStack path
``/v1/vision/custom/<model>``; none means the server's default model. The repository
(``iweblens.models.repository``) resolves the name (aliases included); here its refusals become
answers: on a DeepStack route a 404 in DeepStack's shape, as the native option a 400, both
listing the names that exist.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from iweblens.detection import ModelCard
from iweblens.models.repository import (
    ALIASES,
    DarknetModel,
    ModelNotLoadedError,
    Served,
    UnknownModelError,
    View,
)
from iweblens.service.context import service_of
from iweblens.service.errors import ApiError

models_blueprint = Blueprint("models", __name__)


def served_model(name: str | None, *, deepstack: bool = False) -> Served:
    """What answers a request naming ``name`` (None: the default model) on this server.

    Raises ``ApiError``: on a DeepStack route (``deepstack``) 404 ``model_not_found``; as the
    native option 400 ``unknown_model`` (an empty name too) or ``model_not_loaded``.
    """
    models = service_of().models
    try:
        if name == "" and not deepstack:
            # The empty alias is DeepStack's bare /v1/vision/custom/; an empty option names none.
            raise UnknownModelError(name, models.names())
        return models.resolve(name)
    except UnknownModelError as error:
        if deepstack:
            raise ApiError(404, "model_not_found", str(error)) from None
        raise ApiError(400, "unknown_model", str(error)) from None
    except ModelNotLoadedError as error:
        if deepstack:
            raise ApiError(404, "model_not_found", str(error)) from None
        raise ApiError(400, "model_not_loaded", str(error)) from None


def card_of(served: Served) -> ModelCard:
    """The card of the real model that runs for ``served``."""
    return service_of().pool.models[served.model.name]


@models_blueprint.get("/api/models")
def listing() -> Response:
    """Every model this server knows: name, kind, labels, input size, engine, files, loaded."""
    service = service_of()
    repository = service.models
    settings = service.settings
    served = repository.served()
    shown: list[dict[str, Any]] = []
    for name, model in repository.models.items():
        entry: dict[str, Any] = {"name": name, "kind": model.kind, "loaded": name in served}
        if isinstance(model, View):
            base = repository.base_of(model)
            entry["base"] = base
            entry["labels"] = list(served[name].labels if name in served else model.labels)
            if model.note:
                entry["note"] = model.note
        elif isinstance(model, DarknetModel):
            card = service.pool.models.get(name)
            entry["labels"] = list(card.labels if card else model.labels or ())
            entry["input_size"] = (
                card.input_size if card else model.input_size or settings.input_size
            )
            entry["engine"] = card.engine if card else model.engine or settings.engine
            entry["files"] = [{"name": f, "sha256": h} for f, h in model.sha256.items()]
            entry["default"] = name == repository.default
        shown.append(entry)
    aliases = {alias or "(empty)": target for alias, target in ALIASES.items()}
    return jsonify({"models": shown, "default": repository.default, "aliases": aliases})
