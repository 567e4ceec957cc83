"""Prometheus metrics of one service process, kept in their own registry.

A registry per app (not the global one) lets tests build several apps in one process without
"duplicated timeseries" errors.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from iweblens.service.admission import Admission

# Inference takes ~0.1-0.3 s per image on a 0.5-CPU pod; queueing under 32 clients reaches ~10 s.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 4, 8, 16, 32, 64)


class ServiceMetrics:
    """Request counts and latencies, queue wait and inference time, in-flight requests, and what
    admission refused or dropped (labels are bounded: methods via ``access.method_label``)."""

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
        self.model_inference = Counter(
            "iweblens_model_inference_seconds",
            "Seconds of inference spent, by real model (a view counts as its model).",
            ["model"],
            registry=self.registry,
        )
        self.model_images = Counter(
            "iweblens_model_images",
            "Images detected, by real model (a view counts as its model).",
            ["model"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "iweblens_requests_in_flight",
            "Requests being handled right now.",
            registry=self.registry,
        )

        self.shed = Counter(
            "iweblens_shed",
            "Requests refused to protect the service (503 + Retry-After), by reason: memory, wait "
            "(expected queue wait over IWEBLENS_MAX_WAIT), shutdown.",
            ["reason"],
            registry=self.registry,
        )
        self.dropped = Counter(
            "iweblens_dropped_before_inference",
            "Queued jobs dropped without inference, by reason: disconnected (client gone), "
            "deadline (waited over IWEBLENS_MAX_WAIT), memory (bodies that arrived since took the "
            "room its decoding needs), shutdown (could not finish in the grace).",
            ["reason"],
            registry=self.registry,
        )
        self.slow_requests = Counter(
            "iweblens_slow_requests",
            "Requests dropped because they did not arrive in full within IWEBLENS_READ_TIMEOUT.",
            registry=self.registry,
        )
        for reason in ("memory", "wait", "shutdown"):
            self.shed.labels(reason)
        for reason in ("disconnected", "deadline", "memory", "shutdown"):
            self.dropped.labels(reason)

    def count_shed(self, reason: str) -> None:
        self.shed.labels(reason).inc()

    def count_dropped(self, reason: str) -> None:
        self.dropped.labels(reason).inc()

    def watch_admission(self, admission: Admission) -> None:
        """Export the admission figures (read at each scrape)."""
        figures = {
            "iweblens_queue_depth": (
                "Jobs admitted and not finished.",
                lambda: admission.queue_depth,
            ),
            "iweblens_queue_expected_wait_seconds": (
                "Expected wait of a job admitted now.",
                admission.expected_wait,
            ),
            "iweblens_queue_wait_limit_seconds": (
                "Longest expected wait admitted now: IWEBLENS_MAX_WAIT, or less while clients "
                "are seen leaving the queue sooner.",
                admission.wait_limit,
            ),
            "iweblens_memory_reserved_bytes": (
                "Bytes reserved by requests in flight.",
                lambda: admission.reserved_bytes,
            ),
            "iweblens_memory_budget_bytes": (
                "Bytes requests in flight may reserve.",
                lambda: admission.budget_bytes,
            ),
        }
        for name, (documentation, read) in figures.items():
            Gauge(name, documentation, registry=self.registry).set_function(read)

    def know_models(self, names: Iterable[str]) -> None:
        """Export every model's series from the start (the label's values: these names)."""
        for name in names:
            self.model_inference.labels(name)
            self.model_images.labels(name)

    def observe_inference(self, model: str, queue_wait: float, inference: float) -> None:
        self.queue_wait.observe(queue_wait)
        self.inference.observe(inference)
        self.model_inference.labels(model).inc(inference)
        self.model_images.labels(model).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
