"""The web service: Flask routes, the wire protocol, the page, metrics and the gunicorn server.

It imports the inference package for detections but never OpenCV itself, and nothing of the
study, load or bench kits.
"""

from iweblens.service.app import create_app
from iweblens.service.server import serve

__all__ = ["create_app", "serve"]
