"""Sans-I/O: the fair queue of model jobs (one job of each kind per session, round-robin across
sessions), and the runner that starts them in worker threads."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from voice.jobs import JobDropped, JobRunner
from voice.scheduler import FairQueue, Ticket


# ---------------------------------------------------------------- the fair queue
def start_all(queue: FairQueue) -> list[Ticket]:
    started = []
    while (ticket := queue.next()) is not None:
        started.append(ticket)
    return started


def test_free_slots_go_round_robin_across_sessions():
    queue = FairQueue(slots=1)
    for n in range(3):
        queue.submit(Ticket("flood", "transcribe", payload=n))
    queue.submit(Ticket("a", "transcribe"))
    queue.submit(Ticket("b", "score"))
    order = []
    for _ in range(5):
        ticket = queue.next()
        order.append(ticket.owner)
        assert queue.next() is None  # one slot
        queue.finished(ticket)
    assert order == ["flood", "a", "b", "flood", "flood"]


def test_a_backlog_never_delays_another_sessions_job():
    queue = FairQueue(slots=2)
    for n in range(100):
        queue.submit(Ticket("flood", "transcribe", payload=n))
    first = start_all(queue)
    assert [t.owner for t in first] == ["flood"]  # one transcription at a time per session
    queue.submit(Ticket("other", "transcribe"))
    assert [t.owner for t in start_all(queue)] == ["other"]  # at once: the flood's backlog waits its turn


def test_a_demoted_session_runs_only_when_nothing_else_runs():
    queue = FairQueue(slots=2)
    queue.demote("flood")
    queue.submit(Ticket("flood", "transcribe"))
    queue.submit(Ticket("a", "transcribe"))
    [a] = start_all(queue)
    assert a.owner == "a"  # the flood waits although a slot is free
    queue.submit(Ticket("b", "score"))
    [b] = start_all(queue)
    assert b.owner == "b"  # others still go first
    queue.finished(a)
    assert start_all(queue) == []  # b still runs
    queue.finished(b)
    [flood] = start_all(queue)
    assert flood.owner == "flood"  # now the server is otherwise idle
    queue.submit(Ticket("a", "transcribe"))
    assert [t.owner for t in start_all(queue)] == ["a"]  # a demoted job never holds the others back


def test_a_session_demoted_no_more_is_served_in_turn_again():
    queue = FairQueue(slots=2)
    queue.demote("flood")
    queue.submit(Ticket("flood", "transcribe"))
    queue.submit(Ticket("a", "transcribe"))
    assert [t.owner for t in start_all(queue)] == ["a"]
    queue.demote("flood", False)
    assert [t.owner for t in start_all(queue)] == ["flood"]


def test_one_running_job_of_each_kind_per_session():
    queue = FairQueue(slots=16)
    for kind in ("transcribe", "transcribe", "score", "score", "prefill", "reply", "reply", "reply"):
        queue.submit(Ticket("s", kind))
    started = start_all(queue)
    assert sorted(t.kind for t in started) == ["prefill", "reply", "reply", "score", "transcribe"]
    assert queue.waiting == 3
    queue.finished(next(t for t in started if t.kind == "score"))
    assert [t.kind for t in start_all(queue)] == ["score"]


def test_a_waiting_job_is_replaced_by_a_newer_one_of_its_key():
    queue = FairQueue(slots=1)
    running = Ticket("s", "transcribe", key="partial", payload="old, running")
    queue.submit(running)
    assert queue.next() is running
    stale = Ticket("s", "transcribe", key="partial", payload="stale")
    final = Ticket("s", "transcribe", payload="final")
    assert queue.submit(stale) is None
    assert queue.submit(final) is None
    newer = Ticket("s", "transcribe", key="partial", payload="newer")
    assert queue.submit(newer) is stale
    assert queue.submit(Ticket("other", "transcribe", key="partial")) is None  # keys are per session
    assert queue.waiting == 3
    queue.finished(running)
    assert queue.next() is newer


def test_a_closed_sessions_waiting_jobs_are_dropped():
    queue = FairQueue(slots=1)
    tickets = [Ticket("gone", "transcribe", payload=n) for n in range(5)]
    for ticket in tickets:
        queue.submit(ticket)
    queue.submit(Ticket("stays", "transcribe"))
    running = queue.next()
    assert queue.drop("gone") == tickets[1:]
    assert queue.waiting == 1
    queue.finished(running)
    assert queue.next().owner == "stays"
    assert queue.drop("nobody") == []


def test_drop_by_key_keeps_the_rest():
    queue = FairQueue(slots=0)
    keep = Ticket("s", "transcribe")
    prefill = Ticket("s", "prefill", key="prefill")
    queue.submit(keep)
    queue.submit(prefill)
    assert queue.drop("s", "prefill") == [prefill]
    assert queue.waiting_of("s") == 1 and queue.withdraw(keep) and queue.waiting == 0
    assert not queue.withdraw(keep)


# ---------------------------------------------------------------- the runner
async def test_the_runner_runs_jobs_fairly_and_drops_a_closed_sessions_work():
    gate = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as executor:
        runner = JobRunner(executor, slots=1)
        blocker = asyncio.ensure_future(runner.run("flood", "transcribe", gate.wait))
        flood = [asyncio.ensure_future(runner.run("flood", "transcribe", lambda n=n: n)) for n in range(20)]
        other = asyncio.ensure_future(runner.run("other", "transcribe", lambda: "mine"))
        await asyncio.sleep(0)
        assert runner.waiting == 21
        gate.set()
        assert await other == "mine"  # next after the running job, ahead of the flood's backlog
        await blocker
        assert runner.drop("flood") > 0  # the session closes
        outcomes = await asyncio.gather(*flood, return_exceptions=True)
        assert any(isinstance(o, JobDropped) and o.reason == "dropped" for o in outcomes)
        assert runner.waiting == 0 and runner.queue.running == 0


async def test_the_runner_answers_a_replaced_job_and_passes_errors_on():
    gate = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as executor:
        runner = JobRunner(executor, slots=1)
        running = asyncio.ensure_future(runner.run("s", "transcribe", gate.wait))
        stale = asyncio.ensure_future(runner.run("s", "transcribe", lambda: "stale", key="partial"))
        await asyncio.sleep(0)
        newer = asyncio.ensure_future(runner.run("s", "transcribe", lambda: "newer", key="partial"))
        with pytest.raises(JobDropped) as dropped:
            await stale
        assert dropped.value.reason == "replaced"
        gate.set()
        assert await newer == "newer" and await running

        def fails() -> None:
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            await runner.run("s", "score", fails)
        assert runner.queue.running == 0


async def test_a_job_given_up_while_waiting_leaves_the_queue():
    gate = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as executor:
        runner = JobRunner(executor, slots=1)
        running = asyncio.ensure_future(runner.run("s", "transcribe", gate.wait))
        waiting = asyncio.ensure_future(runner.run("s", "transcribe", lambda: None))
        await asyncio.sleep(0)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert runner.waiting == 0
        gate.set()
        await running
