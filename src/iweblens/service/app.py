"""HTTP routes: the Flask application factory and its blueprints. No OpenCV here.

The app holds the routes only. The front (``front``) is the service's one edge: it answers the
probes, stamps every answer's headers, writes the access line and counts the metrics; every
failure raised here is rendered by ``errors`` (an unexpected exception becomes a 500 in the error
shape, never a stack trace).
"""

from __future__ import annotations

import io
from concurrent.futures import CancelledError
from dataclasses import replace
from importlib import resources
from typing import IO

from flask import Blueprint, Flask, Request, Response, request
from werkzeug.utils import cached_property

from iweblens.detection import DetectionParams, ImageDecodeError, Inference
from iweblens.inference.cost import work_units
from iweblens.inference.images import ImageLimits
from iweblens.inference.pool import JobDropped, ModelUnavailableError
from iweblens.service.admission import Shed, Ticket
from iweblens.service.answers import answer
from iweblens.service.auth import auth_blueprint
from iweblens.service.context import BUFFERED_KEY, EXTENSION, TICKET_KEY, Service, service_of
from iweblens.service.deepstack import deepstack_blueprint
from iweblens.service.errors import ApiError, install
from iweblens.service.models import card_of, models_blueprint, served_model
from iweblens.service.options import parse_options, query_lists
from iweblens.service.page import page_blueprint
from iweblens.service.wire import StrictJSONProvider, check_image, image_error, parse_request

api = Blueprint("api", __name__)


def _ticket() -> Ticket:
    """The front's admission ticket for this request."""
    ticket: Ticket = request.environ["asgi.scope"][TICKET_KEY]
    return ticket


@api.post("/api/object_detection")
def object_detection() -> Response:
    detection_request = parse_request(request)
    options = parse_options(detection_request, query_lists(request.args))
    served = served_model(options.model)
    params = options.params(card_of(served), served)
    inference = run_detection(detection_request.image, params)
    return answer(detection_request, options, params, inference, served)


def run_detection(image: bytes, params: DetectionParams) -> Inference:
    """Check the image, admit it, wait for the model and detect: every detection endpoint's path.

    Raises ``ApiError``: 400, 413 or 415 for the image (413 also when decoding it needs more
    memory than the server has, or its inference alone would outlast ``max_wait`` or the
    shutdown grace), 503 while the model is unavailable; ``Shed`` (503) when the job
    is dropped before inference (client gone, deadline) or cancelled by a shutdown.
    """
    service = service_of()
    pool = service.pool
    card = pool.models[params.model] if params.model else pool.model
    limits = replace(ImageLimits.from_settings(service.settings), input_size=card.input_size)
    header = check_image(image, limits)
    if not pool.wait_ready(timeout=service.settings.model_wait_s):
        raise ApiError(503, "model_unavailable", pool.failure or "the model is still loading")
    ticket = _ticket()
    cost = header.decode_bytes
    if cost > service.admission.capacity_bytes:
        raise ApiError(
            413, "image_too_large", "decoding this image needs more memory than this server has"
        )
    ticket.admit_job(cost, work_units(header))
    width, height = header.decoded_size
    ticket.large_buffers += width * height * 3
    try:
        future = pool.submit(image, params, ticket, header)
        ticket.attach(future)
        return future.result()
    except CancelledError:
        raise ticket.refusal or Shed("shutdown", "the server is shutting down", 1) from None
    except JobDropped as dropped:
        raise Shed(dropped.reason, f"the request was dropped ({dropped.reason})", 1) from None
    except ImageDecodeError as error:
        raise image_error(error) from None
    except ModelUnavailableError as error:
        raise ApiError(503, "model_unavailable", str(error)) from None


@api.get("/openapi.json")
def openapi() -> Response:
    document = resources.files("iweblens.service").joinpath("openapi.json").read_text()
    return Response(document, content_type="application/json")


class BufferedRequest(Request):
    """Uploads stay in memory (bounded by the body limit and admission), never on disk.

    Werkzeug spools a multipart file part over 500 KB to a temporary file; uploads are never
    stored, and the container's ``/tmp`` is small.
    """

    @cached_property
    def stream(self) -> IO[bytes]:
        # The front has read the whole body within the limit and buffered it once: reading it
        # whole returns that buffer itself (BytesIO over bytes), where Werkzeug's size-limiting
        # wrapper would copy it in chunks.
        if BUFFERED_KEY in self.environ:
            buffered: IO[bytes] = self.environ["wsgi.input"]
            return buffered
        return super().stream

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        return io.BytesIO()


def create_app(service: Service) -> Flask:
    """The routes, serving with ``service``'s collaborators (``build_service`` builds them)."""
    app = Flask(__name__)
    app.request_class = BufferedRequest
    app.json = StrictJSONProvider(app)
    # The front has read the body within its limit; every part of a multipart body counts against
    # that limit, not a separate 500 KB one.
    app.config["MAX_FORM_MEMORY_SIZE"] = None
    app.extensions[EXTENSION] = service
    app.register_blueprint(api)
    app.register_blueprint(page_blueprint)
    app.register_blueprint(models_blueprint)
    app.register_blueprint(deepstack_blueprint(run_detection))
    app.register_blueprint(auth_blueprint(service.keys))
    install(app)
    return app
