"""``Admission`` on a fake clock: every rule of the memory and time budgets, in milliseconds.

The clock is injected, so a test states what happened when (a job queued, a client gone, a
job that ran for 106 s) and asserts what admission decides next; nothing sleeps and no model runs.
Service times are the admission's own prior (0.2 s per work unit) unless a test measures others.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from iweblens.service.admission import (
    PATIENCE_WINDOW_S,
    PRIOR_SECONDS_PER_UNIT,
    Admission,
    AdmissionEvents,
    Shed,
    Ticket,
)
from iweblens.service.errors import ApiError

UNIT_S = PRIOR_SECONDS_PER_UNIT
BUDGET = 1_000_000


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Recorder:
    """Admission's events (what the Prometheus counters would count), kept in order."""

    def __init__(self) -> None:
        self.shed: list[str] = []
        self.dropped: list[str] = []

    def events(self) -> AdmissionEvents:
        return AdmissionEvents(shed=self.shed.append, dropped=self.dropped.append)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def admission_on(clock: FakeClock, max_wait: float = 30.0, **options: float) -> Admission:
    return Admission(BUDGET, max_wait, 1, clock=clock, **options)


def queue(admission: Admission, count: int, units: float = 1.0) -> list[Ticket]:
    tickets = []
    for _ in range(count):
        ticket = admission.ticket()
        ticket.admit_job(0, units)
        tickets.append(ticket)
    return tickets


def serve(clock: FakeClock, ticket: Ticket, seconds: float) -> None:
    """Run ``ticket``'s job for ``seconds`` and answer it (the inference thread, then the front)."""
    assert ticket.begin() is None
    clock.advance(seconds)
    ticket.finished(seconds)
    ticket.close()


def leave(clock: FakeClock, admission: Admission, after_s: float, units: float = 1.0) -> None:
    """A client whose job is queued and who hangs up ``after_s`` later; its job is dropped."""
    ticket = admission.ticket()
    ticket.admit_job(0, units)
    clock.advance(after_s)
    ticket.depart()
    assert ticket.begin() == "disconnected"
    ticket.close()


def refusal(call: Callable[[], object]) -> ApiError:
    """The ``ApiError`` (a ``Shed`` or a 413) that ``call`` raises."""
    with pytest.raises(ApiError) as raised:
        call()
    return raised.value


# -- the wait limit --------------------------------------------------------------------------------


def test_a_job_is_refused_once_the_expected_wait_exceeds_max_wait(clock: FakeClock) -> None:
    recorder = Recorder()
    admission = Admission(BUDGET, 2.0, 1, recorder.events(), clock)
    queue(admission, 10)
    assert admission.expected_wait() == pytest.approx(10 * UNIT_S)
    admission.check_open()
    queue(admission, 1)  # 2.0 s ahead: at the limit, not over it
    shed = refusal(lambda: queue(admission, 1))
    assert isinstance(shed, Shed) and shed.status == 503 and shed.reason == "wait"
    assert shed.retry_after >= 1
    assert isinstance(refusal(admission.check_open), Shed)
    assert recorder.shed == ["wait", "wait"]


def test_the_wait_counts_workers_and_work_units(clock: FakeClock) -> None:
    admission = Admission(BUDGET, 30.0, 2, clock=clock)
    queue(admission, 3, units=2.0)
    assert admission.expected_wait() == pytest.approx(3 * 2.0 * UNIT_S / 2)


def test_a_job_still_queued_past_its_deadline_is_dropped(clock: FakeClock) -> None:
    recorder = Recorder()
    admission = Admission(BUDGET, 2.0, 1, recorder.events(), clock)
    (late,) = queue(admission, 1)
    clock.advance(2.5)
    assert late.begin() == "deadline"
    assert recorder.dropped == ["deadline"]
    assert admission.queue_depth == 0


def test_a_departed_clients_job_is_dropped_and_holds_no_decoding_memory(clock: FakeClock) -> None:
    admission = admission_on(clock)
    ticket = admission.ticket()
    ticket.reserve(1000)
    ticket.admit_job(5000, 1.0)
    ticket.depart()
    assert ticket.begin() == "disconnected"
    assert admission.reserved_bytes == 1000 and admission.queue_depth == 0
    ticket.close()
    assert admission.reserved_bytes == 0


# -- shed messages ---------------------------------------------------------------------------------


def test_shed_messages_say_overloaded_and_give_away_no_budget(clock: FakeClock) -> None:
    admission = Admission(10_000, 1.0, 1, clock=clock)
    queue(admission, 6)
    by_wait = [refusal(admission.check_open), refusal(lambda: queue(admission, 1))]
    body = admission.ticket()
    body.reserve(9_000)
    by_memory = [
        refusal(lambda: admission.ticket().reserve(2_000)),
        refusal(lambda: Admission(10_000, 30.0, 1, clock=clock).ticket().admit_job(20_000, 1.0)),
    ]
    for shed in by_wait + by_memory:
        assert shed.status == 503 and shed.code == "overloaded"
        assert "overloaded" in shed.message
        assert not any(character.isdigit() for character in shed.message), shed.message
    assert [s.reason for s in by_wait + by_memory if isinstance(s, Shed)] == [
        "wait",
        "wait",
        "memory",
        "memory",
    ]


# -- memory ----------------------------------------------------------------------------------------


def test_memory_is_reserved_while_held_and_released_on_close(clock: FakeClock) -> None:
    recorder = Recorder()
    admission = Admission(10_000, 30.0, 1, recorder.events(), clock)
    first, second = admission.ticket(), admission.ticket()
    first.reserve(4_000)
    second.reserve(4_000)
    assert isinstance(refusal(lambda: admission.ticket().reserve(2_001)), Shed)
    assert recorder.shed == ["memory"]
    first.close()
    first.close()  # idempotent: released once
    assert admission.reserved_bytes == 4_000
    admission.ticket().reserve(6_000)
    assert admission.reserved_bytes == 10_000


def test_decoding_is_reserved_only_while_the_job_runs(clock: FakeClock) -> None:
    admission = Admission(10_000, 30.0, 1, clock=clock)
    running, waiting = admission.ticket(), admission.ticket()
    running.reserve(1_000)
    running.admit_job(6_000, 1.0)
    waiting.admit_job(6_000, 1.0)  # decodings are checked one at a time: both fit alone
    assert admission.reserved_bytes == 1_000
    assert running.begin() is None
    assert admission.reserved_bytes == 7_000
    assert waiting.begin() == "memory"  # the other decoding holds the room it needs
    running.finished(UNIT_S)
    assert admission.reserved_bytes == 1_000
    running.close()
    assert admission.reserved_bytes == 0


def test_the_budget_is_remeasured_only_with_nothing_reserved(clock: FakeClock) -> None:
    admission = Admission(10_000, 30.0, 1, clock=clock)
    held = admission.ticket()
    held.reserve(100)
    admission.remeasure(lambda: 5_000)
    assert admission.budget_bytes == 10_000
    held.close()
    admission.remeasure(lambda: 5_000)
    assert admission.budget_bytes == 5_000 and admission.capacity_bytes == 10_000


# -- the service rate and its clamp ----------------------------------------------------------------


def test_one_slow_job_cannot_poison_the_service_rate(clock: FakeClock) -> None:
    """A job that keeps the thread busy 106 s (a hostile progressive JPEG) while others wait:
    the estimate moves, but the next photographs are still admitted and started."""
    admission = admission_on(clock)
    tickets = queue(admission, 20)
    for ticket in tickets[:17]:
        serve(clock, ticket, UNIT_S)
    before = admission.expected_wait()
    serve(clock, tickets[17], 106.0)
    assert admission.expected_wait() < 2 * before
    assert [ticket.begin() for ticket in tickets[18:]] == ["deadline"] * 2  # waited 106 s
    fresh = queue(admission, 40)  # 40 photographs: 8 s at the measured rate, under max_wait
    for ticket in fresh[:5]:
        serve(clock, ticket, UNIT_S)
    assert fresh[5].begin() is None


def test_a_lasting_slowdown_is_still_followed(clock: FakeClock) -> None:
    admission = admission_on(clock)
    for _ in range(40):
        (ticket,) = queue(admission, 1)
        serve(clock, ticket, 1.0)
    queue(admission, 10)
    assert admission.expected_wait() == pytest.approx(10.0, rel=0.1)


def test_throughput_slower_than_the_jobs_counts(clock: FakeClock) -> None:
    """HTTP work sharing the CPU: jobs take 0.2 s each, but finish only every 0.4 s."""
    admission = admission_on(clock)
    tickets = queue(admission, 30)
    for ticket in tickets[:20]:
        clock.advance(UNIT_S)  # the thread is off the CPU for as long as the job runs
        serve(clock, ticket, UNIT_S)
    assert admission.expected_wait() == pytest.approx(10 * 2 * UNIT_S, rel=0.1)


# -- learned client patience -----------------------------------------------------------------------


def learn_patience(clock: FakeClock, admission: Admission, waited_s: float, clients: int) -> None:
    """``clients`` queued together, all gone ``waited_s`` later; their jobs are dropped."""
    tickets = queue(admission, clients)
    clock.advance(waited_s)
    for ticket in tickets:
        ticket.depart()
    assert [ticket.begin() for ticket in tickets] == ["disconnected"] * clients
    for ticket in tickets:
        ticket.close()


def test_clients_leaving_after_five_seconds_lower_the_wait_limit(clock: FakeClock) -> None:
    """Overload with 5 s clients: the queue is kept short enough to answer them in time."""
    admission = admission_on(clock)
    learn_patience(clock, admission, 5.0, clients=10)
    limit = admission.wait_limit()
    assert 2.0 <= limit <= 4.0
    queue(admission, round((limit - UNIT_S) / UNIT_S) - 1)
    queue(admission, 1)  # answered within the learned patience: admitted
    shed = refusal(lambda: queue(admission, 1, units=4.0))  # its own 0.8 s makes it late
    assert isinstance(shed, Shed) and shed.reason == "wait"


def test_quick_answers_do_not_unlearn_the_patience_they_owe_it_to(clock: FakeClock) -> None:
    """While the learned patience keeps the queue short, nobody is seen to wait 5 s: the
    departures still stand for every client, until they are older than the window."""
    admission = admission_on(clock)
    learn_patience(clock, admission, 5.0, clients=10)
    for _ in range(100):  # 20 s of answers, each within a fraction of a second
        (ticket,) = queue(admission, 1)
        serve(clock, ticket, UNIT_S)
    assert admission.wait_limit() < 5.0


def test_learned_patience_decays(clock: FakeClock) -> None:
    admission = admission_on(clock)
    learn_patience(clock, admission, 5.0, clients=10)
    assert admission.wait_limit() < 5.0
    clock.advance(PATIENCE_WINDOW_S + 1)
    assert admission.wait_limit() == 30.0


def test_a_job_the_learned_patience_can_answer_is_started(clock: FakeClock) -> None:
    admission = admission_on(clock)
    learn_patience(clock, admission, 5.0, clients=10)
    ahead = queue(admission, 10)
    (job,) = queue(admission, 1)
    for ticket in ahead:
        serve(clock, ticket, UNIT_S)
    assert job.begin() is None  # waited 2.0 s, answered at 2.2 s: within the learned patience


def test_a_job_too_late_for_the_learned_patience_is_dropped_before_inference(
    clock: FakeClock,
) -> None:
    admission = admission_on(clock)
    learn_patience(clock, admission, 5.0, clients=10)
    (job,) = queue(admission, 1)
    clock.advance(4.5)  # the thread was busy elsewhere: its client leaves before it could finish
    assert job.begin() == "deadline"


def test_a_few_impatient_clients_among_patient_ones_do_not_set_the_patience(
    clock: FakeClock,
) -> None:
    """0.4 requests/s of clients that hang up after 0.1 s, among patient clients served back to
    back: patient clients are still admitted and served."""
    admission = admission_on(clock)
    for _ in range(12):  # 30 s
        for ticket in queue(admission, 10):
            serve(clock, ticket, 0.24)
        leave(clock, admission, 0.1)
    assert admission.wait_limit() == 30.0
    tickets = queue(admission, 5)
    for ticket in tickets:
        serve(clock, ticket, UNIT_S)


def test_learned_patience_has_a_floor_of_several_service_times(clock: FakeClock) -> None:
    """Only 0.1 s clients (Frigate's timeout): served what fits, not refused for their patience."""
    admission = admission_on(clock)
    learn_patience(clock, admission, 0.1, clients=20)
    assert admission.wait_limit() >= 2 * UNIT_S
    tickets = queue(admission, 3)  # the third answered after three service times
    for ticket in tickets:
        serve(clock, ticket, UNIT_S)


def test_learned_patience_still_refuses_what_no_queue_position_could_answer(
    clock: FakeClock,
) -> None:
    admission = admission_on(clock)
    learn_patience(clock, admission, 0.1, clients=20)
    shed = refusal(lambda: queue(admission, 20))
    assert isinstance(shed, Shed) and shed.reason == "wait"


# -- a job's own time ------------------------------------------------------------------------------


def test_a_job_that_alone_outlasts_max_wait_is_too_large(clock: FakeClock) -> None:
    admission = admission_on(clock, max_wait=2.0)
    error = refusal(lambda: queue(admission, 1, units=11.0))  # 2.2 s at the measured rate
    assert (error.status, error.code) == (413, "image_too_large")
    assert not isinstance(error, Shed)
    queue(admission, 1, units=9.0)


def test_a_job_that_alone_outlasts_the_shutdown_grace_is_too_large(clock: FakeClock) -> None:
    admission = admission_on(clock, grace=5.0)
    error = refusal(lambda: queue(admission, 1, units=30.0))  # 6 s: a SIGTERM would cut it
    assert (error.status, error.code) == (413, "image_too_large")
    queue(admission, 1, units=20.0)


def test_a_job_that_fits_alone_but_not_behind_the_queue_is_shed(clock: FakeClock) -> None:
    admission = admission_on(clock, max_wait=2.0, grace=5.0)
    queue(admission, 11)  # 2.2 s ahead
    shed = refusal(lambda: queue(admission, 1, units=5.0))
    assert isinstance(shed, Shed) and shed.status == 503


# -- the shutdown recut ----------------------------------------------------------------------------


def test_drain_answers_what_cannot_finish_within_the_grace(clock: FakeClock) -> None:
    recorder = Recorder()
    admission = Admission(BUDGET, 30.0, 1, recorder.events(), clock)
    tickets = queue(admission, 10)
    assert tickets[0].begin() is None
    # 0.2 s a job, taken as 0.3 s: the running one and two more end by 0.9 s.
    cancelled = admission.drain(1.0)
    assert cancelled == tickets[3:]
    assert all(t.refusal is not None and t.refusal.code == "shutting_down" for t in cancelled)
    assert recorder.dropped == ["shutdown"] * 7
    shed = refusal(lambda: queue(admission, 1))
    assert isinstance(shed, Shed) and shed.reason == "shutdown" and shed.close


def test_the_recut_answers_early_what_a_slower_node_cannot_finish(clock: FakeClock) -> None:
    admission = admission_on(clock)
    tickets = queue(admission, 20)
    assert admission.drain(6.5) == []  # 20 jobs taken as 0.3 s each: 6 s
    serve(clock, tickets[0], 0.6)  # three times slower than measured
    cancelled = admission.recut()
    assert cancelled and cancelled == tickets[-len(cancelled) :]
    assert admission.recut() == []  # nothing changed: nothing more to cancel


def test_at_the_end_of_the_grace_every_waiting_job_is_answered(clock: FakeClock) -> None:
    admission = admission_on(clock)
    running, *waiting = queue(admission, 5)
    assert running.begin() is None
    admission.drain(math.inf)
    assert admission.cancel_all() == waiting
    assert admission.queue_depth == 1
    assert admission.recut() == []
