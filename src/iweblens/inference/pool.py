"""A small, fixed pool of inference threads between many request threads and the CPU.

Request threads are cheap and many (one per in-flight request); networks are expensive and must
not be shared between threads. So each inference thread owns one detector, and requests queue for
the next free one: 32 concurrent requests on a 0.5-CPU pod mean 32 waiting threads and one
network, not 32 networks thrashing over half a core. Images wait in the queue still encoded, so
memory does not grow with concurrency.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace

import numpy as np

from iweblens.config import Settings
from iweblens.detection import DetectionParams, Inference, ModelCard
from iweblens.inference.cpu import cpu_allotment, threads_for
from iweblens.inference.detector import DEFAULT_PARAMS, Detector
from iweblens.inference.engines import SCORE_FLOOR, set_compute_threads
from iweblens.inference.images import limit_decoded_pixels
from iweblens.models.store import ModelPaths, ModelStore, pinned_sha256

log = logging.getLogger(__name__)

# Called with (seconds waited in the queue, seconds of inference) for every finished job.
TimingObserver = Callable[[float, float], None]


@dataclass
class _Job:
    image: bytes
    future: Future[Inference]
    enqueued: float
    params: DetectionParams


class ModelUnavailableError(RuntimeError):
    """The model could not be loaded, or did not become ready in time."""


class InferencePool:
    """Run detections on ``workers`` threads, each with its own detector."""

    def __init__(
        self,
        make_detector: Callable[[], Detector],
        workers: int,
        observe: TimingObserver | None = None,
        *,
        model: ModelCard,
    ) -> None:
        self.model = model
        self._make_detector = make_detector
        self._workers = workers
        self._observe = observe
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._warm_count = 0
        # Set once every thread is warm, or once one failed: nobody waits longer than that.
        self._settled = threading.Event()
        self.failure: str | None = None

    def start(self) -> None:
        """Start the threads; each loads its network and warms it up in the background."""
        for index in range(self._workers):
            thread = threading.Thread(target=self._run, name=f"inference-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    @property
    def ready(self) -> bool:
        """True once every network is loaded and has run one warm-up forward pass."""
        return self._settled.is_set() and self.failure is None

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the pool is ready or has failed; True only when it is ready."""
        self._settled.wait(timeout)
        return self.ready

    def submit(self, image: bytes, params: DetectionParams = DEFAULT_PARAMS) -> Future[Inference]:
        """Queue an encoded image; the future resolves to what ``Detector.run`` gives, timed."""
        if self.failure:
            raise ModelUnavailableError(self.failure)
        future: Future[Inference] = Future()
        self._jobs.put(_Job(image, future, time.perf_counter(), params))
        return future

    def close(self) -> None:
        """Let queued jobs finish, then stop the threads."""
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()

    def _run(self) -> None:
        try:
            detector = self._make_detector()
            # The first forward pass allocates and tunes (~250 ms); pay it before going ready.
            detector.detect(np.full((detector.input_size, detector.input_size, 3), 128, np.uint8))
        except Exception as error:
            log.exception("inference thread could not load the model")
            self.failure = f"model failed to load: {error}"
            self._drain_with_failure()
            return
        self._mark_warm()
        while (job := self._jobs.get()) is not None:
            if not job.future.set_running_or_notify_cancel():
                continue
            started = time.perf_counter()
            try:
                result = detector.run(job.image, job.params)
            except Exception as error:
                job.future.set_exception(error)
                result = None
            waited, took = started - job.enqueued, time.perf_counter() - started
            if result is not None:
                job.future.set_result(replace(result, queue_wait_s=waited, inference_s=took))
            if self._observe is not None:
                self._observe(waited, took)

    def _mark_warm(self) -> None:
        with self._lock:
            self._warm_count += 1
            if self._warm_count == self._workers:
                self._settled.set()

    def _drain_with_failure(self) -> None:
        self._settled.set()
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                job.future.set_exception(ModelUnavailableError(self.failure))


def build_pool(settings: Settings, observe: TimingObserver | None = None) -> InferencePool:
    """Verify the model files and size a pool to this process's CPU allotment (not started)."""
    paths = ModelStore(settings.model_dir, progress=False).verified_paths()
    limit_decoded_pixels(settings.max_declared_pixels)
    allotment_threads = threads_for(cpu_allotment())
    workers = settings.inference_workers or allotment_threads
    # OpenCV's thread count is process-wide: split the allotment between the networks.
    set_compute_threads(max(1, allotment_threads // workers))

    def make_detector() -> Detector:
        return Detector.from_settings(settings, paths)

    return InferencePool(make_detector, workers, observe, model=model_card(settings, paths))


def model_card(settings: Settings, paths: ModelPaths) -> ModelCard:
    """What the detectors ``build_pool`` makes answer with (engine, weights, labels, floor)."""
    return ModelCard(
        engine=settings.engine,
        weights_sha256=pinned_sha256(paths.weights.name),
        input_size=settings.input_size,
        labels=tuple(paths.labels()),
        score_floor=SCORE_FLOOR,
    )
