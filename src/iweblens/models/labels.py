"""Class names: darknet's spelling of COCO's categories and COCO's own.

darknet's ``coco.names`` spells six of COCO's 80 categories its own way; the COCO dataset itself,
DeepStack, CodeProject.AI and Home Assistant use the names on the right. Requests may use either.
"""

from __future__ import annotations

from types import MappingProxyType

COCO_SPELLING = MappingProxyType(
    {
        "motorbike": "motorcycle",
        "aeroplane": "airplane",
        "sofa": "couch",
        "pottedplant": "potted plant",
        "diningtable": "dining table",
        "tvmonitor": "tv",
    }
)


def coco_name(label: str) -> str:
    """COCO's own name for a darknet label (``aeroplane`` -> ``airplane``); others unchanged."""
    return COCO_SPELLING.get(label, label)
