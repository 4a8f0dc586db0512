"""The thread pool (kernels/gemm/pool.c): every piece runs once, on a thread below the count
asked for, whatever the pieces and threads, and thread t runs its own block when it is free."""
import os
import threading
import time

import numpy as np
import pytest

from cyconv.kernels.gemm import _gemm


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 8, 9, 64, 1001])
@pytest.mark.parametrize("threads", [1, 2, 3, 4, 8])
def test_every_piece_runs_once(n, threads):
    used, runs, tids = _gemm._pool_trace(n, threads)
    np.testing.assert_array_equal(runs, np.ones(n, np.intc))
    assert 1 <= used <= max(1, min(threads, n))
    assert ((tids >= 0) & (tids < used)).all()


def test_one_thread_runs_in_order_on_the_caller():
    used, runs, tids = _gemm._pool_trace(10, 1)
    assert used == 1
    np.testing.assert_array_equal(tids, np.zeros(10, np.intc))


def test_blocks_go_to_their_threads():
    # pieces are dealt in contiguous blocks, block t first to thread t (the same data on the
    # same core from call to call). With pieces of a few microseconds both threads are busy
    # from the start, so the second block's first piece is thread 1's in nearly every call
    # where thread 1 took part (with one shared counter it was about half of them).
    # The tests above ran up to 8 threads: their workers spin for 50 ms after their last
    # piece (pool.c) and, on a 2-core machine, would take the core from worker 1. Let them
    # fall asleep first.
    time.sleep(0.2)
    n, joined, own = 64, 0, 0
    for _ in range(100):
        used, runs, tids = _gemm._pool_trace(n, 2, work=2000)
        assert (runs == 1).all()
        if (tids == 1).any():
            joined += 1
            own += tids[n // 2] == 1
    assert joined > 0 and own >= 0.8 * joined


def test_concurrent_callers_each_get_all_pieces():
    # a second caller while the pool is busy runs its pieces itself, in order
    results = []

    def call():
        for _ in range(50):
            results.append(_gemm._pool_trace(257, 2)[1])

    workers = [threading.Thread(target=call) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(results) == 150
    assert all((r == 1).all() for r in results)


def test_round_trip_probe_measures_and_leaves_no_thread():
    # benchmarks/placement_states.py tells the host's vCPU placements apart by it (~60 ns or
    # ~330 ns on the 2-vCPU benchmark machines); on any machine it is a positive time well
    # under a millisecond, and its partner thread is joined before it returns
    tasks = "/proc/self/task"
    before = len(os.listdir(tasks)) if os.path.isdir(tasks) else None
    ns = _gemm._round_trip_ns(200)
    assert 0 < ns < 1e6
    if before is not None:          # Linux: the OS threads of this process, C ones included
        # (<=: a thread an earlier test joined may still be leaving the task list)
        assert len(os.listdir(tasks)) <= before
    with pytest.raises(ValueError):
        _gemm._round_trip_ns(0)
