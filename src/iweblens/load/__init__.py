"""The load kit: a closed-loop client wire-compatible with the reference client, and statistics.

Talks to the service over HTTP only.
"""

from iweblens.load.client import PROTOCOLS, LoadResult, list_images, run_load
from iweblens.load.stats import mean, percentile, std

__all__ = [
    "PROTOCOLS",
    "LoadResult",
    "list_images",
    "mean",
    "percentile",
    "run_load",
    "std",
]
