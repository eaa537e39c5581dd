"""`needle train` (needle.train.cli): recipes, summary/plot/checkpoint files, bit-exact resume, errors.

Most runs are in-process through `needle.train.cli.main([...])`; one goes through
`python -m needle` in a subprocess. Reported metrics are checked against
independent numpy / PyTorch evaluations of the weights stored in the checkpoint.
"""
import gzip
import json
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from needle.data.toy_datasets import spiral
from needle.train import cli
from needle.train import loop as trainer

ROOT = Path(__file__).resolve().parents[1]

SUMMARY_KEYS = {"model", "epochs", "final", "checkpoint", "recipe", "seed"}
ROW_KEYS = {"epoch", "lr", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "train_seconds", "seconds"}
TIMING = {"train_seconds", "seconds"}


# ----------------------------------------------------------------------------- helpers

def run(capsys, *argv):
    """needle train ARGV in-process: (exit code, stdout, stderr)."""
    rc = cli.main(["train", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def last_json(out):
    return json.loads(out.strip().splitlines()[-1])


def metrics(history):
    """The history without the wall-clock fields."""
    return [{k: v for k, v in row.items() if k not in TIMING} for row in history]


def read_summary(path):
    with open(path) as f:
        return json.load(f)


def ckpt_meta(path):
    with safe_open(str(path), framework="numpy") as f:
        return json.loads(f.metadata()["needle_checkpoint"])


def np_acc_loss(logits, y):
    logits = np.asarray(logits, np.float64)
    y = np.asarray(y).astype(np.int64)
    m = logits.max(axis=1, keepdims=True)
    lse = np.log(np.exp(logits - m).sum(axis=1)) + m[:, 0]
    return float(np.mean(logits.argmax(1) == y)), float(np.mean(lse - logits[np.arange(len(y)), y]))


def toy_reference(ckpt, samples=1200, seed=0, classes=3):
    """Accuracy and loss of the checkpointed toy MLP on the recipe's test spiral, in numpy."""
    w = {k[len("model/"):]: v.astype(np.float64) for k, v in load_file(str(ckpt)).items() if k.startswith("model/")}
    Xtr, _ = spiral(samples, seed=seed, classes=classes)
    Xte, yte = spiral(samples // 4, seed=seed + 1, classes=classes)
    X = (Xte - Xtr.mean(axis=0)) / (Xtr.std(axis=0) + 1e-6)
    h = np.maximum(X @ w["0.weight"] + w["0.bias"], 0)
    h = np.maximum(h @ w["2.weight"] + w["2.bias"], 0)
    return np_acc_loss(h @ w["4.weight"] + w["4.bias"], yte)


@pytest.fixture
def mnist_dir(tmp_path, data):
    """The MNIST test split, also posing as the training split (runs on it pass --limit)."""
    d = tmp_path / "mnist"
    d.mkdir()
    for kind, src in (("images-idx3", data.mnist_images), ("labels-idx1", data.mnist_labels)):
        os.symlink(src, d / f"t10k-{kind}-ubyte.gz")
        os.symlink(src, d / f"train-{kind}-ubyte.gz")
    return d


@pytest.fixture
def shakespeare(data):
    return data.shakespeare


def read_mnist(mnist_dir, n):
    with gzip.open(mnist_dir / "t10k-images-idx3-ubyte.gz", "rb") as f:
        X = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784)[:n]
    with gzip.open(mnist_dir / "t10k-labels-idx1-ubyte.gz", "rb") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)[:n]
    assert len(y) == n
    return X.astype(np.float32) / 255, y


@pytest.fixture
def cifar_dir(tmp_path):
    """A tiny folder in the cifar-10-batches-py format: 5 training pickles and test_batch."""
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    rng = np.random.RandomState(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.randint(0, 256, (10, 3072)).astype(np.uint8),
                 b"labels": [int(v) for v in rng.randint(0, 10, 10)]}
        with open(d / name, "wb") as f:
            pickle.dump(batch, f)
    return d


def no_temp_files(directory):
    return [name for name in os.listdir(directory) if name.startswith(".tmp")]


# ============================================================================ toy (default) recipe

def test_default_recipe_learns_the_spiral(capsys, tmp_path):
    ckpt_dir, summary_path = tmp_path / "ckpt", tmp_path / "summary.json"
    rc, out, err = run(capsys, "--no-progress", "--checkpoint", ckpt_dir, "--summary", summary_path)
    assert rc == 0, err
    lines = out.strip().splitlines()
    # the header reports the parameter count of MLP(2, [64, 64], 3)
    n_params = (2 * 64 + 64) + (64 * 64 + 64) + (64 * 3 + 3)
    assert f"{n_params:,} parameters" in lines[0]
    printed = last_json(out)
    assert set(printed) == SUMMARY_KEYS
    assert printed["recipe"] == "toy" and printed["seed"] == 0
    epochs = printed["epochs"]
    assert epochs >= 10
    assert set(printed["final"]) == ROW_KEYS - {"epoch"}
    # three spiral arms: chance is 1/3; a working trainer gets far beyond it
    assert printed["final"]["test_accuracy"] > 0.8
    assert printed["final"]["train_accuracy"] > 0.8

    summary = read_summary(summary_path)
    history = summary["history"]
    assert [row["epoch"] for row in history] == list(range(1, epochs + 1))
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert {k: v for k, v in history[-1].items() if k != "epoch"} == printed["final"]

    # the reported test numbers are those of the saved weights on the recipe's test set
    ckpt = ckpt_dir / "last.safetensors"
    assert printed["checkpoint"] == str(ckpt)
    acc, loss = toy_reference(ckpt)
    assert printed["final"]["test_accuracy"] == pytest.approx(acc, abs=1e-12)
    assert printed["final"]["test_loss"] == pytest.approx(loss, rel=1e-5)


def test_subprocess_entry_point_matches_in_process(capsys):
    proc = subprocess.run([sys.executable, "-m", "needle", "train", "--no-progress", "--epochs", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    sub = last_json(proc.stdout)
    assert set(sub) == SUMMARY_KEYS and sub["epochs"] == 2
    rc, out, _ = run(capsys, "--no-progress", "--epochs", 2)
    assert rc == 0
    here = last_json(out)
    strip = lambda s: {k: v for k, v in s["final"].items() if k not in TIMING}  # noqa: E731
    assert strip(sub) == strip(here)
    for v in strip(sub).values():
        assert np.isfinite(v)


def test_summary_file(capsys, tmp_path):
    path = tmp_path / "out" / "summary.json"
    path.parent.mkdir()
    rc, out, _ = run(capsys, "--no-progress", "--epochs", 3, "--summary", path)
    assert rc == 0
    summary = read_summary(path)
    assert SUMMARY_KEYS | {"history"} <= set(summary)
    assert len(summary["history"]) == summary["epochs"] == 3
    for i, row in enumerate(summary["history"], 1):
        assert set(row) == ROW_KEYS and row["epoch"] == i
        assert 0.0 <= row["train_accuracy"] <= 1.0 and 0.0 <= row["test_accuracy"] <= 1.0
        assert row["train_loss"] > 0 and row["test_loss"] > 0
    printed = last_json(out)
    assert "history" not in printed
    assert {k: v for k, v in summary.items() if k != "history"} == printed
    assert no_temp_files(path.parent) == []


def test_plot_writes_a_png(capsys, tmp_path):
    import matplotlib.image

    path = tmp_path / "curves.png"
    rc, out, _ = run(capsys, "--no-progress", "--epochs", 3, "--plot", path)
    assert rc == 0
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 5000
    img = matplotlib.image.imread(str(path))
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert img[..., :3].std() > 0.01          # not a blank canvas
    assert last_json(out)["plot"] == str(path)
    assert no_temp_files(tmp_path) == []


def test_checkpoint_after_every_epoch_replaced_atomically(capsys, tmp_path, monkeypatch):
    ckpt_dir = tmp_path / "ckpt"
    seen = []
    original = trainer.save_checkpoint

    def spy(path, model, optimizer, epoch, info):
        original(path, model, optimizer, epoch, info)
        seen.append((epoch, os.stat(path).st_ino, sorted(os.listdir(ckpt_dir)), ckpt_meta(path)["epoch"]))

    monkeypatch.setattr(trainer, "save_checkpoint", spy)
    rc, _, err = run(capsys, "--no-progress", "--epochs", 3, "--checkpoint", ckpt_dir)
    assert rc == 0, err
    assert [s[0] for s in seen] == [1, 2, 3]
    assert [s[3] for s in seen] == [1, 2, 3]               # the file on disk is that epoch's
    assert all(s[2] == ["last.safetensors"] for s in seen)  # no temporary file left behind
    inodes = [s[1] for s in seen]
    # each save is a new file renamed over the old one (never the old file rewritten in place),
    # so consecutive saves have different inodes (a freed inode may come back later)
    assert all(a != b for a, b in zip(inodes, inodes[1:]))
    assert sorted(os.listdir(ckpt_dir)) == ["last.safetensors"]
    meta = ckpt_meta(ckpt_dir / "last.safetensors")
    assert meta["epoch"] == 3 and len(meta["info"]["history"]) == 3


# ============================================================================ resume and seeds

RESUME_CASES = {
    "toy-adam": (["--epochs"], 6, []),
    "toy-sgd-momentum": (["--epochs"], 4, ["--optimizer", "sgd", "--lr", "0.1", "--momentum", "0.9"]),
    "mlp-dropout-batchnorm": (["mlp", "--epochs"], 2, ["--limit", "200", "--hidden", "16", "--batch-size", "50"]),
}


@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_resume_is_bit_exact(capsys, tmp_path, mnist_dir, case):
    head, n, extra = RESUME_CASES[case]
    if head[0] == "mlp":
        extra = extra + ["--data", str(mnist_dir)]
    straight, split = tmp_path / "straight", tmp_path / "split"

    def go(epochs, ckpt, *more):
        rc, out, err = run(capsys, *head, epochs, *extra, "--seed", 3, "--checkpoint", ckpt,
                           "--summary", ckpt / "summary.json", *more)
        assert rc == 0, err
        return out, read_summary(ckpt / "summary.json")

    _, full = go(n, straight, "--no-progress")
    _, first = go(n // 2, split, "--no-progress")
    assert len(first["history"]) == n // 2
    # resume without --no-progress: display options may differ from the first run
    out, resumed = go(n, split, "--resume")
    assert f"after epoch {n // 2}" in out
    assert len(resumed["history"]) == n
    assert metrics(resumed["history"]) == metrics(full["history"])
    assert metrics(resumed["history"][: n // 2]) == metrics(first["history"])

    a = load_file(str(straight / "last.safetensors"))
    b = load_file(str(split / "last.safetensors"))
    assert set(a) == set(b)
    assert any(k.startswith("optim/") for k in a) and "rng/keys" in a
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    ma, mb = ckpt_meta(straight / "last.safetensors"), ckpt_meta(split / "last.safetensors")
    assert ma["rng"] == mb["rng"] and ma["optimizer_scalars"] == mb["optimizer_scalars"]
    assert ma["epoch"] == mb["epoch"] == n


@pytest.mark.parametrize("change, key", [
    (["--hidden", "32"], "hidden"),
    (["--lr", "0.05"], "lr"),
    (["--seed", "1"], "seed"),
    (["--dataset", "xor"], "dataset"),
])
def test_resume_with_other_settings_fails(capsys, tmp_path, change, key):
    ckpt = tmp_path / "ckpt"
    rc, _, _ = run(capsys, "--no-progress", "--epochs", 1, "--checkpoint", ckpt)
    assert rc == 0
    before = (ckpt / "last.safetensors").read_bytes()
    rc, out, err = run(capsys, "--no-progress", "--epochs", 2, "--checkpoint", ckpt, "--resume", *change)
    assert rc == 2
    assert "Traceback" not in err
    message = err.strip().splitlines()[-1]
    assert message.startswith("needle: error:")
    assert "settings" in message and repr(key) in message
    assert (ckpt / "last.safetensors").read_bytes() == before   # the checkpoint is left alone
    assert out.strip() == ""  # refused before any work: no header, no summary


def test_resume_needs_a_checkpoint(capsys, tmp_path):
    rc, _, err = run(capsys, "--no-progress", "--resume")
    assert rc == 2 and "needle: error:" in err and "--checkpoint" in err
    empty = tmp_path / "empty"
    rc, _, err = run(capsys, "--no-progress", "--resume", "--checkpoint", empty)
    assert rc == 2 and str(empty) in err


def test_same_seed_same_numbers_other_seed_other_numbers(capsys, tmp_path):
    def go(seed, name):
        rc, _, _ = run(capsys, "--no-progress", "--epochs", 3, "--seed", seed, "--checkpoint", tmp_path / name,
                       "--summary", tmp_path / f"{name}.json")
        assert rc == 0
        return metrics(read_summary(tmp_path / f"{name}.json")["history"]), load_file(
            str(tmp_path / name / "last.safetensors"))

    h1, w1 = go(5, "a")
    h2, w2 = go(5, "b")
    h3, w3 = go(6, "c")
    assert h1 == h2
    for k in w1:
        np.testing.assert_array_equal(w1[k], w2[k])
    assert h1 != h3
    assert not np.array_equal(w1["model/0.weight"], w3["model/0.weight"])


# ============================================================================ other recipes

def np_mlp_resnet_eval(w, X, blocks):
    """MLPResNet forward in eval mode (BatchNorm running statistics, no dropout), float64."""
    w = {k: v.astype(np.float64) for k, v in w.items()}

    def lin(p, x):
        return x @ w[p + ".weight"] + w[p + ".bias"].reshape(1, -1)

    def bn(p, x):
        return (x - w[p + ".running_mean"]) / np.sqrt(w[p + ".running_var"] + 1e-5) * w[p + ".weight"] + w[p + ".bias"]

    x = np.maximum(lin("0", X.astype(np.float64)), 0)
    for b in range(blocks):
        p = f"{2 + b}.0.fn"
        y = bn(f"{p}.5", lin(f"{p}.4", np.maximum(bn(f"{p}.1", lin(f"{p}.0", x)), 0)))
        x = np.maximum(x + y, 0)
    return lin(f"{2 + blocks}", x)


def test_mlp_recipe_on_mnist_test_split(capsys, tmp_path, mnist_dir):
    limit, hidden, blocks = 500, 32, 3
    ckpt = tmp_path / "ckpt"
    rc, out, err = run(capsys, "mlp", "--data", mnist_dir, "--limit", limit, "--epochs", 1, "--hidden", hidden,
                       "--no-progress", "--checkpoint", ckpt)
    assert rc == 0, err
    header = out.strip().splitlines()[0]
    block = (hidden * (hidden // 2) + hidden // 2) + (hidden // 2 * hidden + hidden) + 2 * (hidden // 2 + hidden)
    n_params = (784 * hidden + hidden) + blocks * block + (hidden * 10 + 10)
    assert f"{n_params:,} parameters" in header
    assert f"{math.ceil(limit / 100)} batches per epoch" in header
    printed = last_json(out)
    assert printed["recipe"] == "mlp" and printed["epochs"] == 1
    final = printed["final"]
    for key in ("train_accuracy", "test_accuracy"):
        assert 0.0 <= final[key] <= 1.0
    # the test metrics are those of the saved model, in eval mode, on the first `limit` test images
    w = {k[len("model/"):]: v for k, v in load_file(str(ckpt / "last.safetensors")).items()
         if k.startswith("model/")}
    X, y = read_mnist(mnist_dir, limit)
    acc, loss = np_acc_loss(np_mlp_resnet_eval(w, X, blocks), y)
    assert final["test_accuracy"] == pytest.approx(acc, abs=1e-12)
    assert final["test_loss"] == pytest.approx(loss, rel=1e-4)


def torch_lstm_lm(w):
    """The checkpointed 1-layer LSTM language model in PyTorch (float64)."""
    t = {k: torch.from_numpy(v.astype(np.float64)) for k, v in w.items()}
    E, H = t["embedding.weight"].shape[1], t["seq_model.lstm_cells.0.W_hh"].shape[0]
    lstm = torch.nn.LSTM(E, H).double()
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(t["seq_model.lstm_cells.0.W_ih"].T)
        lstm.weight_hh_l0.copy_(t["seq_model.lstm_cells.0.W_hh"].T)
        lstm.bias_ih_l0.copy_(t["seq_model.lstm_cells.0.bias_ih"].reshape(-1))
        lstm.bias_hh_l0.copy_(t["seq_model.lstm_cells.0.bias_hh"].reshape(-1))

    def forward(ids, h):
        out, h = lstm(t["embedding.weight"][torch.from_numpy(ids)], h)
        return out.reshape(-1, H) @ t["linear.weight"] + t["linear.bias"].reshape(-1), h

    return forward


def test_lm_recipe_char_lstm(capsys, tmp_path, shakespeare):
    limit, bs, seq_len, n_sample = 4000, 8, 16, 40
    ckpt = tmp_path / "ckpt"
    rc, out, err = run(capsys, "lm", "--text", shakespeare, "--limit", limit, "--epochs", 1, "--model", "lstm",
                       "--hidden", 32, "--embedding", 16, "--seq-len", seq_len, "--batch-size", bs,
                       "--sample", n_sample, "--no-progress", "--checkpoint", ckpt)
    assert rc == 0, err
    text = shakespeare.read_text(encoding="utf-8")[:limit]
    vocab = sorted(set(text))
    printed = last_json(out)
    assert printed["recipe"] == "lm"
    assert any(line.startswith("sample:") for line in out.splitlines())
    sample = printed["sample"]
    assert len(sample) == n_sample + 1 and sample[0] == text[0]
    assert set(sample) <= set(vocab)
    final = printed["final"]
    assert 0.0 <= final["train_accuracy"] <= 1.0 and 0.0 <= final["test_accuracy"] <= 1.0
    assert final["train_loss"] < math.log(len(vocab))       # better than a uniform guess

    # recompute the test metrics with PyTorch from the saved weights: the last 10% of the
    # characters, batchified into `bs` columns, windows of seq_len with the state carried over
    w = {k[len("model/"):]: v for k, v in load_file(str(ckpt / "last.safetensors")).items()
         if k.startswith("model/")}
    ids = np.array([vocab.index(c) for c in text])
    test_ids = ids[int(len(ids) * 0.9):]
    nb = len(test_ids) // bs
    data = test_ids[: nb * bs].reshape(bs, nb).T
    forward = torch_lstm_lm(w)
    h, total, correct, count = None, 0.0, 0, 0
    with torch.no_grad():
        for i in range(0, nb - 1, seq_len):
            L = min(seq_len, nb - 1 - i)
            logits, h = forward(data[i:i + L], h)
            y = torch.from_numpy(data[i + 1:i + 1 + L].reshape(-1))
            total += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            count += len(y)
    assert final["test_accuracy"] == pytest.approx(correct / count, abs=1e-12)
    assert final["test_loss"] == pytest.approx(total / count, rel=1e-4)


def test_lm_recipe_word_rnn(capsys, shakespeare):
    rc, out, err = run(capsys, "lm", "--text", shakespeare, "--limit", 3000, "--level", "word", "--model", "rnn",
                       "--epochs", 2, "--hidden", 16, "--embedding", 8, "--seq-len", 8, "--batch-size", 4,
                       "--sample", 5, "--no-progress")
    assert rc == 0, err
    printed = last_json(out)
    words = set(shakespeare.read_text(encoding="utf-8")[:3000].split()) | {"<eos>"}
    assert printed["sample"].split(" ")[0] == "First"
    assert len(printed["sample"].split(" ")) == 6 and set(printed["sample"].split(" ")) <= words


def test_resnet9_recipe_on_cifar_folder(capsys, cifar_dir):
    rc, out, err = run(capsys, "resnet9", "--data", cifar_dir, "--limit", 16, "--batch-size", 8, "--epochs", 1,
                       "--no-progress")
    assert rc == 0, err
    header = out.strip().splitlines()[0]
    assert "in_channels=3" in header and "431,946 parameters" in header and "2 batches per epoch" in header
    final = last_json(out)["final"]
    assert 0.0 <= final["train_accuracy"] <= 1.0 and 0.0 <= final["test_accuracy"] <= 1.0
    assert np.isfinite(final["train_loss"]) and np.isfinite(final["test_loss"])
    # 10 test images: the accuracy is a whole number of tenths
    assert final["test_accuracy"] * 10 == pytest.approx(round(final["test_accuracy"] * 10))


def test_resnet9_recipe_on_mnist_format(capsys, mnist_dir):
    rc, out, err = run(capsys, "resnet9", "--data", mnist_dir, "--limit", 16, "--batch-size", 8, "--epochs", 1,
                       "--no-progress")
    assert rc == 0, err
    header = out.strip().splitlines()[0]
    # one input channel: the first conv has 7*7*1*16 + 16 weights instead of 7*7*3*16 + 16
    assert "in_channels=1" in header and f"{431946 - 7 * 7 * 2 * 16:,} parameters" in header
    final = last_json(out)["final"]
    assert 0.0 <= final["test_accuracy"] <= 1.0


# ============================================================================ bad inputs

@pytest.mark.parametrize("recipe, flag", [("mlp", "--data"), ("resnet9", "--data"), ("lm", "--text")])
def test_missing_data_exits_2(capsys, tmp_path, recipe, flag):
    missing = tmp_path / "does-not-exist"
    rc, out, err = run(capsys, recipe, flag, missing, "--epochs", 1, "--no-progress")
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("needle: error:")
    assert str(missing) in lines[0]
    assert out.strip() == ""


def test_too_little_text_exits_2(capsys, shakespeare):
    rc, _, err = run(capsys, "lm", "--text", shakespeare, "--limit", 50, "--batch-size", 32, "--no-progress")
    assert rc == 2 and err.startswith("needle: error:") and str(shakespeare) in err


def test_missing_text_exits_2_in_a_subprocess(tmp_path):
    missing = tmp_path / "nope.txt"
    proc = subprocess.run([sys.executable, "-m", "needle", "train", "lm", "--text", str(missing), "--no-progress"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("needle: error:") and str(missing) in proc.stderr


def _corruptions(good: bytes, tmp_path):
    arrays = load_file(str(tmp_path / "good" / "last.safetensors"))
    with safe_open(str(tmp_path / "good" / "last.safetensors"), framework="numpy") as f:
        meta = f.metadata()

    def st(arrs, metadata):
        path = tmp_path / "scratch.safetensors"
        save_file(arrs, str(path), metadata=metadata)
        return path.read_bytes()

    no_rng = {k: v for k, v in arrays.items() if k != "rng/keys"}
    return {
        "garbage": b"this is not a checkpoint at all" * 10,
        "empty": b"",
        "truncated": good[: len(good) // 2],
        "no-metadata": st({"x": np.zeros(3, np.float32)}, None),
        "bad-json": st(arrays, {"needle_checkpoint": "{not json"}),
        "empty-metadata": st(arrays, {"needle_checkpoint": "{}"}),
        "no-rng-state": st(no_rng, meta),
    }


CORRUPTIONS = ["garbage", "empty", "truncated", "no-metadata", "bad-json", "empty-metadata", "no-rng-state"]


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corrupt_checkpoint_exits_2(capsys, tmp_path, kind):
    rc, _, _ = run(capsys, "--no-progress", "--epochs", 1, "--checkpoint", tmp_path / "good")
    assert rc == 0
    good = (tmp_path / "good" / "last.safetensors").read_bytes()
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    path = bad_dir / "last.safetensors"
    path.write_bytes(_corruptions(good, tmp_path)[kind])
    rc, out, err = run(capsys, "--no-progress", "--epochs", 2, "--checkpoint", bad_dir, "--resume")
    assert rc == 2
    lines = err.strip().splitlines()
    assert lines[-1].startswith("needle: error:") and str(path) in lines[-1]
    assert "Traceback" not in err


def test_corrupt_checkpoint_exits_2_in_a_subprocess(tmp_path):
    (tmp_path / "last.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    proc = subprocess.run([sys.executable, "-m", "needle", "train", "--no-progress", "--resume", "--checkpoint",
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "needle: error:" in proc.stderr and str(tmp_path / "last.safetensors") in proc.stderr


def test_lr_decay_scales_the_learning_rate_per_epoch(tmp_path, capsys):
    """Epoch e runs at lr * decay**e (PyTorch's ExponentialLR), recorded in the history."""
    summary_path = tmp_path / "s.json"
    rc = cli.main(["train", "--no-progress", "--epochs", "3", "--lr", "0.05", "--lr-decay", "0.5",
               "--samples", "200", "--summary", str(summary_path)])
    assert rc == 0
    history = json.loads(summary_path.read_text())["history"]
    assert [row["lr"] for row in history] == pytest.approx([0.05, 0.025, 0.0125])


def test_a_closed_pipe_stops_training_quietly(tmp_path):
    """`needle train | head -2`: when the reader leaves, the command stops with 141 (128 + SIGPIPE,
    as Unix tools report it) and no traceback."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.Popen([sys.executable, "-m", "needle", "train", "--epochs", "50"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141, err[-2000:]
    assert b"parameters" in first
    assert "Traceback" not in err and "BrokenPipeError" not in err
