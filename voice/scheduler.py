"""Sans-I/O fair scheduling of model jobs across sessions.

Each session (an `owner`) runs at most one job of each kind at a time (`KIND_LIMITS` excepted) and
keeps its waiting jobs in its own queue; a waiting job with a coalescing `key` is replaced by a newer
one with the same key (a stale partial transcription, an older prefill). Free slots go round-robin
across the sessions that have a job ready, so one session's backlog never delays another's turn.
A demoted session (one that sends audio faster than real time) gets a slot only when no other job runs.
The runtime submits tickets, starts what `next` hands out, and reports each end with `finished`.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

KIND_LIMITS = {"reply": 2}
"""Kinds a session may run more than one of: a cancelled reply winds down (to its next token or
sentence) while the next one starts. Other kinds: one at a time."""


@dataclass(eq=False)
class Ticket:
    """One model job: whose, what kind, its coalescing key (None: never replaced) and the runtime's payload."""

    owner: Hashable
    kind: str
    key: Hashable | None = None
    payload: Any = field(default=None, repr=False)


class FairQueue:
    """The waiting and running jobs of every session, and the order they start in."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        """Jobs that may run at once, all sessions together (the worker threads)."""
        self._waiting: dict[Hashable, deque[Ticket]] = {}  # insertion order is the round-robin order
        self._running: dict[Hashable, Counter[str]] = {}
        self._demoted: set[Hashable] = set()
        self.running = 0

    @property
    def waiting(self) -> int:
        """Jobs waiting for a slot, all sessions together."""
        return sum(len(queue) for queue in self._waiting.values())

    def waiting_of(self, owner: Hashable) -> int:
        return len(self._waiting.get(owner, ()))

    def submit(self, ticket: Ticket) -> Ticket | None:
        """Queue a job; returns the waiting job it replaces (same owner and key), which will not run."""
        queue = self._waiting.setdefault(ticket.owner, deque())
        if ticket.key is not None:
            for index, waiting in enumerate(queue):
                if waiting.key == ticket.key:
                    queue[index] = ticket  # (its place in the queue: the newer work is as urgent)
                    return waiting
        queue.append(ticket)
        return None

    def demote(self, owner: Hashable, demoted: bool = True) -> None:
        """Serve `owner` only when no other job runs (or again in turn, with `demoted` False)."""
        if demoted:
            self._demoted.add(owner)
        else:
            self._demoted.discard(owner)

    def next(self) -> Ticket | None:
        """The job to start now, marked running, or None (no free slot, or nothing ready): the first
        session in round-robin order with a job whose kind it is not already running to its limit;
        a demoted session's only when nothing else runs or is ready."""
        if self.running >= self.slots:
            return None
        ticket = self._next_of([owner for owner in self._waiting if owner not in self._demoted])
        if ticket is None and self.running == 0:
            ticket = self._next_of([owner for owner in self._waiting if owner in self._demoted])
        return ticket

    def _next_of(self, owners: list[Hashable]) -> Ticket | None:
        for owner in owners:
            queue = self._waiting[owner]
            running = self._running.setdefault(owner, Counter())
            for index, ticket in enumerate(queue):
                if running[ticket.kind] < KIND_LIMITS.get(ticket.kind, 1):
                    del queue[index]
                    running[ticket.kind] += 1
                    self.running += 1
                    # Served: to the back of the round-robin order (an empty queue leaves it).
                    del self._waiting[owner]
                    if queue:
                        self._waiting[owner] = queue
                    return ticket
        return None

    def finished(self, ticket: Ticket) -> None:
        """A job that `next` handed out has ended (however it ended)."""
        running = self._running.get(ticket.owner)
        if running is None or running[ticket.kind] <= 0:
            return
        running[ticket.kind] -= 1
        self.running -= 1
        if not +running and ticket.owner not in self._waiting:
            del self._running[ticket.owner]

    def withdraw(self, ticket: Ticket) -> bool:
        """Take a waiting job back (its caller gave up on it); False if it is not waiting."""
        queue = self._waiting.get(ticket.owner)
        if queue is None or ticket not in queue:
            return False
        queue.remove(ticket)
        if not queue:
            del self._waiting[ticket.owner]
        return True

    def drop(self, owner: Hashable, key: Hashable | None = None) -> list[Ticket]:
        """Remove a session's waiting jobs (those with `key`, or all of them when it is None) and
        return them: they will not run. Its running jobs still end with `finished`."""
        queue = self._waiting.get(owner)
        if queue is None:
            return []
        dropped = [t for t in queue if key is None or t.key == key]
        kept = deque(t for t in queue if not (key is None or t.key == key))
        if kept:
            self._waiting[owner] = kept
        else:
            del self._waiting[owner]
        return dropped
