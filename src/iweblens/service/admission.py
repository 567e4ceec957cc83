"""Admission control: take on only the work this process can hold in memory and finish in time.

Two budgets, both checked before a request costs anything it cannot afford:

* **Memory.** Every request reserves bytes from a budget (the memory the process may use, less what
  the loaded networks take; see ``sizing``) for as long as it lives: its body as its bytes arrive
  (never for a length it only declares). The expected cost of
  decoding its image (from the image header) is checked when the job is queued and reserved only
  while the job runs (the inference threads decode one image each, so queued photographs cost
  their bodies, not their decoding). A reservation that does not fit is a fast ``503`` with
  ``Retry-After``, never an OOM kill.
* **Time.** Admitted images wait in one queue for the inference threads. The expected wait of a
  new job is the work queued ahead of it (in work units: a 12 MP photograph costs several 640-pixel
  ones) times the measured seconds per unit (the slower of a moving average of the jobs' own times
  and the recent throughput, which also counts the HTTP work sharing the CPU; each job's time
  counts only within ``RATE_CLAMP`` of what was predicted for it, so one slow job cannot poison
  the estimate). A job whose own predicted inference exceeds ``max_wait`` or the shutdown grace
  is refused ``413 image_too_large`` (no queue position would let it finish in time, and a
  thread inside a decoder cannot be abandoned); a job whose expected wait exceeds ``max_wait``
  is shed (503); a job still queued past its deadline, or whose client has gone, is dropped
  before inference.
* **Client patience.** When many of the recent clients have been leaving while queued, admission
  learns how long they wait (a margin under a low quantile of the recent departures, never under
  a few service times) and takes and starts a job only if its answer (wait + its own inference)
  is expected within that patience. Serving a queue as deep as the clients' patience would start
  every job just before its client leaves and finish it for nobody (with 5 s clients at 3x
  overload, most of the inferences were read by no one); refusing the excess at once keeps the
  queue short enough to answer what it takes. A few impatient clients among patient ones are
  not enough to learn from, and clients that leave before any queue could answer them (a 0.1 s
  timeout) cannot lower the patience under the floor: they are served what fits, and nothing is
  refused for their patience alone. Without departures (the study's clients never give up) the
  limit is ``max_wait``.

After SIGTERM (``drain``) the queue is answered, not abandoned: jobs that can finish within the
grace period are served, the others get a prompt ``503`` (with ``Connection: close``) so a balancer
can retry them on another replica. The estimate is pessimistic (``DRAIN_PESSIMISM``) and is made
again as the drain goes on (``recut``), so a node that slows down answers the excess early, not
when the grace runs out.

All methods are thread-safe: the event loop, the request threads and the inference threads share
one ``Admission``.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from iweblens.service.errors import ApiError

# A first guess of seconds of inference per work unit (one 640x480 photograph on half a core),
# replaced by measurements from the first finished jobs.
PRIOR_SECONDS_PER_UNIT = 0.2
# Weight of each new measurement in the moving average of the service rate.
RATE_SMOOTHING = 0.2
# A job's time counts for at most RATE_CLAMP times (and at least 1/RATE_CLAMP of) what the
# estimate predicted for it: one hostile job that keeps a thread busy for minutes moves the
# estimate a step, not to minutes, while a lasting slowdown is still followed within a few jobs.
RATE_CLAMP = 4.0
# Retry-After is at least a second and at most a minute: past that, a client should look elsewhere.
RETRY_AFTER_BOUNDS = (1, 60)
# Client patience is learned from the clients that left while queued in the last
# PATIENCE_WINDOW_S seconds: the PATIENCE_QUANTILE of how long they waited. It is learned only
# from at least PATIENCE_MIN_DEPARTURES of them that are at least PATIENCE_MIN_SHARE of the clients
# seen to wait that long (those who left, and those answered later than that after queueing): a
# few impatient connections among clients that wait longer teach nothing. What admission uses is
# PATIENCE_SHARE of it (a margin for the estimate's error), and never less than
# PATIENCE_FLOOR_SERVICES service times of one photograph: clients that leave before any queue
# could answer them say nothing about how long the queue may be.
PATIENCE_WINDOW_S = 30.0
PATIENCE_MIN_DEPARTURES = 3
PATIENCE_MIN_SHARE = 0.25
PATIENCE_QUANTILE = 0.1
PATIENCE_SHARE = 0.6
PATIENCE_FLOOR_SERVICES = 4.0
# Throughput is measured over the gaps between the last THROUGHPUT_JOBS jobs finished back to back.
THROUGHPUT_JOBS = 16
# During a drain, jobs are assumed to run this much slower than measured (a node busy with other
# pods, or the drain itself): better a 503 that could have been a 200 than a cut at the deadline.
DRAIN_PESSIMISM = 1.5
# What a shed request is told: that it was refused for load, never how much budget is left (the
# figures would tell an attacker how to fill it; the metrics keep the reason).
QUEUE_FULL = "the server is overloaded (its queue is full); retry later"
MEMORY_FULL = "the server is overloaded (its memory for requests is taken); retry later"
TOO_SLOW = "this image would take longer to process than this server allows a request"


class Shed(ApiError):
    """A request refused to protect the service; the client may retry after ``retry_after`` s.

    ``reason`` labels the metric (``memory``, ``wait``, ``shutdown``); ``close`` asks that the
    connection be closed after the answer (the body may be unread, or the server is stopping).
    """

    def __init__(self, reason: str, message: str, retry_after: float, close: bool = False) -> None:
        super().__init__(503, "overloaded" if reason != "shutdown" else "shutting_down", message)
        self.reason = reason
        low, high = RETRY_AFTER_BOUNDS
        self.retry_after = int(min(high, max(low, math.ceil(retry_after))))
        self.close = close

    def headers(self) -> dict[str, str]:
        """The answer's extra headers: ``Retry-After``, and ``Connection: close`` if asked."""
        extra = {"Retry-After": str(self.retry_after)}
        if self.close:
            extra["Connection"] = "close"
        return extra


@dataclass
class AdmissionEvents:
    """Where admission reports what it refused and dropped (the Prometheus counters)."""

    shed: Callable[[str], None] = lambda _reason: None
    dropped: Callable[[str], None] = lambda _reason: None


class Ticket:
    """One request's claim on the service: its memory reservation and, once admitted, its job.

    Created by the front when the headers are complete, closed when the answer has been sent.
    """

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self.reserved = 0  # bytes held by this request (body, then decoding)
        self.decode_bytes = 0  # expected peak of decoding this request's image
        self.decode_reserved = 0  # the part of ``reserved`` held while the job runs
        self.large_buffers = 0  # bytes of its body and decoded pixels (what the allocator keeps)
        self.units = 0.0  # work units of the admitted job; 0 until admitted
        self.deadline = math.inf  # monotonic time after which the job is not run
        self.admitted = 0.0  # monotonic time the job was queued
        self.disconnected = False
        self.refusal: Shed | None = None  # why a queued job was cancelled (shutdown)
        self.future: Future[Any] | None = None
        self.closed = False

    def reserve(self, nbytes: int) -> None:
        """Add ``nbytes`` to this request's reservation, or raise ``Shed`` (body not yet read)."""
        self._admission.reserve(self, nbytes)

    def admit_job(self, decode_bytes: int, units: float) -> None:
        """Take a place in the queue (decoding must fit the memory now), or raise ``Shed`` (503);
        ``ApiError`` 413 if the job's own inference alone would outlast ``max_wait`` or the grace.
        """
        self._admission.admit_job(self, decode_bytes, units)

    def depart(self) -> None:
        """The client has gone: its job, if still queued, will not run."""
        self.disconnected = True
        self._admission.departed(self)

    def attach(self, future: Future[Any]) -> None:
        """Remember the queued job's future, so a shutdown can answer it before it runs."""
        self.future = future
        if self.refusal is not None:
            future.cancel()

    def begin(self) -> str | None:
        """Called by an inference thread just before this job runs: a reason to drop it, or None."""
        return self._admission.begin(self)

    def finished(self, seconds: float) -> None:
        """Called by the inference thread after the job: measure the rate, release its memory."""
        self._admission.finished(self, seconds)

    def close(self) -> None:
        """Release everything this request holds (idempotent)."""
        self._admission.close(self)


class Admission:
    """The shared budgets of one service process (see the module docstring)."""

    def __init__(
        self,
        budget_bytes: int,
        max_wait: float,
        workers: int,
        events: AdmissionEvents | None = None,
        clock: Callable[[], float] = time.monotonic,
        grace: float = math.inf,
    ) -> None:
        """``budget_bytes`` of memory for requests; ``max_wait`` seconds of expected queue wait
        (also the longest a job's own inference may be predicted to take); ``workers``
        inference threads; ``grace`` seconds a job may still run after SIGTERM (``inf``: no
        bound); ``clock`` a monotonic clock in seconds."""
        self.budget_bytes = budget_bytes
        # The budget as set at start (or once the networks are loaded): what a request can ever
        # have. Re-measured budgets may be lower for a while (memory the allocator keeps).
        self.capacity_bytes = budget_bytes
        self.max_wait = max_wait
        self.grace = grace
        self.workers = max(1, workers)
        self.events = events or AdmissionEvents()
        self._clock = clock
        self._lock = threading.Lock()
        self.reserved_bytes = 0
        self.seconds_per_unit = PRIOR_SECONDS_PER_UNIT
        self._queued: dict[Ticket, None] = {}  # admitted, not finished; insertion = queue order
        self._running: set[Ticket] = set()
        self.drain_deadline: float | None = None
        self._departures: deque[tuple[float, float]] = deque()  # (when, seconds it had waited)
        self._answers: deque[tuple[float, float]] = deque()  # (when, seconds since queued)
        # Jobs finished back to back: (seconds since the previous finish, clamped; its units).
        self._gaps: deque[tuple[float, float]] = deque(maxlen=THROUGHPUT_JOBS - 1)
        self._last_finish: float | None = None

    # -- figures (read by /metrics and by the front) ------------------------------------------

    def set_budget(self, budget_bytes: int) -> None:
        """Replace the memory budget (measured once the networks are loaded)."""
        with self._lock:
            self.budget_bytes = self.capacity_bytes = budget_bytes

    def remeasure(self, measure: Callable[[], int]) -> None:
        """Set the budget to ``measure()`` if nothing is reserved right now.

        With no request in flight, what the process holds is its baseline; measured again at such
        moments, memory the allocator kept after earlier requests counts against the budget
        instead of being promised twice.
        """
        if self.reserved_bytes == 0:
            budget = measure()
            with self._lock:
                if self.reserved_bytes == 0:
                    self.budget_bytes = budget

    @property
    def queue_depth(self) -> int:
        """Jobs admitted and not finished (waiting or running)."""
        return len(self._queued)

    def expected_wait(self) -> float:
        """Seconds a job admitted now would wait before its inference starts."""
        with self._lock:
            return self._wait_locked()

    def _wait_locked(self) -> float:
        units = sum(ticket.units for ticket in self._queued)
        return units * self._unit_seconds_locked() / self.workers

    def _unit_seconds_locked(self) -> float:
        """Seconds one inference thread needs per unit: its own time, or throughput if slower."""
        own = self.seconds_per_unit
        if len(self._gaps) < THROUGHPUT_JOBS - 1:
            return own
        span = sum(gap for gap, _ in self._gaps)
        units = sum(units for _, units in self._gaps)
        return max(own, span * self.workers / units)

    def wait_limit(self) -> float:
        """The longest expected wait admitted now for a photograph (one work unit), in seconds:
        ``max_wait``, or less when learned patience says its answer would come too late."""
        with self._lock:
            return self._limit_locked()

    def _limit_locked(self) -> float:
        patience = self._patience_locked()
        if patience is None:
            return self.max_wait
        return min(self.max_wait, patience - self._unit_seconds_locked())

    def _patience_locked(self) -> float | None:
        """Seconds from queueing to answer that recent clients wait for, or None (not learned).

        See ``PATIENCE_*``: only when enough of the recent clients left while queued, never
        less than a few service times.
        """
        horizon = self._clock() - PATIENCE_WINDOW_S
        while self._departures and self._departures[0][0] < horizon:
            self._departures.popleft()
        while self._answers and self._answers[0][0] < horizon:
            self._answers.popleft()
        left = len(self._departures)
        if left < PATIENCE_MIN_DEPARTURES:
            return None
        waits = sorted(waited for _, waited in self._departures)
        observed = waits[int(PATIENCE_QUANTILE * (len(waits) - 1))]
        outwaited = sum(1 for _, took in self._answers if took > observed)
        if left < PATIENCE_MIN_SHARE * (left + outwaited):
            return None
        learned = observed * PATIENCE_SHARE
        return max(learned, PATIENCE_FLOOR_SERVICES * self._unit_seconds_locked())

    def departed(self, ticket: Ticket) -> None:
        """Learn from a client that left while its job was queued (see the module docstring)."""
        with self._lock:
            if ticket in self._queued and ticket not in self._running:
                now = self._clock()
                self._departures.append((now, now - ticket.admitted))

    @property
    def draining(self) -> bool:
        return self.drain_deadline is not None

    # -- the request's path ------------------------------------------------------------------

    def ticket(self) -> Ticket:
        return Ticket(self)

    def check_open(self) -> None:
        """At the headers: refuse at once when the queue alone is already too long, or stopping."""
        with self._lock:
            if self.drain_deadline is not None and self._clock() >= self.drain_deadline:
                raise self._shed("shutdown", "the server is shutting down", 1, close=True)
            wait, limit = self._wait_locked(), self._limit_locked()
            if wait > limit:
                raise self._shed("wait", QUEUE_FULL, wait - limit, close=True)

    def reserve(self, ticket: Ticket, nbytes: int) -> None:
        with self._lock:
            if self.reserved_bytes + nbytes > self.budget_bytes:
                # Freed as the queue ahead finishes: the wait is the best guess of when.
                retry = max(self._wait_locked(), self.seconds_per_unit)
                raise self._shed("memory", MEMORY_FULL, retry, close=True)
            self.reserved_bytes += nbytes
            ticket.reserved += nbytes

    def admit_job(self, ticket: Ticket, decode_bytes: int, units: float) -> None:
        with self._lock:
            now = self._clock()
            wait = self._wait_locked()
            own = units * self._unit_seconds_locked()  # on one inference thread
            if own > min(self.max_wait, self.grace):
                # Not even an idle server would run it within its deadline or a shutdown's
                # grace, and a thread inside a decoder cannot be abandoned: refused up front.
                raise ApiError(413, "image_too_large", TOO_SLOW)
            if self.drain_deadline is not None:
                if now + (wait + own / self.workers) * DRAIN_PESSIMISM > self.drain_deadline:
                    raise self._shed("shutdown", "the server is shutting down", 1, close=True)
            elif wait > self.max_wait:
                raise self._shed("wait", QUEUE_FULL, wait - self.max_wait)
            elif (patience := self._patience_locked()) is not None and wait + own > patience:
                raise self._shed("wait", QUEUE_FULL, wait + own - patience)
            if self.reserved_bytes + decode_bytes > self.budget_bytes:
                raise self._shed("memory", MEMORY_FULL, max(wait, self.seconds_per_unit))
            ticket.decode_bytes = decode_bytes
            ticket.units = units
            ticket.deadline = now + self.max_wait
            ticket.admitted = now
            self._queued[ticket] = None

    def begin(self, ticket: Ticket) -> str | None:
        with self._lock:
            reason = None
            now = self._clock()
            patience = self._patience_locked()
            own = ticket.units * self._unit_seconds_locked()
            if ticket.disconnected:
                reason = "disconnected"
            elif now > ticket.deadline:
                reason = "deadline"
            elif patience is not None and now - ticket.admitted + own > patience:
                # Clients like this one have been leaving by now: its answer would be too late.
                reason = "deadline"
            elif self.reserved_bytes + ticket.decode_bytes > self.budget_bytes:
                # Bodies that arrived since it was queued took the room its decoding needs.
                reason = "memory"
            if reason is None:
                self.reserved_bytes += ticket.decode_bytes
                ticket.reserved += ticket.decode_bytes
                ticket.decode_reserved = ticket.decode_bytes
                self._running.add(ticket)
                return None
            self._forget_job(ticket)
        self.events.dropped(reason)
        return reason

    def finished(self, ticket: Ticket, seconds: float) -> None:
        with self._lock:
            if ticket.units > 0:
                expected = ticket.units * self.seconds_per_unit
                clamped = min(max(seconds, expected / RATE_CLAMP), expected * RATE_CLAMP)
                self.seconds_per_unit += RATE_SMOOTHING * (
                    clamped / ticket.units - self.seconds_per_unit
                )
                now = self._clock()
                self._answers.append((now, now - ticket.admitted))
                if len(self._queued) > len(self._running):
                    if self._last_finish is not None:
                        gap = min(now - self._last_finish, expected * RATE_CLAMP)
                        self._gaps.append((gap, ticket.units))
                    self._last_finish = now
                else:
                    # Nothing waits: the time to the next finish would measure idleness.
                    self._gaps.clear()
                    self._last_finish = None
            self._forget_job(ticket)

    def close(self, ticket: Ticket) -> None:
        with self._lock:
            if ticket.closed:
                return
            ticket.closed = True
            self._forget_job(ticket)
            self.reserved_bytes -= ticket.reserved
            ticket.reserved = 0

    def _forget_job(self, ticket: Ticket) -> None:
        self._queued.pop(ticket, None)
        self._running.discard(ticket)
        self.reserved_bytes -= ticket.decode_reserved
        ticket.reserved -= ticket.decode_reserved
        ticket.decode_reserved = 0

    def _shed(self, reason: str, message: str, retry_after: float, close: bool = False) -> Shed:
        self.events.shed(reason)
        return Shed(reason, message, retry_after, close)

    # -- shutdown ------------------------------------------------------------------------------

    def drain(self, grace: float) -> list[Ticket]:
        """Stop taking work that cannot finish within ``grace`` seconds; answer what cannot.

        Walks the queue in order, adding up the expected time of each job (times
        ``DRAIN_PESSIMISM``); every job that would end past the deadline is cancelled with a
        ``Shed("shutdown")`` (its request thread answers 503 at once). Returns the cancelled
        tickets.
        """
        with self._lock:
            self.drain_deadline = self._clock() + grace
        return self.recut()

    def recut(self) -> list[Ticket]:
        """During a drain, cancel again what no longer fits, with the service rate of now."""
        with self._lock:
            if self.drain_deadline is None:
                return []
            cancelled = self._cancel_late_locked(self._clock())
        for _ in cancelled:
            self.events.dropped("shutdown")
        return cancelled

    def cancel_all(self) -> list[Ticket]:
        """At the end of the grace period: cancel every job that has not started."""
        with self._lock:
            self.drain_deadline = self._clock()
            cancelled = self._cancel_late_locked(math.inf)
        for _ in cancelled:
            self.events.dropped("shutdown")
        return cancelled

    def _cancel_late_locked(self, now: float) -> list[Ticket]:
        assert self.drain_deadline is not None
        cancelled: list[Ticket] = []
        finish = now
        unit_seconds = self._unit_seconds_locked() * DRAIN_PESSIMISM / self.workers
        for ticket in list(self._queued):
            finish += ticket.units * unit_seconds
            if ticket in self._running or finish <= self.drain_deadline:
                continue
            ticket.refusal = Shed("shutdown", "the server is shutting down", 1, close=True)
            if ticket.future is None or ticket.future.cancel():
                self._forget_job(ticket)
                cancelled.append(ticket)
        return cancelled
