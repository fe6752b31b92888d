"""The CPU kernels' reused scratch memory (kernels/_workspace.py)."""

import threading

import numpy as np
from harness import assert_close
from nnkern.kernels import _workspace as ws


def test_reuses_memory_grows_and_aligns():
    ws.release()
    a = ws.workspace("t.buf", (3, 5), np.float32)
    assert a.shape == (3, 5) and a.dtype == np.float32 and a.flags.c_contiguous
    assert a.ctypes.data % ws.ALIGN == 0
    b = ws.workspace("t.buf", (2, 4), np.float32)  # smaller: the same memory
    assert b.ctypes.data == a.ctypes.data and b.flags.c_contiguous
    c = ws.workspace("t.buf", (100, 7), np.float32)  # larger: a new, bigger buffer
    assert c.shape == (100, 7) and c.ctypes.data % ws.ALIGN == 0
    assert ws.workspace("t.buf", (3, 5), np.float32).ctypes.data == c.ctypes.data
    # another dtype or name is another buffer
    d = ws.workspace("t.buf", (3, 5), np.float64)
    e = ws.workspace("t.other", (3, 5), np.float32)
    assert len({c.ctypes.data, d.ctypes.data, e.ctypes.data}) == 3
    assert ws.held_bytes() >= 700 * 4 + 15 * 8 + 15 * 4
    ws.release()
    assert ws.held_bytes() == 0


def test_each_thread_has_its_own_buffers():
    ws.release()
    mine = ws.workspace("t.buf", (64,), np.float32).ctypes.data
    seen = []
    worker = threading.Thread(
        target=lambda: seen.append(ws.workspace("t.buf", (64,), np.float32).ctypes.data))
    worker.start()
    worker.join()
    assert seen and seen[0] != mine
    ws.release()


def test_gemm_results_do_not_depend_on_leftover_scratch():
    # the packed panels are reused without clearing: a second product of another
    # shape must not pick up values of the first one (ragged strips are zero-padded)
    from nnkern.kernels.gemm import cpu

    rng = np.random.default_rng(0)
    for M, N, K in ((300, 260, 520), (37, 45, 29), (130, 70, 300)):
        a = rng.standard_normal((M, K)).astype(np.float32)
        b = rng.standard_normal((K, N)).astype(np.float32)
        c = np.full((M, N), np.nan, np.float32)
        cpu.gemm(a, b, c, False, False, False)
        assert_close(c, a.astype(np.float64) @ b.astype(np.float64), np.float32,
                     f"gemm {M}x{N}x{K}")
