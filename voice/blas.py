"""numpy's BLAS on one thread around work that a llama.cpp decode follows.

OpenBLAS (numpy's BLAS) keeps its worker threads spinning for a while after a multi-threaded
call; after the native path's encoder and projector that spin takes a core from llama.cpp's
threads in the decode that follows, which delays the reply's first token. Only around that work,
though: numpy's BLAS on one thread for the whole process slows Whisper's decoding (CTranslate2).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_lock = threading.Lock()
_inside = 0  # threads inside `one_blas_thread` now
_limiter: Any = None  # threadpoolctl's limit while any is; it restores the limits it changed
_controller: Any = None


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """A block in which numpy's BLAS runs on one thread. The limit is process-wide: it is set when
    the first thread enters such a block and lifted when the last one leaves."""
    global _inside, _limiter, _controller
    with _lock:
        if _inside == 0:
            if _controller is None:
                import numpy  # noqa: F401 - loaded first, so that the controller finds its BLAS
                from threadpoolctl import ThreadpoolController

                _controller = ThreadpoolController()
            _release_control()
            _limiter = _controller.limit(limits=1, user_api="blas")
        _inside += 1
    try:
        yield
    finally:
        with _lock:
            _inside -= 1
            if _inside == 0:
                _release_control()
                _limiter.restore_original_limits()
                _limiter = None


def _release_control() -> None:
    """threadpoolctl lets only the first thread that limited OpenBLAS change its limit again (its
    pool is process-wide) and silently ignores the others; the blocks here come from any worker
    thread, and take turns under `_lock`."""
    from threadpoolctl import OpenBLASController

    OpenBLASController.clear_controlling_thread(force=True)
