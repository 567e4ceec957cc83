"""iWebLens: YOLOv3-tiny object detection over HTTP, built to be measured on a small CPU cluster."""

__version__ = "0.1.0"
