"""A pool of llama.cpp contexts over one model: each serves one request at a time.

Every context keeps its last prompt in its KV cache, so which context a request takes decides how
much of its prompt is evaluated again: each backend gives its own choice (`Choose`), the pool does
the leasing, the waiting and the cancellation.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Generic, TypeVar

C = TypeVar("C")

WAIT = object()
"""What a `Choose` returns to wait for a context to be released."""
POLL_S = 0.05

Choose = Callable[[Sequence[C], Mapping[C, object]], "C | object | None"]
"""Given the free contexts (idle longest first) and the tags of the contexts being prepared, a
context to take, WAIT, or None to give up."""


class ContextPool(Generic[C]):
    """Leases contexts to one request at a time; thread-safe."""

    def __init__(self, contexts: Sequence[C]) -> None:
        self.contexts = list(contexts)
        self._free = list(contexts)  # idle longest first
        self._preparing: dict[C, object] = {}  # context -> the tag of the prefill preparing it
        self._changed = threading.Condition()

    def acquire(self, choose: Choose, cancel: threading.Event, *, tag: object | None = None) -> C | None:
        """The context `choose` picks, once it picks one; None when it gives up or `cancel` is set.
        A `tag` marks the context as being prepared (a prefill) until it is released."""
        with self._changed:
            while True:
                if cancel.is_set():
                    return None
                choice = choose(self._free, self._preparing)
                if choice is None:
                    return None
                if choice is not WAIT:
                    break
                self._changed.wait(POLL_S)
            self._free.remove(choice)
            if tag is not None:
                self._preparing[choice] = tag  # type: ignore[index]
            return choice  # type: ignore[return-value]

    def release(self, context: C, update: Callable[[], None] | None = None) -> None:
        """Give `context` back; `update` runs first, under the pool's lock (the caller's record of
        what the context now holds)."""
        with self._changed:
            if update is not None:
                update()
            self._preparing.pop(context, None)
            self._free.append(context)
            self._changed.notify_all()

    @contextmanager
    def idle(self) -> Iterator[list[C]]:
        """The free contexts, none leased meanwhile: for warming or closing them."""
        with self._changed:
            yield self._free
