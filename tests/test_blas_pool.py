"""numpy's OpenBLAS running its parallel jobs on the replay's workers (needle.compile.blas_pool).

Each check runs in a child process: installing the callback is for the whole process and
for good, and a pool that lost a job would hang (the child's timeout turns that into a
failure). The products are compared bit for bit with the ones OpenBLAS's own threads gave
in the same process before the install: the pool runs the same jobs, so the bits are the same.
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from needle.compile import blas_pool

pytestmark = pytest.mark.skipif(not blas_pool._setters() or sys.platform != "linux",
                                reason="numpy's BLAS is not an OpenBLAS with the threads callback")

PRELUDE = """
import os, sys, threading
import numpy as np
import needle
from needle.compile import blas_pool, parallel_cpu
rng = np.random.RandomState(0)
shapes = [((2048, 128), (128, 384)), ((700, 1000), (1000, 200)), ((20, 200), (200, 800)),
          ((128, 2048), (2048, 128)), ((513, 300), (300, 257)), ((3000, 700), (700,))]
pairs = [(rng.randn(*a).astype(np.float32), rng.randn(*b).astype(np.float32)) for a, b in shapes]
pairs.append((rng.randn(600, 400), rng.randn(400, 500)))  # float64: dgemm
pairs.append((np.asfortranarray(rng.randn(300, 900).astype(np.float32)), rng.randn(900, 300).astype(np.float32).T.copy().T))
before = [a @ b for a, b in pairs]  # OpenBLAS's own threads
"""


def run_child(body: str, env=None, timeout=120) -> str:
    script = PRELUDE + textwrap.dedent(body)
    environment = dict(os.environ, NEEDLE_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2", **(env or {}))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout,
                            env=environment)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_pool_runs_openblas_jobs_with_openblas_bits():
    out = run_child("""
        parallel_cpu._workers(1)  # the first worker installs the pool
        assert blas_pool.installed(), blas_pool.stats()
        start = blas_pool.stats()["calls"]
        for _ in range(3):
            for (a, b), want in zip(pairs, before):
                got = a @ b
                assert got.tobytes() == want.tobytes(), (a.shape, b.shape)
        stats = blas_pool.stats()
        assert stats["calls"] > start and stats["workers"] == 2, stats  # the worker and its BLAS helper
        print("ok", stats["calls"] - start)
    """)
    assert out.startswith("ok")


def test_blas_from_several_threads_at_once_and_from_a_worker_block():
    """Four Python threads multiplying at once (the callback runs one call at a time), a split
    launch whose blocks both call BLAS (the busy worker's jobs go to its helper), and more jobs
    per call than the pool has threads (the rest get threads of their own)."""
    run_child("""
        parallel_cpu._workers(1)
        errors = []
        def many():
            try:
                for _ in range(20):
                    for (a, b), want in zip(pairs[:4], before[:4]):
                        assert (a @ b).tobytes() == want.tobytes()
            except BaseException as err:
                errors.append(err)
        threads = [threading.Thread(target=many) for _ in range(4)]
        for t in threads: t.start()
        for t in threads: t.join()
        assert not errors, errors
        outs = [None, None]
        def block(k):
            def run():
                outs[k] = pairs[0][0] @ pairs[0][1]
            return run
        launch = parallel_cpu.run_blocks([block(0), block(1)])
        for _ in range(20):
            launch()
            assert outs[0].tobytes() == before[0].tobytes() and outs[1].tobytes() == before[0].tobytes()
        # more jobs than the worker and its helper: the rest get threads of their own. A worker
        # that finished its first job before the caller placed the last one (a loaded machine
        # can pause the caller) takes that one too, so one call need not overflow: repeat
        import ctypes
        ctypes.CDLL(blas_pool.stats()["libraries"][0]).scipy_openblas_set_num_threads64_(4)
        (a, b), want = pairs[0], before[0]  # inner dimension 128: same sums on 4 threads
        for _ in range(200):
            assert (a @ b).tobytes() == want.tobytes()
            if blas_pool.stats()["own_threads"] > 0:
                break
        assert blas_pool.stats()["own_threads"] > 0, blas_pool.stats()
    """)


def test_a_forked_child_multiplies_without_the_parents_workers():
    run_child("""
        parallel_cpu._workers(1)
        (pairs[0][0] @ pairs[0][1])
        pid = os.fork()
        if pid == 0:
            ok = all((a @ b).tobytes() == want.tobytes() for (a, b), want in zip(pairs, before))
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert all((a @ b).tobytes() == want.tobytes() for (a, b), want in zip(pairs, before))
    """)


def test_a_compiled_step_is_the_eager_step_with_the_pool():
    """A compiled training step whose matmuls run on the pool gives the eager step's values."""
    run_child("""
        import needle as ndl, needle.nn as nn
        sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
        from train_step import eager_and_compiled
        def build():
            np.random.seed(0)
            model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10))
            return model, ndl.optim.Adam(model.parameters(), lr=1e-3)
        x = ndl.Tensor(np.random.RandomState(1).randn(512, 256).astype(np.float32))
        y = ndl.Tensor(np.random.RandomState(2).randint(0, 10, 512), dtype="int64")
        eager, compiled = eager_and_compiled(build, x, y, 4, fuse=True)
        assert blas_pool.installed() and blas_pool.stats()["calls"] > 0, blas_pool.stats()
        assert eager == compiled, (eager, compiled)
    """)


def test_needle_blas_pool_0_keeps_openblas_threads():
    run_child("""
        parallel_cpu._workers(1)
        assert not blas_pool.installed() and blas_pool.stats()["calls"] == 0
        assert all((a @ b).tobytes() == want.tobytes() for (a, b), want in zip(pairs, before))
    """, env={"NEEDLE_BLAS_POOL": "0"})


def test_a_worker_cell_of_the_wrong_size_is_refused():
    with pytest.raises(ValueError, match="worker cell"):
        blas_pool.register_worker(np.zeros(4, np.int64))


def test_a_pool_that_does_not_build_leaves_openblas_threads_with_a_warning():
    run_child("""
        import warnings
        def broken():
            raise OSError("no futex here")
        blas_pool._parts = broken
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert blas_pool.install() is False
        assert any("did not build: no futex here" in str(w.message) for w in caught), caught
        parallel_cpu._workers(1)
        assert not blas_pool.installed()
        assert all((a @ b).tobytes() == want.tobytes() for (a, b), want in zip(pairs, before))
    """)


def test_numpy_linear_algebra_on_the_pool_gives_openblas_bits():
    """LAPACK's blocked routines call the threaded level-3 kernels many times per call."""
    run_child("""
        def work(r):
            out = []
            for dtype in (np.float32, np.float64, np.complex128):
                a = r.randn(400, 400).astype(dtype)
                if dtype is np.complex128:
                    a = a + 1j * r.randn(400, 400)
                b = r.randn(400, 200).astype(dtype)
                spd = a @ a.conj().T + 400 * np.eye(400)
                out += [np.linalg.solve(a, b), np.linalg.inv(a), np.linalg.qr(a)[1], np.linalg.svd(a, compute_uv=False),
                        np.linalg.eigh(spd)[0], np.linalg.cholesky(spd), np.linalg.lstsq(a[:, :300], b, rcond=None)[0]]
            return out
        own = work(np.random.RandomState(5))
        parallel_cpu._workers(1)
        start = blas_pool.stats()["calls"]
        pooled = work(np.random.RandomState(5))
        assert blas_pool.stats()["calls"] > start
        for i, (x, y) in enumerate(zip(own, pooled)):
            assert np.asarray(x).tobytes() == np.asarray(y).tobytes(), i
    """)


def test_a_parallel_lapack_call_beside_a_pooled_matmul_finishes():
    """numpy's solve runs OpenBLAS's parallel getrf, which hands work to OpenBLAS's own helper
    threads without the callback; a pool job must not take a helper's slot in OpenBLAS's
    per-thread tables (it did, and the solve waited forever)."""
    run_child("""
        parallel_cpu._workers(1)
        r = np.random.RandomState(3)
        a, b = r.randn(400, 400), r.randn(400, 50)
        x = r.randn(512, 512).astype(np.float32)
        want_solve, want_inv, want_product = (np.linalg.solve(a, b).tobytes(), np.linalg.inv(a).tobytes(),
                                              (x @ x).tobytes())
        out = [None, None, None]
        def lapack():
            out[0], out[1] = np.linalg.solve(a, b).tobytes(), np.linalg.inv(a).tobytes()
        def products():
            for _ in range(5):
                out[2] = (x @ x).tobytes()
        launch = parallel_cpu.run_blocks([lapack, products])
        for i in range(60):
            launch()
            assert out == [want_solve, want_inv, want_product], i
        errors = []
        def solves():
            try:
                for _ in range(40):
                    assert np.linalg.solve(a, b).tobytes() == want_solve
            except BaseException as err:
                errors.append(err)
        thread = threading.Thread(target=solves)
        thread.start()
        for _ in range(80):
            assert (x @ x).tobytes() == want_product
        thread.join()
        assert not errors, errors
    """, timeout=90)
