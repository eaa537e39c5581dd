"""examples/makemore_backprop.py: makemore part 4 (manual backprop) with needle.

The exercises run end to end in subprocesses on the real names file; the data
pipeline and the hand-written gradient functions are tested in process against
needle's autograd on random data.
"""
import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import needle as ndl

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "makemore_backprop.py"
SAMPLE_NAMES = ROOT / "tests" / "data" / "names" / "names.txt"
LN27 = math.log(27)  # the loss of a uniform guess over 27 characters

_spec = importlib.util.spec_from_file_location("makemore_backprop", SCRIPT)
mm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mm)

ROW = re.compile(r"^(\S[^|]*?)\s*\|\s*(\([^|]*\))\s*\|\s*(True|False)\s*\|\s*(True|False)\s*\|\s*(\S+)\s*$")


def run(names, *args):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--names", str(names), *args],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    return proc


def table_rows(text: str) -> list:
    """(name, shape, exact, approximate, maxdiff) for every compare_table row printed."""
    rows = []
    for line in text.splitlines():
        m = ROW.match(line)
        if m and m.group(1) != "variable":
            rows.append((m.group(1), m.group(2), m.group(3) == "True", m.group(4) == "True", float(m.group(5))))
    return rows


def section(text: str, title: str) -> str:
    """The output from the `== title` header to the next `==` header."""
    start = text.index("== " + title)
    end = text.find("\n== ", start + 1)
    return text[start:] if end < 0 else text[start:end]


# --- end to end --------------------------------------------------------------------------

def test_help():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for option in ("--names", "--exercise", "--steps", "--batch-size", "--seed", "--hidden", "--dtype",
                   "--samples", "--quiet"):
        assert option in proc.stdout


@pytest.mark.parametrize("from_env", [False, True])
def test_default_names_file_works_on_a_fresh_clone(tmp_path, from_env):
    """Without --names the script reads $NEEDLE_DATA/names/names.txt, else the shipped sample."""
    env = {k: v for k, v in os.environ.items() if k != "NEEDLE_DATA"}
    env["COLUMNS"] = "1000"  # argparse would wrap (and may split) a long path in --help
    expected = SAMPLE_NAMES
    if from_env:
        expected = tmp_path / "names" / "names.txt"
        expected.parent.mkdir()
        expected.write_text("".join(SAMPLE_NAMES.read_text(encoding="utf-8").splitlines(keepends=True)[:300]))
        env["NEEDLE_DATA"] = str(tmp_path)
    n_names = sum(1 for line in expected.read_text(encoding="utf-8").splitlines() if line.strip())
    proc = subprocess.run([sys.executable, str(SCRIPT), "--exercise", "1", "--quiet"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith(f"{n_names} names, vocabulary ")
    help_text = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True,
                               timeout=60, env=env).stdout
    names_help = next(line for line in help_text.splitlines() if line.strip().startswith("--names"))
    assert f"(default: {expected})" in names_help
    assert ("from NEEDLE_DATA" if from_env else "sample shipped in tests/data") in names_help


def test_exercise1_every_intermediate_gradient_matches_autograd(data):
    proc = run(data.names, "--exercise", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = table_rows(section(proc.stdout, "exercise 1"))
    assert [r[0] for r in rows] == list(mm.ATOMIC_ORDER)
    assert all(r[3] for r in rows), [r for r in rows if not r[3]]
    shapes = {r[0]: r[1] for r in rows}
    hidden = 64  # the script's default for exercises 1-3
    assert shapes["emb"] == "(32, 3, 10)" and shapes["C"] == "(27, 10)"
    assert shapes["W1"] == f"(30, {hidden})" and shapes["b1"] == f"({hidden},)"
    assert shapes["logit_maxes"] == "(32, 1)" and shapes["bnmeani"] == f"(1, {hidden})"
    assert "exercise 1: 26/26 approximately equal" in proc.stdout


@pytest.mark.parametrize("exercise, names", [("2", ["loss (fast)", "logits"]),
                                             ("3", ["hpreact (fast)", "hprebn"])])
def test_fused_exercises_match_autograd(data, exercise, names):
    proc = run(data.names, "--exercise", exercise)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = table_rows(section(proc.stdout, f"exercise {exercise}"))
    assert [r[0] for r in rows] == names
    assert all(r[3] for r in rows)
    assert "all comparisons approximately equal" in proc.stdout


def test_exercise4_short_training_run(data):
    steps = 300
    proc = run(data.names, "--exercise", "4", "--steps", str(steps), "--print-every", "100", "--seed", "5")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    # the first step's manual gradients were checked against autograd
    rows = table_rows(section(out, "exercise 4"))
    assert [r[0] for r in rows] == list(mm.PARAM_NAMES) and all(r[3] for r in rows)
    # progress lines at 0, 100, 200 and the last step
    progress = [(int(m.group(1)), float(m.group(2)))
                for m in re.finditer(r"^\s*(\d+)/\s*\d+: loss ([\d.]+)", out, re.M)]
    assert [i for i, _ in progress] == [0, 100, 200, steps - 1]
    assert progress[-1][1] < min(progress[0][1], LN27)
    losses = dict(re.findall(r"^(train|dev) loss ([\d.]+)$", out, re.M))
    assert set(losses) == {"train", "dev"}
    assert all(float(v) < LN27 for v in losses.values())
    samples = out[out.index("20 samples:"):].splitlines()[1:21]
    assert len(samples) == 20 and all(re.fullmatch(r"  [a-z]*", s) for s in samples), samples


# --- data pipeline -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def words(data):
    return mm.load_words(data.names)


def test_vocab(words):
    stoi, itos = mm.build_vocab(words)
    assert len(stoi) == 27
    assert stoi["."] == 0 and stoi["a"] == 1 and stoi["z"] == 26
    assert all(itos[i] == s for s, i in stoi.items())


def test_contexts_of_emma(words):
    stoi, itos = mm.build_vocab(words)
    X, Y = mm.build_dataset(["emma"], stoi)
    contexts = ["".join(itos[i] for i in row) for row in X]
    targets = "".join(itos[i] for i in Y)
    assert contexts == ["...", "..e", ".em", "emm", "mma"]
    assert targets == "emma."
    assert X.shape == (5, 3) and Y.shape == (5,) and X.dtype.kind == "i"


def test_split_80_10_10(words):
    stoi, _ = mm.build_vocab(words)
    train, dev, test = mm.split_words(words, seed=42)
    n = len(words)
    assert (len(train), len(dev), len(test)) == (int(0.8 * n), int(0.9 * n) - int(0.8 * n), n - int(0.9 * n))
    assert sorted(train + dev + test) == sorted(words)  # a partition of the names
    assert mm.split_words(words, seed=42) == (train, dev, test)  # seeded
    assert mm.split_words(words, seed=1)[0] != train
    splits = mm.make_splits(words, stoi, seed=42)
    total = len(mm.build_dataset(words, stoi)[0])
    counts = {k: len(v[0]) for k, v in splits.items()}
    assert sum(counts.values()) == total == sum(len(w) + 1 for w in words)
    for name, fraction in (("train", 0.8), ("dev", 0.1), ("test", 0.1)):
        assert abs(counts[name] / total - fraction) < 0.005
        X, Y = splits[name]
        assert X.shape == (counts[name], 3) and Y.shape == (counts[name],)


# --- manual gradients vs autograd on random data ------------------------------------------------

def random_problem(rng, n=8, hidden=5, vocab=27, dtype="float64"):
    P = mm.init_params(rng, vocab, hidden, dtype)
    X = rng.integers(0, vocab, (n, 3))
    X[0] = X[1]  # repeated rows of C, whose gradients must add up
    Y = rng.integers(0, vocab, n)
    return P, X, Y


def test_atomic_backward_matches_autograd():
    rng = np.random.default_rng(1)
    P, X, Y = random_problem(rng)
    T = mm.atomic_forward(P, X, Y)
    T["loss"].backward()
    d = mm.atomic_backward(P, T, X, Y)
    assert list(d) == list(mm.ATOMIC_ORDER)
    results = [mm.compare_grad(k, d[k], P, T) for k in mm.ATOMIC_ORDER]
    assert all(r.approximate and r.shape_ok for r in results), [r.line() for r in results if not r]


def test_cross_entropy_backward_matches_autograd():
    rng = np.random.default_rng(2)
    logits = ndl.Tensor(rng.standard_normal((10, 7)) * 3, dtype="float64")
    Y = rng.integers(0, 7, 10)
    loss = mm.cross_entropy(logits, Y)
    loss.backward()
    assert mm.cmp("logits", mm.cross_entropy_backward(logits, Y), logits, verbose=False).approximate
    probs = np.exp(logits.numpy()) / np.exp(logits.numpy()).sum(1, keepdims=True)
    assert loss.item() == pytest.approx(-np.log(probs[np.arange(10), Y]).mean(), rel=1e-12)


def test_batchnorm_backward_matches_autograd():
    rng = np.random.default_rng(3)
    n, d = 16, 6
    x = ndl.Tensor(rng.standard_normal((n, d)) * 2 + 1, dtype="float64")
    gain = ndl.Tensor(rng.standard_normal((1, d)), dtype="float64")
    bias = ndl.Tensor(rng.standard_normal((1, d)), dtype="float64")
    upstream = ndl.Tensor(rng.standard_normal((n, d)), dtype="float64", requires_grad=False)
    out = mm.batchnorm_forward(x, gain, bias)
    (out * upstream).sum().backward()
    xv = x.numpy()
    var_inv = (xv.var(0, ddof=1, keepdims=True) + mm.BN_EPS) ** -0.5
    raw = (xv - xv.mean(0, keepdims=True)) * var_inv
    np.testing.assert_allclose(out.numpy(), gain.numpy() * raw + bias.numpy(), rtol=1e-12, atol=1e-12)
    manual = mm.batchnorm_backward(upstream, gain, ndl.Tensor(raw, dtype="float64"),
                                   ndl.Tensor(var_inv, dtype="float64"))
    assert mm.cmp("x", manual, x, verbose=False).approximate


def test_embedding_backward_adds_repeated_rows():
    rng = np.random.default_rng(4)
    C = ndl.Tensor(rng.standard_normal((5, 3)), dtype="float64")
    X = np.array([[0, 1], [1, 1], [4, 0]])
    weights = ndl.Tensor(rng.standard_normal((3, 2, 3)), dtype="float64", requires_grad=False)
    (C[X] * weights).sum().backward()
    dC = mm.embedding_backward(weights, X, 5)
    assert mm.cmp("C", dC, C, verbose=False).approximate
    np.testing.assert_allclose(dC.numpy()[2], 0.0)  # row 2 was never read
    np.testing.assert_allclose(dC.numpy()[1], weights.numpy()[0, 1] + weights.numpy()[1, 0] + weights.numpy()[1, 1])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_training_network_gradients_match_autograd(dtype):
    rng = np.random.default_rng(5)
    P, X, Y = random_problem(rng, n=32, hidden=20, dtype=dtype)
    T = mm.atomic_forward(P, X, Y)
    T["loss"].backward()
    model = mm.ManualMLP(P)
    cache = model.forward(X)
    np.testing.assert_allclose(cache["probs"].numpy(), T["probs"].numpy(), rtol=1e-5 if dtype == "float32" else 1e-12)
    assert model.loss_from(cache, Y) == pytest.approx(T["loss"].item(), rel=1e-5)
    grads = model.backward(cache, X, Y)
    assert set(grads) == set(mm.PARAM_NAMES)
    results = [mm.compare_grad(k, grads[k], P, T) for k in mm.PARAM_NAMES]
    assert all(r.approximate and r.shape_ok for r in results), [r.line() for r in results if not r]


def test_a_wrong_gradient_is_caught():
    rng = np.random.default_rng(6)
    P, X, Y = random_problem(rng)
    T = mm.atomic_forward(P, X, Y)
    T["loss"].backward()
    d = mm.atomic_backward(P, T, X, Y)
    with ndl.no_grad():
        wrong_dh = d["h"] * 1.01
        wrong_db1 = d["b1"] + 1e-3
    assert not mm.compare_grad("h", wrong_dh, P, T).approximate
    assert not mm.compare_grad("b1", wrong_db1, P, T).approximate


def test_step_and_calibration():
    rng = np.random.default_rng(7)
    P, X, Y = random_problem(rng, n=64, hidden=6)
    model = mm.ManualMLP(P)
    before = {k: v.numpy().copy() for k, v in model.P.items()}
    cache = model.forward(X)
    grads = model.backward(cache, X, Y)
    model.step(grads, 0.1)
    for k in mm.PARAM_NAMES:
        np.testing.assert_allclose(model.P[k].numpy(), before[k] - 0.1 * grads[k].numpy(), rtol=1e-12)
    model.calibrate(X)
    hprebn = model.P["C"].numpy()[X].reshape(len(X), -1) @ model.P["W1"].numpy() + model.P["b1"].numpy()
    np.testing.assert_allclose(model.bnmean.numpy(), hprebn.mean(0, keepdims=True), rtol=1e-10)
    np.testing.assert_allclose(model.bnvar.numpy(), hprebn.var(0, ddof=1, keepdims=True), rtol=1e-10)
    # with the statistics of the very batch, inference-mode BatchNorm equals training mode
    train_probs = model.forward(X)["probs"].numpy()
    with ndl.no_grad():
        eval_probs = mm.softmax(model.eval_logits(X)).numpy()
    np.testing.assert_allclose(eval_probs, train_probs, rtol=1e-9)
    assert model.split_loss(X, Y) == pytest.approx(model.loss_from(model.forward(X), Y), rel=1e-9)
    names = model.sample(np.random.default_rng(0), {i: "." if i == 0 else chr(96 + i) for i in range(27)}, 3)
    assert len(names) == 3 and all(re.fullmatch(r"[a-z]*", s) for s in names)
