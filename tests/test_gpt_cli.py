"""`needle train gpt` and `needle sample`: nanoGPT's recipe on a small text, its schedule and
clipping against the formulas and PyTorch, resume, sampling needle's and nanoGPT's checkpoints,
and one-line errors for bad flags."""
import json
import math
import pickle

import numpy as np
import pytest
import torch

from needle.train import cli
from needle.train.gpt import gpt_lr
from needle.train.recipes import TINY_SHAKESPEARE

SMALL = ["--limit", "20000", "--iters", "40", "--eval-interval", "20", "--eval-iters", "2", "--batch-size", "4",
         "--block-size", "16", "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--no-progress", "--sample", "0",
         "--text", str(TINY_SHAKESPEARE)]


def run(capsys, *argv):
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def summary_of(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_the_schedule_is_nanogpts_warmup_then_cosine():
    lr, min_lr, warmup, decay = 1e-3, 1e-4, 100, 2000
    assert gpt_lr(0, lr, min_lr, warmup, decay) == pytest.approx(lr * 1 / 101)
    assert gpt_lr(99, lr, min_lr, warmup, decay) == pytest.approx(lr * 100 / 101)
    assert gpt_lr(100, lr, min_lr, warmup, decay) == pytest.approx(lr)
    assert gpt_lr(1050, lr, min_lr, warmup, decay) == pytest.approx(min_lr + 0.5 * (lr - min_lr))
    assert gpt_lr(2000, lr, min_lr, warmup, decay) == pytest.approx(min_lr)
    assert gpt_lr(3000, lr, min_lr, warmup, decay) == min_lr


def test_clipping_by_the_global_norm_matches_torch():
    import needle as ndl

    rng = np.random.RandomState(0)
    grads = [rng.randn(3, 4), rng.randn(4)]
    params = [ndl.Tensor(np.zeros_like(g), dtype="float64") for g in grads]
    for p, g in zip(params, grads):
        p.grad = ndl.Tensor(g, dtype="float64")
    opt = ndl.optim.AdamW(params)
    norm = opt.clip_grad_norm(1.0)
    tparams = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for p, g in zip(tparams, grads):
        p.grad = torch.tensor(g)
    tnorm = torch.nn.utils.clip_grad_norm_(tparams, 1.0)
    assert float(norm.numpy()) == pytest.approx(float(tnorm), rel=1e-12)
    for p, t in zip(params, tparams):
        np.testing.assert_allclose(p.grad.numpy(), t.grad.numpy(), rtol=1e-12)


def test_train_gpt_learns_resumes_exactly_and_samples(tmp_path, capsys):
    straight, out, err = run(capsys, "train", "gpt", *SMALL, "--checkpoint", str(tmp_path / "a"))
    assert straight == 0, err
    result = summary_of(out)
    vocabulary = len(set(open(TINY_SHAKESPEARE, encoding="utf-8").read()[:20000]))
    assert result["iters"] == 40 and result["val_loss"] < math.log(vocabulary)
    assert "iter    40/40" in out and result["tokens_per_second"] > 0
    # half the steps, then resume the other half: the same numbers
    half = [a if a != "40" else "20" for a in SMALL]
    assert run(capsys, "train", "gpt", *half, "--checkpoint", str(tmp_path / "b"))[0] == 0
    status, out, err = run(capsys, "train", "gpt", *SMALL, "--checkpoint", str(tmp_path / "b"), "--resume")
    assert status == 0, err
    resumed = summary_of(out)
    assert resumed["val_loss"] == result["val_loss"] and resumed["train_loss"] == result["train_loss"]
    status, out, err = run(capsys, "sample", str(tmp_path / "a"), "--prompt", "First", "--tokens", "30", "--seed", "3")
    assert status == 0, err
    assert out.startswith("First") and len(out.rstrip("\n")) >= 30
    again = run(capsys, "sample", str(tmp_path / "a"), "--prompt", "First", "--tokens", "30", "--seed", "3")[1]
    assert again == out


def test_sample_reads_an_lm_checkpoint(tmp_path, capsys):
    status, out, err = run(capsys, "train", "lm", "--limit", "4000", "--epochs", "1", "--seq-len", "8", "--hidden",
                           "16", "--embedding", "8", "--no-progress", "--sample", "0", "--checkpoint",
                           str(tmp_path / "lm"))
    assert status == 0, err
    status, out, err = run(capsys, "sample", str(tmp_path / "lm"), "--prompt", "the", "--tokens", "20")
    assert status == 0, err
    assert out.startswith("the")


def test_sample_reads_a_nanogpt_checkpoint(tmp_path, capsys):
    from test_gpt import CONFIG, TorchGPT

    torch.manual_seed(0)
    twin = TorchGPT(**CONFIG)
    chars = [chr(ord("a") + i) for i in range(CONFIG["vocab_size"])]
    torch.save({"model_args": dict(CONFIG, bias=True, dropout=0.0), "model": twin.state_dict(),
                "config": {"dataset": "letters"}}, tmp_path / "ckpt.pt")
    with open(tmp_path / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": len(chars), "stoi": {c: i for i, c in enumerate(chars)},
                     "itos": dict(enumerate(chars))}, f)
    status, out, err = run(capsys, "sample", str(tmp_path / "ckpt.pt"), "--prompt", "abc", "--tokens", "10",
                           "--top-k", "1")
    assert status == 0, err
    # greedy: what the torch twin predicts, token after token
    ids = [0, 1, 2]
    with torch.no_grad():
        for _ in range(10):
            ctx = torch.tensor([ids[-CONFIG["block_size"]:]])
            ids.append(int(twin(ctx, ctx)[0][0, -1].argmax()))
    assert out.rstrip("\n") == "".join(chars[i] for i in ids)


@pytest.mark.parametrize("argv, message", [
    (["train", "gpt", "--n-embd", "10", "--n-head", "3"], "--n-embd 10 is not divisible by --n-head 3"),
    (["train", "gpt", "--block-size", "5000", "--limit", "3000"], "--block-size 5000: the text's validation split"),
    (["train", "gpt", "--epochs", "2"], "--epochs is not read by the gpt recipe"),
    (["train", "gpt", "--optimizer", "sgd"], "--optimizer is not read by the gpt recipe"),
    (["train", "gpt", "--min-lr", "0.1"], "--min-lr 0.1 is above --lr"),
    (["train", "lm", "--n-layer", "2"], "--n-layer is only read by the gpt recipe"),
    (["sample", "x", "--top-k", "0"], "argument --top-k: must be at least 1"),
    (["sample", "x", "--temperature", "0"], "argument --temperature"),
    (["sample", "nothing-here.pt"], "no such file"),
])
def test_bad_flags_are_one_line_errors(argv, message, capsys):
    status, out, err = run(capsys, *argv)
    assert status == 2
    assert err.count("\n") == 1 and message in err


def test_the_progress_bar_shows_the_loss_and_no_accuracy(capsys):
    """A language model has no accuracy: its progress bar shows the running loss only."""
    argv = [a for a in SMALL if a != "--no-progress"]
    argv[argv.index("--iters") + 1] = "4"
    argv[argv.index("--eval-interval") + 1] = "4"
    status, out, err = run(capsys, "train", "gpt", *argv)
    assert status == 0, err
    assert "loss=" in err and "acc=" not in err
