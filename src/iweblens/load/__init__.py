"""The load kit: a closed-loop client wire-compatible with the reference client, and statistics.

Talks to the service over HTTP only.
"""

from iweblens.load.client import PROTOCOLS, LoadResult, list_images, run_load
from iweblens.load.stats import Cell, by_threads, mean, percentile, std, summarize

__all__ = [
    "PROTOCOLS",
    "Cell",
    "LoadResult",
    "by_threads",
    "list_images",
    "mean",
    "percentile",
    "run_load",
    "std",
    "summarize",
]
