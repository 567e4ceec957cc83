"""The web service: the uvicorn server and its front, admission, Flask routes, protocol, metrics.

It imports the inference package for detections but never OpenCV itself, and nothing of the
study, load or bench kits.
"""

from iweblens.service.front import build_front
from iweblens.service.server import serve

__all__ = ["build_front", "serve"]
