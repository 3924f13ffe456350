"""numpy's BLAS on one thread around the native path's numpy work, and back after it."""

from __future__ import annotations

import threading

from threadpoolctl import threadpool_info

from voice.blas import one_blas_thread


def blas_threads() -> set[int]:
    import numpy  # noqa: F401 - its BLAS is what is counted

    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


def test_overlapping_blocks_keep_one_thread_until_the_last_one_ends():
    before = blas_threads()
    first_inside, first_may_leave = threading.Event(), threading.Event()

    def first() -> None:
        with one_blas_thread():
            first_inside.set()
            first_may_leave.wait(10)

    thread = threading.Thread(target=first)
    thread.start()
    first_inside.wait(10)
    with one_blas_thread():
        first_may_leave.set()
        thread.join(10)  # the first block ended while this one goes on
        assert blas_threads() == {1}
    assert blas_threads() == before


def test_a_block_limits_blas_whichever_thread_entered_one_before():
    """threadpoolctl ignores all but the first thread that limited OpenBLAS, unless told otherwise."""
    before = blas_threads()
    seen: list[set[int]] = []

    def block() -> None:
        with one_blas_thread():
            seen.append(blas_threads())

    for _ in range(2):
        thread = threading.Thread(target=block)
        thread.start()
        thread.join(10)
    block()
    assert seen == [{1}, {1}, {1}]
    assert blas_threads() == before
