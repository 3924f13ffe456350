"""Runs the sessions' model jobs in the engine's worker threads, in the fair order of `FairQueue`.

Called on the event loop only: a job is awaited by the session that asked for it, and its function
runs in a worker thread once the queue hands it a slot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar

from voice.scheduler import FairQueue, Ticket

T = TypeVar("T")


class JobDropped(Exception):
    """The job never ran: a newer one of the same key replaced it (`reason` "replaced"), its
    session dropped it ("dropped": it closed, or no longer wants it), or the workers shut down."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"job dropped: {reason}")
        self.reason = reason


@dataclass
class _Job:
    function: Callable[..., Any]
    args: tuple[Any, ...]
    result: asyncio.Future[Any]


class JobRunner:
    """The fair queue of model jobs, and the worker threads that run them."""

    def __init__(self, executor: Executor, slots: int) -> None:
        self.executor = executor
        self.queue = FairQueue(slots)
        self.dropped = 0  # jobs that never ran, since the start

    @property
    def waiting(self) -> int:
        return self.queue.waiting

    async def run(self, owner: Hashable, kind: str, function: Callable[..., T], *args: Any,
                  key: Hashable | None = None) -> T:
        """Run `function(*args)` in a worker thread when the queue gives `owner` a slot for a job of
        `kind`; raises `JobDropped` if it never runs. A waiting job with the same `key` is dropped."""
        loop = asyncio.get_running_loop()
        ticket = Ticket(owner, kind, key, _Job(function, args, loop.create_future()))
        replaced = self.queue.submit(ticket)
        if replaced is not None:
            self._drop(replaced, "replaced")
        self._start_ready(loop)
        try:
            return await ticket.payload.result
        except asyncio.CancelledError:
            self.queue.withdraw(ticket)  # (if it runs already, it ends in its thread and frees its slot then)
            raise

    def demote(self, owner: Hashable, demoted: bool) -> None:
        """Serve `owner`'s jobs only when no other job runs (a session flooding audio), or again in turn."""
        self.queue.demote(owner, demoted)
        if not demoted:
            self._start_ready(asyncio.get_running_loop())

    def drop(self, owner: Hashable, key: Hashable | None = None, reason: str = "dropped") -> int:
        """Drop `owner`'s waiting jobs (those with `key`, or all); returns how many."""
        dropped = self.queue.drop(owner, key)
        for ticket in dropped:
            self._drop(ticket, reason)
        return len(dropped)

    def _drop(self, ticket: Ticket, reason: str) -> None:
        self.dropped += 1
        if not ticket.payload.result.done():
            ticket.payload.result.set_exception(JobDropped(reason))

    def _start_ready(self, loop: asyncio.AbstractEventLoop) -> None:
        while (ticket := self.queue.next()) is not None:
            job: _Job = ticket.payload
            if job.result.done():  # (cancelled while waiting, and not withdrawn yet)
                self.queue.finished(ticket)
                continue
            running = loop.run_in_executor(self.executor, job.function, *job.args)
            running.add_done_callback(lambda done, ticket=ticket: self._finished(ticket, done, loop))

    def _finished(self, ticket: Ticket, done: asyncio.Future[Any], loop: asyncio.AbstractEventLoop) -> None:
        self.queue.finished(ticket)
        error = JobDropped("shutdown") if done.cancelled() else done.exception()  # (always retrieved)
        result: asyncio.Future[Any] = ticket.payload.result
        if not result.done():
            if error is not None:
                result.set_exception(error)
            else:
                result.set_result(done.result())
        self._start_ready(loop)
