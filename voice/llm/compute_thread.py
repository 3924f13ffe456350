"""One OS thread for every llama.cpp computation in the process.

llama.cpp's CPU backend (built with OpenMP, as llama-cpp-python builds it with gcc) runs each
graph on a libgomp thread team that belongs to the calling thread, and a team lives as long as its
thread. The server calls models from a pool of worker threads, so every worker that once decoded
kept a team; as soon as libgomp manages more threads than there are CPUs it stops spinning between
parallel regions and puts its threads to sleep, and each of the thousands of small parallel
regions of a token then pays for a wake-up. On the 2-core VM a SmolLM2 token took 13.5 ms when
one thread had ever decoded and 34-37 ms once two had (`python -m benchmarks.llama_threads`). So
every decode, whichever thread asks for it, runs on this module's single thread, and libgomp keeps
one team. Two replies at once then take turns, token by token, instead of four compute threads
fighting for two cores.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

_local = threading.local()


def _mark_compute_thread() -> None:
    _local.compute = True


_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama-compute", initializer=_mark_compute_thread)


def on_compute_thread(function: Callable[..., T], *args: Any) -> T:
    """Run `function(*args)` on the compute thread and return its result (or raise its error);
    called from the compute thread itself, it just runs it."""
    if getattr(_local, "compute", False):
        return function(*args)
    return _executor.submit(function, *args).result()


def is_compute_thread() -> bool:
    """Whether the calling thread is the compute thread."""
    return getattr(_local, "compute", False)


def route_decodes(llama: Any) -> None:
    """Make a `llama_cpp.Llama`'s decodes (prompt evaluation and each generated token: every call
    into llama.cpp that computes) run on the compute thread, whichever thread drives it."""
    context = llama._ctx  # llama-cpp-python 0.3.36 (pinned): every decode goes through LlamaContext.decode
    decode = context.decode
    context.decode = lambda batch: on_compute_thread(decode, batch)
