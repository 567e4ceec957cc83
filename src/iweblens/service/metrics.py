"""Prometheus metrics of one service process, kept in their own registry.

A registry per app (not the global one) lets tests build several apps in one process without
"duplicated timeseries" errors.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Inference takes ~0.1-0.3 s per image on a 0.5-CPU pod; queueing under 32 clients reaches ~10 s.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 4, 8, 16, 32, 64)


class ServiceMetrics:
    """Request counts and latencies, queue wait and inference time, and in-flight requests."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "iweblens_requests",
            "HTTP requests answered, by method, route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "iweblens_request_latency_seconds",
            "Time from request start to response, by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "iweblens_queue_wait_seconds",
            "Time an image waited for a free inference thread.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inference = Histogram(
            "iweblens_inference_seconds",
            "Decode, letterbox, forward pass and postprocessing of one image.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "iweblens_requests_in_flight",
            "Requests being handled right now.",
            registry=self.registry,
        )

    def observe_inference(self, queue_wait: float, inference: float) -> None:
        self.queue_wait.observe(queue_wait)
        self.inference.observe(inference)

    def render(self) -> bytes:
        return generate_latest(self.registry)
