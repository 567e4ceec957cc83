"""The try-it page at ``/``: static HTML, CSS and JavaScript, no build step, no third-party code.

The page talks to the service only through the public API (``GET /api/models`` for its model
picker, ``POST /api/object_detection``), exactly as any other client does, so this module needs
neither OpenCV nor the inference pool. Its
Content-Security-Policy lets the browser itself enforce the promise that the page loads nothing
from another origin.
"""

from __future__ import annotations

from flask import Blueprint, Response

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        # The photo is shown from a blob: URL made of the user's own file.
        "img-src 'self' blob:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "object-src 'none'",
    )
)

page_blueprint = Blueprint("page", __name__, static_folder="static", static_url_path="/static")


@page_blueprint.get("/")
def index() -> Response:
    response = page_blueprint.send_static_file("index.html")
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response
