"""ndl.compile drops a kernel call that repeats an earlier one on unchanged inputs
(compile/dedupe.py), and only then: the replay must give the eager call's bits, with the
repeated call gone where it may go and kept where something changed in between."""
import numpy as np
import pytest

import needle as ndl
from needle import nn
from needle.compile.dedupe import eliminate_common_calls
from train_step import eager_and_compiled

R = np.random.RandomState(0)


def tensor(*shape, requires_grad=False):
    return ndl.Tensor(R.randn(*shape).astype(np.float32), requires_grad=requires_grad)


def kernel_names(compiled):
    return [c.name for c in compiled.programs[0].calls if c.kind == "kernel"]


def replayed(fn, *args, fuse=False, calls=3):
    """(eager outputs, compiled outputs of the last of `calls` calls, the CompiledFunction)."""
    eager = fn(*args)
    compiled = ndl.compile(fn, fuse=fuse)
    for _ in range(calls):
        out = compiled(*args)
    return eager, out, compiled


def as_bytes(outputs):
    outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    return [o.numpy().tobytes() for o in outputs]


@pytest.mark.parametrize("fuse", [False, True])
def test_a_repeated_matmul_runs_once_with_the_same_bits(fuse):
    a, b = tensor(64, 32), tensor(32, 48)

    def f(a, b):
        return (a @ b) * 2.0 + (a @ b) / 3.0

    eager, out, compiled = replayed(f, a, b, fuse=fuse)
    assert as_bytes(out) == as_bytes(eager)
    assert kernel_names(compiled).count("matmul") == 1


def test_a_repeated_call_on_new_inputs_is_recomputed_every_replay():
    """The kept call is replayed on each call's inputs: new data gives the new product twice."""
    a, b = tensor(16, 8), tensor(8, 4)

    def f(a, b):
        return (a @ b) + (a @ b)

    compiled = ndl.compile(f)
    for _ in range(3):
        compiled(a, b)
    a2, b2 = tensor(16, 8), tensor(8, 4)
    assert compiled(a2, b2).numpy().tobytes() == f(a2, b2).numpy().tobytes()


def test_a_call_after_its_input_changed_in_place_is_kept():
    """An optimizer step between two forward passes of one layer changes its weight in place:
    the second pass's matmul reads the new weight, so it is not the first one again."""
    def step_of_a_fresh_layer():
        """forward, backward, SGD step, forward again, on a Linear(8, 4) made from seed 0."""
        np.random.seed(0)
        model = nn.Linear(8, 4)
        opt = ndl.optim.SGD(model.parameters(), lr=0.5)

        def step(x):
            opt.reset_grad()
            first = model(x).sum()
            first.backward()
            opt.step()
            return first, model(x).sum()
        return step

    x = tensor(16, 8)
    f, g = step_of_a_fresh_layer(), step_of_a_fresh_layer()

    compiled = ndl.compile(f)
    for _ in range(3):
        outs = compiled(x)
        expected = g(x)
        assert as_bytes(outs) == as_bytes(expected)
    assert outs[0].numpy() != outs[1].numpy()  # the weight did change between the two passes
    forward = [c for c in compiled.programs[0].calls if c.name == "matmul" and c.args[0].shape == (16, 8)]
    assert len(forward) == 2


@pytest.mark.filterwarnings("ignore:divide by zero")
@pytest.mark.parametrize("value", [0.0, -0.0, float("nan")])
def test_scalars_equal_as_numbers_but_not_as_bits_are_different_calls(value):
    """x * 0.0 and x * -0.0 compare equal in Python but give zeros of other signs."""
    x = ndl.Tensor(np.abs(R.randn(4, 5)).astype(np.float32) + 0.5)

    def f(x):  # the products are temporaries (outputs keep buffers of their own); 1 / b shows b's sign
        a, b, c = x * 0.0, x * value, x * 0.0
        return a + c, 1.0 / b

    eager, out, compiled = replayed(f, x)
    assert as_bytes(out) == as_bytes(eager)
    # x * 0.0 once (c is a), x * value once more unless it is 0.0 too, and 1.0 / b's final * 1.0
    expected = 2 if str(value) == "0.0" else 3
    assert kernel_names(compiled).count("scalar_mul") == expected


def test_accumulating_kernels_are_never_merged():
    """index_add_rows adds into its output: two of them on equal arguments are two sums."""
    from needle.compile.dedupe import _PURE

    assert "index_add_rows" not in _PURE
    emb = nn.Embedding(10, 6)
    ids = ndl.Tensor(np.array([[1, 2], [2, 3]], dtype=np.int64), dtype="int64")

    def f(ids):
        for p in emb.parameters():
            p.grad = None
        loss = emb(ids).sum() + emb(ids).sum()
        loss.backward()
        return loss, emb.weight.grad

    eager = f(ids)
    compiled = ndl.compile(f)
    for _ in range(3):
        out = compiled(ids)
    assert as_bytes(out) == as_bytes(eager)
    np.testing.assert_array_equal(out[1].numpy()[2], np.full(6, 4.0, np.float32))  # id 2: twice in each of 2 sums


class FakeProgram:
    """Calls over fake slots of 4 floats, the way a recording names buffers."""

    def __init__(self, n=8):
        from needle.backend_ndarray.host_buffer import Array
        from needle.backend_ndarray.recording import Slot

        self.device = ndl.cpu()
        self.slots = [Slot(i, Array(4)) for i in range(n)]

    def call(self, name, *args):
        from needle.backend_ndarray.recording import Call

        return Call(getattr(self.device, name), args, "kernel", name, self.device)

    def compact(self, src, dst):
        return self.call("compact", self.slots[src], self.slots[dst], (4,), (1,), 0)

    def fill(self, dst, value=0.0):
        return self.call("scalar_setitem", 4, value, self.slots[dst], (4,), (1,), 0)

    def store(self, src, dst):  # src's first 2 elements into dst's last 2 (a padding's interior)
        from needle.backend_ndarray.recording import View

        return self.call("ewise_setitem", View(self.slots[src], (2,), None, 0), self.slots[dst], (2,), (1,), 2)

    def read(self, src, dst):
        return self.call("ewise_add", self.slots[src], self.slots[src], self.slots[dst])

    @staticmethod
    def reads(calls):
        return [c.args[0].index for c in calls if c.name == "ewise_add"]


def test_the_pass_drops_a_repeated_write_and_renames_its_readers():
    p = FakeProgram()
    calls = [p.compact(0, 1), p.read(1, 6), p.compact(0, 2), p.read(2, 7)]
    kept = eliminate_common_calls(calls, state={0, 6, 7})
    assert len(kept) == 3 and p.reads(kept) == [1, 1]


def test_the_pass_drops_a_repeated_padding_fill_then_store():
    """A padded copy is two writes (zeros, then the interior): the second padded buffer, and the
    im2col-like compact of it, both go."""
    p = FakeProgram()
    calls = [p.fill(1), p.store(0, 1), p.compact(1, 2), p.read(2, 6),
             p.fill(3), p.store(0, 3), p.compact(3, 4), p.read(4, 7)]
    kept = eliminate_common_calls(calls, state={0, 6, 7})
    assert [c.name for c in kept] == ["scalar_setitem", "ewise_setitem", "compact", "ewise_add", "ewise_add"]
    assert p.reads(kept) == [2, 2]
    other_fill = [p.fill(1), p.store(0, 1), p.compact(1, 2), p.read(2, 6),
                  p.fill(3, -0.0), p.store(0, 3), p.compact(3, 4), p.read(4, 7)]  # -0.0 padding: other bits
    assert len(eliminate_common_calls(other_fill, state={0, 6, 7})) == 8


def test_the_pass_keeps_what_it_cannot_prove_equal():
    p = FakeProgram()
    # the copy's output is state (a gradient, an output): it keeps its own buffer
    assert len(eliminate_common_calls([p.compact(0, 1), p.read(1, 6), p.compact(0, 2), p.read(2, 7)],
                                      state={0, 2, 6, 7})) == 4
    # the source changed in between
    changed = [p.compact(0, 1), p.read(1, 6), p.compact(3, 0), p.compact(0, 2), p.read(2, 7)]
    assert len(eliminate_common_calls(changed, state={3, 6, 7})) == 5
    # the first copy is overwritten before the second copy's reader
    overwritten = [p.compact(0, 1), p.read(1, 6), p.compact(0, 2), p.compact(3, 1), p.read(2, 7), p.read(1, 5)]
    assert len(eliminate_common_calls(overwritten, state={0, 3, 5, 6, 7})) == 6
    # read between its two writes
    between = [p.fill(1), p.store(0, 1), p.read(1, 6), p.fill(3), p.read(3, 5), p.store(0, 3), p.read(3, 7)]
    assert len(eliminate_common_calls(between, state={0, 5, 6, 7})) == 7
    # a host call may change what it is given
    from needle.backend_ndarray.recording import Call

    host = Call(lambda a: None, (p.slots[0],), "host")
    assert len(eliminate_common_calls([p.compact(0, 1), p.read(1, 6), host, p.compact(0, 2), p.read(2, 7)],
                                      state={6, 7})) == 5


def test_a_compiled_transformer_step_with_deduplication_equals_eager():
    """gpt-like step: attention's products are among the calls the pass drops."""
    from needle.models import LanguageModel

    def build():
        np.random.seed(3)
        model = LanguageModel(16, 11, 32, 1, seq_model="transformer", seq_len=8, num_head=2, dim_head=8)
        return model, ndl.optim.Adam(model.parameters(), lr=1e-2)

    ids = ndl.Tensor(np.random.RandomState(1).randint(0, 11, (8, 4)), dtype="int64")
    y = ndl.Tensor(np.random.RandomState(2).randint(0, 11, 32), dtype="int64")
    eager, compiled = eager_and_compiled(build, ids, y, 5, fuse=True)
    assert eager == compiled


def test_three_layer_norms_of_one_input_share_its_statistics_in_a_fused_step():
    """q, k and v's pre-norms (three LayerNorms of x, each with its own weights): before fusion
    each call writes one buffer, so the second and third normalisations' row means, centred values
    and variances are found equal to the first's and not computed -- their scale and shift join
    the first's loop, so the program has as many calls as for one norm, and every output has the
    eager bits."""
    x = tensor(256, 64)
    norms = [nn.LayerNorm1d(64) for _ in range(3)]
    for norm in norms:
        norm.weight = nn.Parameter(tensor(64))
        norm.bias = nn.Parameter(tensor(64))

    def three(x):
        return tuple(norm(x) for norm in norms)

    def one(x):
        return (norms[0](x),)

    eager, out, compiled = replayed(three, x, fuse=True)
    assert as_bytes(out) == as_bytes(eager)
    _, _, single = replayed(one, x, fuse=True)
    assert len(compiled.programs[0].calls) == len(single.programs[0].calls)
