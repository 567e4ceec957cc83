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
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from iweblens.config import Settings
from iweblens.detection import DetectionParams, Inference, ModelCard
from iweblens.inference.detector import DEFAULT_PARAMS, Detector
from iweblens.inference.engines import SCORE_FLOOR, set_compute_threads
from iweblens.inference.images import ImageHeader
from iweblens.inference.letterbox import NATIVE, NUMPY, native_available
from iweblens.inference.pixels import limit_decoded_pixels
from iweblens.inference.resources import cpu_allotment, threads_for
from iweblens.inference.sizing import NetworkLoad, plan_workers
from iweblens.models.repository import DEFAULT_MODEL, DarknetModel, ModelRepository
from iweblens.models.store import ModelPaths, pinned_sha256

log = logging.getLogger(__name__)

# Called with (the real model's name, seconds waited in the queue, seconds of inference) for
# every finished job.
TimingObserver = Callable[[str, float, float], None]


class JobGate(Protocol):
    """The request's say on its queued job (the service's admission ticket implements it)."""

    def begin(self) -> str | None:
        """Just before inference: a reason to drop the job (client gone, deadline), or None."""

    def finished(self, seconds: float) -> None:
        """After inference, with its duration in seconds."""


class JobDropped(RuntimeError):
    """The job was dropped before inference; ``reason`` is the gate's."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"dropped before inference: {reason}")
        self.reason = reason


@dataclass
class _Job:
    image: bytes
    future: Future[Inference]
    enqueued: float
    params: DetectionParams
    gate: JobGate | None
    header: ImageHeader | None


class ModelUnavailableError(RuntimeError):
    """The model could not be loaded, or did not become ready in time."""


class InferencePool:
    """Run detections on ``workers`` threads, each with its own detector."""

    def __init__(
        self,
        make_detector: Callable[[], Detector | Mapping[str, Detector]],
        workers: int,
        observe: TimingObserver | None = None,
        *,
        model: ModelCard | Sequence[ModelCard],
    ) -> None:
        """``make_detector`` builds one thread's detectors: one per model of ``model`` (the
        cards, the first the default), by model name, or the one detector of a single model."""
        cards = [model] if isinstance(model, ModelCard) else list(model)
        self.models: dict[str, ModelCard] = {card.name: card for card in cards}
        self.model = cards[0]
        # Estimated bytes of all the threads' networks, held once they are loaded.
        self.network_bytes = 0
        self._make_detector = make_detector
        self._workers = workers
        self._observe = observe
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._warm_count = 0
        # Set once every thread is warm, or once one failed: nobody waits longer than that.
        self._settled = threading.Event()
        self._on_ready: list[Callable[[], None]] = []
        self.failure: str | None = None

    @property
    def workers(self) -> int:
        """Inference threads, one network each."""
        return self._workers

    def when_ready(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once every network is warm (now, if they already are)."""
        with self._lock:
            if not self.ready:
                self._on_ready.append(callback)
                return
        callback()

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

    def submit(
        self,
        image: bytes,
        params: DetectionParams = DEFAULT_PARAMS,
        gate: JobGate | None = None,
        header: ImageHeader | None = None,
    ) -> Future[Inference]:
        """Queue an encoded image; the future resolves to what ``Detector.run`` gives, timed.

        With a ``gate``, the job is asked right before inference whether it should still run;
        if not, the future fails with ``JobDropped`` and no inference is spent on it. ``header``,
        the image's header when already read, travels with the job to the decoder.
        """
        if self.failure:
            raise ModelUnavailableError(self.failure)
        future: Future[Inference] = Future()
        self._jobs.put(_Job(image, future, time.perf_counter(), params, gate, header))
        return future

    def close(self) -> None:
        """Let queued jobs finish, then stop the threads."""
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()

    def _detectors(self) -> dict[str, Detector]:
        made = self._make_detector()
        detectors = {self.model.name: made} if isinstance(made, Detector) else dict(made)
        for detector in detectors.values():
            # The first forward pass allocates and tunes; pay it before going ready.
            detector.detect(np.full((detector.input_size, detector.input_size, 3), 128, np.uint8))
        return detectors

    def _run(self) -> None:
        try:
            detectors = self._detectors()
        except Exception as error:
            log.exception("inference thread could not load the model")
            self.failure = f"model failed to load: {error}"
            self._drain_with_failure()
            return
        self._mark_warm()
        while (job := self._jobs.get()) is not None:
            if not job.future.set_running_or_notify_cancel():
                continue
            if job.gate is not None and (reason := job.gate.begin()) is not None:
                job.future.set_exception(JobDropped(reason))
                continue
            started = time.perf_counter()
            outcome: Inference | Exception
            try:
                detector = detectors[job.params.model or self.model.name]
                outcome = detector.run(job.image, job.params, job.header)
            except Exception as error:
                outcome = error
            waited, took = started - job.enqueued, time.perf_counter() - started
            if job.gate is not None:
                # Before the answer: the rate and the freed memory count for the next admission.
                job.gate.finished(took)
            if isinstance(outcome, Exception):
                job.future.set_exception(outcome)
            else:
                job.future.set_result(replace(outcome, queue_wait_s=waited, inference_s=took))
            if self._observe is not None:
                self._observe(job.params.model or self.model.name, waited, took)

    def _mark_warm(self) -> None:
        with self._lock:
            self._warm_count += 1
            if self._warm_count < self._workers:
                return
            self._settled.set()
            callbacks, self._on_ready = self._on_ready, []
        for callback in callbacks:
            callback()

    def _drain_with_failure(self) -> None:
        self._settled.set()
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                job.future.set_exception(ModelUnavailableError(self.failure))


def build_pool(
    settings: Settings,
    observe: TimingObserver | None = None,
    repository: ModelRepository | None = None,
) -> InferencePool:
    """Verify the loaded models' files and size a pool to this process's CPU and memory (not
    started). Every inference thread holds one network of each loaded model.

    ``repository``: the models (default: ``ModelRepository.from_settings``). Raises
    ``ModelIntegrityError`` or ``ModelConfigError`` for a model that cannot be served, and
    ``sizing.InsufficientMemoryError`` when the memory limit cannot hold one network of each.
    """
    repository = repository or ModelRepository.from_settings(settings)
    models = [repository.real(name) for name in repository.loaded]
    paths = {model.name: model.verified_paths() for model in models}
    repository.served()  # the views over them, checked before anything loads
    limit_decoded_pixels(settings.max_declared_pixels)
    allotment_threads = threads_for(cpu_allotment())
    loads = [
        NetworkLoad(
            model.name,
            model.engine or settings.engine,
            model.input_size or settings.input_size,
            weights_bytes=paths[model.name].weights.stat().st_size,
        )
        for model in models
    ]
    plan = plan_workers(settings, settings.inference_workers or allotment_threads, loads)
    workers = plan.workers
    # OpenCV's thread count is process-wide: split the allotment between the networks.
    set_compute_threads(max(1, allotment_threads // workers))
    # Said in the log because a build without a C compiler silently falls back (~16x the CPU).
    log.info("letterbox: %s", NATIVE if native_available() else NUMPY)

    def make_detectors() -> dict[str, Detector]:
        return {
            model.name: Detector.from_settings(
                settings, paths[model.name], model.engine, input_size=model.input_size
            )
            for model in models
        }

    cards = [model_card(settings, paths[model.name], model) for model in models]
    pool = InferencePool(make_detectors, workers, observe, model=cards)
    pool.network_bytes = plan.per_network * workers
    return pool


def model_card(
    settings: Settings, paths: ModelPaths, model: DarknetModel | None = None
) -> ModelCard:
    """What a detector of ``model`` (default: YOLOv3-tiny with the server's defaults) answers
    with: its name, engine, weights, input size, labels and score floor."""
    return ModelCard(
        name=DEFAULT_MODEL if model is None else model.name,
        engine=(model and model.engine) or settings.engine,
        weights_sha256=sha256_of_weights(paths, model),
        input_size=(model and model.input_size) or settings.input_size,
        labels=tuple(paths.labels()),
        score_floor=SCORE_FLOOR,
    )


def sha256_of_weights(paths: ModelPaths, model: DarknetModel | None) -> str:
    """The weights' sha256: pinned for a bundled model, hashed at start-up for a user's."""
    if model is not None and paths.weights.name in model.sha256:
        return model.sha256[paths.weights.name]
    return pinned_sha256(paths.weights.name)
