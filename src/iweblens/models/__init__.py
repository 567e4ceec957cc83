"""The model files: fetched, sha256-verified and cached; and their conversion to ONNX.

Knows no pixels (no OpenCV, no image code). ``iweblens.models.onnx_export`` needs the ``engines``
extra, so it is not imported here.
"""

from iweblens.models.store import ModelIntegrityError, ModelPaths, ModelStore, sha256_of

__all__ = ["ModelIntegrityError", "ModelPaths", "ModelStore", "sha256_of"]
