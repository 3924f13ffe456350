"""One OS thread for every llama.cpp computation in the process.

llama.cpp's CPU backend (built with OpenMP, as llama-cpp-python builds it with gcc) runs each
graph on a libgomp thread team that belongs to the calling thread, and a team lives as long as its
thread. The server calls models from a pool of worker threads, so every worker that once decoded
kept a team; as soon as libgomp manages more threads than there are CPUs it stops spinning between
parallel regions and puts its threads to sleep, and each of the thousands of small parallel
regions of a token then pays for a wake-up (`python -m benchmarks.llama_threads` measures it).
So every decode, whichever thread asks for it, runs on this module's single thread, and libgomp
keeps one team.

When the machine is busy with other model work too (several sessions' transcriptions, replies
and syntheses), a decode runs on one thread instead: a team of two spinning threads on two
shared cores stalls at every barrier where the other thread lost its core.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

BUSY_JOBS = 3
"""From this many model jobs under way (the engine's count), decodes run on one thread."""

_local = threading.local()


def _become_compute_thread() -> None:
    _local.compute = True
    threading.current_thread().name = "llama-compute"


_executor = ThreadPoolExecutor(max_workers=1, initializer=_become_compute_thread)


def is_compute_thread() -> bool:
    """Whether the calling thread is the compute thread."""
    return getattr(_local, "compute", False)


def _no_load() -> int:
    return 0


_load: Callable[[], int] = _no_load


def set_load_probe(probe: Callable[[], int]) -> None:
    """Tell the compute thread how to count the model jobs under way (the engine does)."""
    global _load
    _load = probe


def decode_threads(threads: int) -> int:
    """How many threads a decode should use now, of the `threads` its context was made with."""
    return 1 if _load() >= BUSY_JOBS else threads


def on_compute_thread(function: Callable[..., T], *args: Any) -> T:
    """Run `function(*args)` on the compute thread and return its result (or raise its error);
    called from the compute thread itself, it just runs it."""
    if is_compute_thread():
        return function(*args)
    return _executor.submit(function, *args).result()


def decode(ctx: Any, threads: int, function: Callable[..., T], *args: Any) -> T:
    """Run a decode, `function(*args)` on llama.cpp context `ctx` (made with `threads` threads), on
    the compute thread, with as many threads as `decode_threads` allows now."""
    def run() -> T:
        import llama_cpp

        wanted = decode_threads(threads)
        # Both counts: a prompt is decoded with the batch count, which llama-cpp-python sets to all
        # the CPUs by default (a team of spinning threads that stalls when other work has a core).
        if llama_cpp.llama_n_threads(ctx) != wanted or llama_cpp.llama_n_threads_batch(ctx) != wanted:
            llama_cpp.llama_set_n_threads(ctx, wanted, wanted)
        return function(*args)

    return on_compute_thread(run)


def route_decodes(llama: Any) -> None:
    """Make a `llama_cpp.Llama`'s decodes (prompt evaluation and each generated token: every call
    into llama.cpp that computes) run on the compute thread, whichever thread drives it."""
    context = llama._ctx  # llama-cpp-python 0.3.36 (pinned): every decode goes through LlamaContext.decode
    real_decode = context.decode
    threads = llama.n_threads
    context.decode = lambda batch: decode(llama.ctx, threads, real_decode, batch)
