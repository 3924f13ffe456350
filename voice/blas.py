"""numpy's BLAS on one thread around work that a llama.cpp decode follows.

OpenBLAS (numpy's BLAS) keeps its worker threads spinning for a while after a multi-threaded
call. After the native path's encoder and projector (numpy matrix products) that spin took a core
from one of llama.cpp's two threads in the decode that followed: in the server, the push-to-talk
native reply's first token came 174 ms after the end of speech without this, 80 ms with it. Only
around that work, though: with numpy's BLAS on one thread for the whole process, Whisper's
decoding (CTranslate2) ran 50 ms slower on this VM (`benchmarks/RESULTS.md`, 2026-12-05).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

_controller: Any = None


def one_blas_thread() -> AbstractContextManager[Any]:
    """A context in which numpy's BLAS runs on one thread (the limit is process-wide while it lasts)."""
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="blas")
