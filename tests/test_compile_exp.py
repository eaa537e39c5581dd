"""numpy's float32 exp inside the cpu device's fused loops (compile/exp_cpu.py), bit for bit.

A compiled step must give exactly the eager step's bytes, and eager code calls np.exp: the
fused loops may only use exp_f32 where it is np.exp, bit for bit, on this machine. The checks:
exp_f32 against np.exp on every value of a second sweep of float32 (other bit patterns than the
guard's own probe) and on the special values; the guard (`matches_numpy`) agreeing with that;
compiled softmax, log-softmax, sigmoid, GELU and an LSTM step equal to eager ones while their
exps run inside the fused loops; and the fusion falling back to numpy's exp when the guard says
no. (An exhaustive run over all 2**32 float32 values, 50 s, found no difference on the Intel Xeon
AVX-512 machine of the session that wrote this.)
"""
import numpy as np
import pytest

import needle as ndl
from needle import nn
from needle.compile import exp_cpu, fusion_cpu
from train_step import train_step


def numpy_exp(x: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.exp(x)


def test_the_guard_agrees_with_a_second_sweep_of_float32():
    """Every 263rd bit pattern from 131 on (other values than the guard's probe), 16 million
    values: exp_f32 gives np.exp's bits on all of them exactly when the guard says it does."""
    x = np.arange(131, 2 ** 32, 263, dtype=np.uint64).astype(np.uint32).view(np.float32)
    same = np.array_equal(exp_cpu.exp_f32_array(x).view(np.uint32), numpy_exp(x).view(np.uint32))
    assert same == exp_cpu.matches_numpy()
    if not same:  # another numpy kernel on this machine: the fusion must not use exp_f32 (below)
        return
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 88.72283935546875, 88.7228317, -103.97208404541015625,
                        -103.972076, -87.3365, -100.0, 1e-45, -1e-45, 3.4e38, -3.4e38], np.float32)
    special = np.concatenate([special, -np.abs(special)]).astype(np.float32)
    got, want = exp_cpu.exp_f32_array(special), numpy_exp(special)
    assert got.view(np.uint32).tolist() == want.view(np.uint32).tolist()


def numpy_runs_its_simd_exp() -> bool:
    """Whether numpy runs its SIMD float32 exp here (its AVX2 + FMA3 and AVX-512F builds: the x86
    machines this project runs on); elsewhere it calls the C library's expf."""
    from numpy._core._multiarray_umath import __cpu_features__ as features

    return bool(features.get("AVX512F") or (features.get("AVX2") and features.get("FMA3")))


def test_numpys_simd_exp_machines_use_the_fused_exp():
    """Where numpy runs its SIMD float32 exp, exp_f32 must be it: a broken exp_f32 would otherwise
    only switch the fusion off, silently."""
    if numpy_runs_its_simd_exp():
        assert exp_cpu.matches_numpy()


def test_results_below_the_normal_range_and_at_overflow_are_rounded_once():
    """exp(x) for x in [-104, -87.3] is below 2**-126 (subnormal) and at x near 88.72 overflows:
    the scaling by 2**k must round once there, as numpy's scalef does."""
    if not numpy_runs_its_simd_exp():  # a platform without it: numpy's exp is the C library's
        pytest.skip("numpy runs the C library's expf on this CPU (no AVX2 + FMA3): exp_f32 is not used")
    x = np.linspace(-104.0, -87.3, 400_000, dtype=np.float32)
    x = np.concatenate([x, np.linspace(88.0, 88.8, 100_000, dtype=np.float32)])
    assert exp_cpu.exp_f32_array(x).tobytes() == numpy_exp(x).tobytes()
    assert (numpy_exp(x) < np.finfo(np.float32).tiny).sum() > 100_000  # subnormal results were there


def _fused_sources(compiled) -> str:
    return "\n".join("\n".join(c.fn.lines) for c in compiled.programs[0].calls if c.kind == "fused")


def _data(rng, shape):
    """Logits over a wide range, with -inf, large values and a nan row element."""
    x = (rng.randn(*shape) * 8).astype(np.float32)
    x.reshape(-1)[:4] = [-np.inf, 60.0, -95.0, 0.0]
    return x


@pytest.mark.parametrize("name", ["softmax", "logsoftmax", "sigmoid", "gelu", "exp of a sum"])
def test_compiled_exps_are_fused_and_give_the_eager_bits(name):
    functions = {
        "softmax": lambda x: ndl.ops.softmax(x * 1.5, axis=-1),
        "logsoftmax": lambda x: ndl.ops.logsoftmax(x - 1.0, axis=-1),
        "sigmoid": lambda x: ndl.ops.sigmoid(x * 0.25) + 1.0,
        "gelu": lambda x: nn.functional.gelu(x * 0.1),
        "exp of a sum": lambda x: ndl.ops.exp(x * 0.5 + 1.0) * 2.0,
    }
    f = functions[name]
    rng = np.random.RandomState(3)
    compiled = ndl.compile(f)
    for _ in range(3):
        x = ndl.Tensor(_data(rng, (16, 40)))
        with np.errstate(all="ignore"):
            assert compiled(x).numpy().tobytes() == f(x).numpy().tobytes()
    assert ("_f32(" in _fused_sources(compiled)) == exp_cpu.matches_numpy()


def test_a_compiled_lstm_training_step_keeps_the_eager_bits_with_fused_exps():
    """An LSTM language model's step (sigmoids of the gates, the log-softmax of the loss) with
    Adam: compiled and eager parameters identical after three steps."""
    def build():
        np.random.seed(5)
        from needle.models import LanguageModel
        model = LanguageModel(6, 11, 8, num_layers=1, seq_model="lstm")
        return model, ndl.optim.Adam(model.parameters(), lr=0.01)

    rng = np.random.RandomState(2)
    x = ndl.Tensor(rng.randint(0, 11, size=(5, 3)).astype(np.float32))
    y = ndl.Tensor(rng.randint(0, 11, size=(15,)).astype(np.float32))
    results = []
    for compile_it in (False, True):
        model, opt = build()
        step = train_step(model, opt, nn.SoftmaxLoss())  # scores the model's logits
        run = ndl.compile(step) if compile_it else step
        for _ in range(3):
            run(x, y)
        results.append([p.numpy().tobytes() for p in model.parameters()])
        if compile_it:
            assert ("sigmoid_f32(" in _fused_sources(run)) == exp_cpu.matches_numpy()
    assert results[0] == results[1]


def test_without_the_guard_the_fusion_leaves_exp_to_numpy(monkeypatch):
    """Where exp_f32 is not numpy's exp (another numpy kernel), no fused loop calls it, and the
    compiled function still gives the eager bits through numpy's exp."""
    monkeypatch.setattr(exp_cpu, "matches_numpy", lambda: False)
    f = lambda x: ndl.ops.softmax(x * 1.5, axis=-1)  # noqa: E731
    compiled = ndl.compile(f)
    x = ndl.Tensor(_data(np.random.RandomState(8), (8, 30)))
    for _ in range(3):  # the first call runs eagerly, the second traces, the third replays
        with np.errstate(all="ignore"):
            assert compiled(x).numpy().tobytes() == f(x).numpy().tobytes()
    assert "_f32(" not in _fused_sources(compiled)
    assert fusion_cpu.exp_cpu is exp_cpu
