"""What a compiled step gives back to the caller: the .grad of its tensor arguments after every
call, and outputs that are freed as soon as the caller drops them (no reference cycle)."""
import gc
import weakref

import numpy as np
import pytest

import needle as ndl
from needle.backend_ndarray import host_buffer


def softmax_rows(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_a_backward_inside_the_step_sets_the_arguments_grad_on_every_call():
    """The eager step's backward sets x.grad; so must the traced call and every replay (it used
    to keep the first call's gradient: a stale value with no error)."""
    def step(x):
        loss = ndl.ops.logsumexp(x, (1,)).sum()
        loss.backward()
        return loss

    compiled = ndl.compile(step)
    rng = np.random.RandomState(0)
    x = ndl.Tensor(rng.randn(4, 5), dtype="float64", requires_grad=True)
    for _ in range(5):  # eager, trace, replays
        value = rng.randn(4, 5)
        x.data = ndl.Tensor(value, dtype="float64", requires_grad=False)
        compiled(x)
        np.testing.assert_allclose(x.grad.numpy(), softmax_rows(value), rtol=1e-12)


def test_returned_gradients_are_the_callers_grad_values():
    def step(x, w):
        loss = ((x @ w) ** 2).sum()
        loss.backward()
        return loss, w.grad

    compiled = ndl.compile(step)
    rng = np.random.RandomState(1)
    w = ndl.Tensor(rng.randn(3, 2), dtype="float64", requires_grad=True)
    for _ in range(4):
        xv = rng.randn(5, 3)
        x = ndl.Tensor(xv, dtype="float64", requires_grad=False)
        loss, grad = compiled(x, w)
        expected = 2 * xv.T @ (xv @ w.numpy())
        np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-12)
        np.testing.assert_allclose(w.grad.numpy(), expected, rtol=1e-12)
        assert x.grad is None  # it does not require grad: nothing was set


def test_replay_outputs_die_with_their_last_reference():
    """Outputs are freed by reference counting alone (a replay's large outputs used to wait for the
    garbage collector in a cycle, piling up memory between collections)."""
    compiled = ndl.compile(lambda x: [(x * 2.0,), {"y": x + 1.0}])
    x = ndl.Tensor(np.ones((3, 4)), dtype="float32", requires_grad=False)
    for _ in range(3):
        compiled(x)
    enabled = gc.isenabled()
    gc.disable()
    try:
        out = compiled(x)
        first, second = weakref.ref(out[0][0]), weakref.ref(out[1]["y"])
        np.testing.assert_array_equal(out[0][0].numpy(), np.full((3, 4), 2.0))
        del out
        assert first() is None and second() is None
    finally:
        if enabled:
            gc.enable()


@pytest.mark.parametrize("dtype", ["float32", np.dtype("float32"), np.float32])
def test_the_buffer_cache_reuses_memory_whatever_names_the_dtype(dtype):
    """A freed large buffer is reused by the next one of its size, whether the dtype is given by
    name or as a numpy dtype (they hash differently: the cache keys on the name)."""
    size = host_buffer.CACHE_MIN_ELEMENTS + 7
    first = host_buffer.Array(size, "float32")
    address = first.ptr()
    del first
    second = host_buffer.Array(size, dtype)
    assert second.dtype == "float32" and second.ptr() == address
